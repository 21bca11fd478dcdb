//! Where the app logs, and "Export logs": one zip with the app's log files,
//! the helper's log files and a summary of the current state, for a bug
//! report. Logs never hold a token (see `warren-telemetry`), so the zip can
//! be shared as it is.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;

/// The app's own log directory: `$WARREN_DESKTOP_LOG_DIR`, else the user's
/// local data directory.
pub fn app_log_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARREN_DESKTOP_LOG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("warren")
        .join("logs")
}

/// Where the helper service writes its log on this OS: the helper's own
/// `--log-dir` default, from the one per-OS module both use.
pub fn default_helper_log_dir() -> PathBuf {
    warren_ipc::platform::helper_log_dir()
}

/// What went into an export.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub files: Vec<String>,
    /// Files or folders that could not be read, with the reason.
    pub skipped: Vec<String>,
}

/// Writes `out` (atomically: a temporary file renamed at the end) with the
/// files of each `(folder in the zip, directory)` source and the `extra`
/// in-memory files at the top. Unreadable log files are listed in
/// `SKIPPED.txt` inside the zip rather than failing the export: the helper's
/// logs may be readable by root only, and the app's logs are still useful.
pub fn export_zip(
    out: &Path,
    sources: &[(&str, &Path)],
    extra: &[(&str, Vec<u8>)],
) -> std::io::Result<Exported> {
    let tmp = out.with_extension("zip.partial");
    let result = write_zip(&tmp, sources, extra);
    match result {
        Ok(summary) => {
            std::fs::rename(&tmp, out)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_zip(
    path: &Path,
    sources: &[(&str, &Path)],
    extra: &[(&str, Vec<u8>)],
) -> std::io::Result<Exported> {
    let mut zip = zip::ZipWriter::new(File::create(path)?);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut summary = Exported::default();
    for (name, bytes) in extra {
        zip.start_file(*name, opts).map_err(std::io::Error::other)?;
        zip.write_all(bytes)?;
        summary.files.push(name.to_string());
    }
    for (folder, dir) in sources {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                summary.skipped.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let mut bytes = Vec::new();
            if let Err(e) = File::open(&file).and_then(|mut f| f.read_to_end(&mut bytes)) {
                summary.skipped.push(format!("{}: {e}", file.display()));
                continue;
            }
            let name = format!(
                "{folder}/{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            zip.start_file(name.as_str(), opts)
                .map_err(std::io::Error::other)?;
            zip.write_all(&bytes)?;
            summary.files.push(name);
        }
    }
    if !summary.skipped.is_empty() {
        let text = format!(
            "These could not be read (the helper's logs may be readable by administrators only; copy them with sudo):\n{}\n",
            summary.skipped.join("\n")
        );
        zip.start_file("SKIPPED.txt", opts)
            .map_err(std::io::Error::other)?;
        zip.write_all(text.as_bytes())?;
    }
    zip.finish().map_err(std::io::Error::other)?.sync_all()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_holds_every_readable_log_and_names_what_was_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("warren-desktop.log.2026-11-23"), b"app line\n").unwrap();
        std::fs::write(app.join("warren-desktop.log.2026-11-22"), b"older\n").unwrap();
        let missing = tmp.path().join("no-such-dir");
        let out = tmp.path().join("warren-logs.zip");
        let summary = export_zip(
            &out,
            &[("app", &app), ("helper", &missing)],
            &[("state.json", b"{\"link\":\"connected\"}".to_vec())],
        )
        .unwrap();
        assert_eq!(summary.files.len(), 3, "{summary:?}");
        assert_eq!(summary.skipped.len(), 1, "{summary:?}");
        assert!(!tmp.path().join("warren-logs.zip.partial").exists());

        let mut zip = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "SKIPPED.txt",
                "app/warren-desktop.log.2026-11-22",
                "app/warren-desktop.log.2026-11-23",
                "state.json"
            ]
        );
        let mut text = String::new();
        zip.by_name("app/warren-desktop.log.2026-11-23")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "app line\n");
        let mut skipped = String::new();
        zip.by_name("SKIPPED.txt")
            .unwrap()
            .read_to_string(&mut skipped)
            .unwrap();
        assert!(skipped.contains("no-such-dir"), "{skipped}");
    }

    #[test]
    fn a_failed_export_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("missing-dir").join("logs.zip");
        assert!(export_zip(&out, &[], &[]).is_err());
        assert!(!out.exists());
    }
}
