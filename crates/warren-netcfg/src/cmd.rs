//! Running the OS's own network tools (macOS `ifconfig`/`route`, Windows
//! `netsh`, Linux `resolvectl`) with fixed argument lists — never through a
//! shell — and turning their failures into errors that quote what the tool
//! said.

use std::io;
use std::process::Command;

use crate::error::{NetError, Result};

/// Output of a finished tool run.
pub(crate) struct Ran {
    pub ok: bool,
    pub text: String,
}

/// Runs `program args…`, returning its status and combined output.
pub(crate) fn run(program: &str, args: &[&str], what: &str) -> Result<Ran> {
    tracing::debug!(program, ?args, "running network tool");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError::os(format!("{what} (running {program})"), e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Ran {
        ok: out.status.success(),
        text: text.trim().to_string(),
    })
}

/// Runs the tool and fails unless it succeeded.
pub(crate) fn run_ok(program: &str, args: &[&str], what: &str) -> Result<()> {
    let ran = run(program, args, what)?;
    if ran.ok {
        return Ok(());
    }
    let lower = ran.text.to_ascii_lowercase();
    if lower.contains("permission denied")
        || lower.contains("operation not permitted")
        || lower.contains("requires elevation")
        || lower.contains("access is denied")
    {
        return Err(NetError::NeedsPrivilege { what: what.into() });
    }
    Err(NetError::Os {
        what: what.into(),
        source: io::Error::other(format!("{program} said: {}", ran.text)),
    })
}
