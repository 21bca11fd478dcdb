//! `warren login`'s terminal side: where the token comes from (stdin, a
//! file, or a hidden prompt). Checking and storing it is `warren_client`'s.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;
use warren_proto::Secret;

/// Where the token comes from.
pub enum TokenSource<'a> {
    Stdin,
    File(&'a Path),
    /// Ask: hidden prompt on a terminal, else one line from stdin.
    Prompt,
}

pub fn read_token(source: TokenSource<'_>) -> Result<Secret> {
    let raw = match source {
        TokenSource::Stdin => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("can't read the token from standard input")?;
            s
        }
        TokenSource::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("can't read the token file {}", path.display()))?,
        TokenSource::Prompt => {
            if std::io::stdin().is_terminal() {
                rpassword::prompt_password("Token (input hidden): ")
                    .context("can't read the token from the terminal")?
            } else {
                eprint!("Token: ");
                let mut s = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut s)
                    .context("can't read the token from standard input")?;
                s
            }
        }
    };
    let token = raw.trim();
    if token.is_empty() {
        bail!("the token is empty; create one with `warren-coord token create NAME` and pass it with --token-stdin or --token-file");
    }
    Ok(Secret::new(token))
}
