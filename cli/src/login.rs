//! `warren login`'s terminal side: where the token comes from (stdin, a
//! file, a hidden prompt, the browser sign-in or a device code). The
//! protocols are `warren_client::browser_signin`'s, checking and storing
//! the token `warren_client`'s; this file prints, opens the browser and waits.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren_client::browser_signin::{self, Client, Loopback, SignInRequest};
use warren_proto::Secret;

/// `warren login`'s options.
pub struct LoginArgs {
    pub url: String,
    pub token_stdin: bool,
    pub token_file: Option<PathBuf>,
    pub token_prompt: bool,
    pub device: bool,
    pub no_browser: bool,
    pub timeout: Option<u64>,
    pub ca: Option<PathBuf>,
}

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

/// Flow 1 for the CLI: the browser signs in at the coordinator and is
/// redirected to our loopback listener with a one-time code.
pub async fn browser_flow(
    url: &str,
    ca_pem: Option<&str>,
    no_browser: bool,
    timeout: Option<u64>,
) -> Result<Secret> {
    let timeout = timeout
        .map(Duration::from_secs)
        .unwrap_or(browser_signin::DEFAULT_TIMEOUT);
    browser_signin::check_available(url, ca_pem).await?;
    let listener = Loopback::bind().await?;
    let request = SignInRequest::new(
        url,
        Client::Cli,
        &listener.redirect_uri(),
        &browser_signin::device_name(),
    )
    .with_ca(ca_pem);
    eprintln!(
        "To sign in, open this address in your browser:\n\n    {}\n",
        request.url()
    );
    if !no_browser {
        match warren_client::browser_signin::open_browser(request.url()) {
            Ok(()) => eprintln!(
                "(opened your browser; if nothing appeared, open the address above yourself)"
            ),
            Err(e) => {
                tracing::warn!("couldn't open a browser ({e}); open the address above yourself")
            }
        }
    }
    eprintln!("Waiting for the sign-in to finish in the browser…");
    let callback = listener.wait(&request, timeout).await?;
    match request.exchange(&callback.code).await {
        Ok(signed) => {
            callback.finish(Ok(&signed.user)).await;
            Ok(signed.token)
        }
        Err(e) => {
            callback.finish(Err(&e.to_string())).await;
            Err(e.into())
        }
    }
}

/// Flow 2: show a code to confirm on another device and poll until it is.
pub async fn device_flow(url: &str, ca_pem: Option<&str>, timeout: Option<u64>) -> Result<Secret> {
    let grant = browser_signin::start_device(url, &browser_signin::device_name(), ca_pem).await?;
    eprintln!(
        "To sign in, open\n\n    {}\n\non any device and enter the code\n\n    {}\n",
        grant.verification_uri, grant.user_code
    );
    if let Some(complete) = &grant.verification_uri_complete {
        eprintln!("(or open {complete}, which has the code filled in)");
    }
    eprintln!(
        "Waiting for you to confirm (the code works for {} minutes)…",
        grant.expires_in.div_ceil(60)
    );
    let poll = browser_signin::poll_device(url, &grant, ca_pem);
    let signed = match timeout {
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), poll)
            .await
            .map_err(|_| {
                browser_signin::BrowserSignInError::Timeout(Duration::from_secs(secs))
            })??,
        None => poll.await?,
    };
    Ok(signed.token)
}
