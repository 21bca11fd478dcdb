//! Logging setup shared by every Warren binary.
//!
//! Levels come from `RUST_LOG` (default `info`). Some dependencies print raw
//! protocol data at trace level — tungstenite logs the whole HTTP upgrade
//! request, `Authorization: Bearer …` included — so their targets are capped
//! below trace whatever `RUST_LOG` says. "Never log a secret" must hold for a
//! user who turns everything up to debug a problem.

use std::io::IsTerminal;
use std::path::Path;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Targets whose trace (or debug) output can contain request headers or
/// bodies, with the most verbose level we allow for each.
pub const CAPPED_TARGETS: &[(&str, &str)] = &[
    ("tungstenite", "debug"),
    ("tokio_tungstenite", "debug"),
    ("h2", "info"),
    ("hyper", "debug"),
    ("hyper_util", "debug"),
    ("reqwest", "debug"),
];

/// `RUST_LOG` (or `default`), with [`CAPPED_TARGETS`] applied on top.
pub fn env_filter(default: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    cap(filter)
}

/// Lowers the capped targets to their cap where the filter allows more.
/// Caps only lower: a filter at `info` must not raise tungstenite to debug.
pub fn cap(mut filter: EnvFilter) -> EnvFilter {
    let most_verbose = filter.max_level_hint();
    for (target, level) in CAPPED_TARGETS {
        let Ok(cap) = level.parse::<LevelFilter>() else {
            continue;
        };
        if most_verbose.is_some_and(|hint| hint <= cap) {
            continue;
        }
        if let Ok(directive) = format!("{target}={level}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Keeps the background log writer alive (drop it at exit to flush) and
/// lets the level change while running (the desktop app's setting).
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
    reload: tracing_subscriber::reload::Handle<EnvFilter, Registry>,
}

impl LogGuard {
    /// Replaces the filter with `directives` (e.g. `debug`), caps applied.
    pub fn set_level(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives)
            .map_err(|e| format!("{directives:?} is not a log level: {e}"))?;
        self.reload
            .reload(cap(filter))
            .map_err(|e| format!("can't change the log level: {e}"))
    }
}

/// A boxed layer a binary adds to the standard ones (the helper forwards
/// log lines to its GUI subscribers this way).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Logs to stderr and, when `file_dir` is given, to a daily-rotated file
/// `<file_prefix>.log.<date>` there, keeping the last 7.
pub fn init(
    default_level: &str,
    file_dir: Option<&Path>,
    file_prefix: &str,
    extra: Option<ExtraLayer>,
) -> Result<LogGuard, String> {
    let mut layers: Vec<ExtraLayer> = Vec::new();
    if let Some(extra) = extra {
        layers.push(extra);
    }
    layers.push(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colour only for a person at a terminal, not for journald or a file.
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(true)
            .boxed(),
    );
    let mut guard = None;
    if let Some(dir) = file_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("can't create log directory {}: {e}", dir.display()))?;
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix(file_prefix)
            .filename_suffix("log")
            .max_log_files(7)
            .build(dir)
            .map_err(|e| format!("can't open a log file in {}: {e}", dir.display()))?;
        let (writer, g) = tracing_appender::non_blocking(appender);
        guard = Some(g);
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .boxed(),
        );
    }
    let (filter, reload) = tracing_subscriber::reload::Layer::new(env_filter(default_level));
    tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
        .map_err(|e| format!("logging already initialized: {e}"))?;
    Ok(LogGuard {
        _file: guard,
        reload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_lower_a_global_trace_level() {
        let text = cap(EnvFilter::new("trace")).to_string();
        assert!(text.contains("tungstenite=debug"), "{text}");
        assert!(text.contains("h2=info"), "{text}");
    }

    #[test]
    fn caps_never_raise_a_quieter_level() {
        let text = cap(EnvFilter::new("info")).to_string();
        assert!(!text.contains("tungstenite"), "{text}");
        let text = cap(EnvFilter::new("warn,tungstenite=trace")).to_string();
        assert!(text.contains("tungstenite=debug"), "{text}");
    }
}
