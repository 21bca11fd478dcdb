//! Forwards the helper's log lines (info and above) to subscribed GUIs.
//!
//! The layer only formats the line and offers it to a broadcast channel,
//! which never blocks: with no receiver or a lagging one, lines are dropped.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;
use warren_proto::ipc::LogLine;

pub struct ForwardLayer {
    tx: broadcast::Sender<LogLine>,
}

impl ForwardLayer {
    pub fn new(capacity: usize) -> (Self, broadcast::Receiver<LogLine>) {
        let (tx, rx) = broadcast::channel(capacity);
        (Self { tx }, rx)
    }
}

#[derive(Default)]
struct Collect {
    message: String,
    fields: String,
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || self.tx.receiver_count() == 0 {
            return;
        }
        let mut collect = Collect::default();
        event.record(&mut collect);
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let _ = self.tx.send(LogLine {
            time_ms,
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: format!("{}{}", collect.message, collect.fields),
        });
    }
}
