//! The `warren-desktop` binary; everything is in the library (`lib.rs`).

// No console window behind the app on Windows.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    if let Err(e) = warren_desktop::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
