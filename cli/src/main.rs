//! `warren`: the command-line client. Signs in to a coordinator, hands the
//! token to the helper (`warrend`) and shows the workspaces it can reach.
//!
//! Every failure prints `error: <what to do>` to stderr and exits 1.

mod login;
mod ping;
mod render;
mod session;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warren_client::{config, signin, token};

#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "Put this computer on your Warren workspaces' network"
)]
struct Cli {
    /// The helper's socket (Windows: pipe name).
    #[arg(long, env = "WARREN_SOCKET", global = true, default_value_os_t = warren_ipc::default_endpoint())]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in to a coordinator: through the browser (default), with a
    /// device code (--device), or with a user token.
    Login {
        /// The coordinator, e.g. https://warren.example.com
        #[arg(long)]
        url: String,
        /// Read the token from standard input.
        #[arg(long, conflicts_with_all = ["token_file", "token_prompt", "device"])]
        token_stdin: bool,
        /// Read the token from a file.
        #[arg(long, conflicts_with_all = ["token_prompt", "device"])]
        token_file: Option<PathBuf>,
        /// Ask for the token (input hidden) instead of signing in through the browser.
        #[arg(long, conflicts_with = "device")]
        token_prompt: bool,
        /// Sign in with a code confirmed on another device (no browser here).
        #[arg(long)]
        device: bool,
        /// Print the sign-in address without opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// Give up waiting for the browser sign-in after this many seconds
        /// (default 300; with --device, the code's own lifetime).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Extra CA certificate (PEM) to trust for this coordinator.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Disconnect and forget the token.
    Logout,
    /// Connect (the helper keeps the connection up until `warren down`).
    Up,
    /// Disconnect.
    Down,
    /// Drop the coordinator connection and connect again now.
    Reconnect,
    /// Show the session, workspaces and agents.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the status and redraw it on every change, until Ctrl-C.
    Watch,
    /// Measure the round trip to an agent through the tunnel.
    Ping {
        /// The agent: DNS name (main.api.alice.warren), workspace/agent,
        /// agent name or tunnel address.
        target: String,
        /// How many echo requests to send, one a second.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        /// How long to wait for each reply, in milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

async fn login(args: login::LoginArgs) -> Result<()> {
    let url = signin::normalize_url(&args.url)?;
    let ca_pem = match &args.ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("can't read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    let source = match (&args.token_file, args.token_stdin, args.token_prompt) {
        (Some(path), _, _) => Some(login::TokenSource::File(path)),
        (None, true, _) => Some(login::TokenSource::Stdin),
        (None, false, true) => Some(login::TokenSource::Prompt),
        (None, false, false) => None,
    };
    let browser = source.is_none();
    let tok = match source {
        Some(source) => login::read_token(source)?,
        None if args.device => login::device_flow(&url, ca_pem.as_deref(), args.timeout).await?,
        None => login::browser_flow(&url, ca_pem.as_deref(), args.no_browser, args.timeout).await?,
    };
    let me = signin::validate(&url, &tok, ca_pem.as_deref()).await?;
    let dir = config::config_dir()?;
    if let token::Stored::File {
        path,
        keyring_error: Some(why),
    } = token::store(&dir, &url, &tok).await?
    {
        eprintln!(
            "warning: couldn't use the system keyring ({why}); stored the token in plain text in {} (readable only by you)",
            path.display()
        );
    }
    config::save(
        &dir,
        &config::Config {
            url: url.clone(),
            ca_pem,
            user: Some(me.user.clone()),
            deployment: Some(me.deployment.clone()),
        },
    )?;
    if browser {
        println!(
            "Signed in as {} on {url}. Run `warren up` to connect.",
            me.user
        );
    } else {
        println!(
            "Signed in to {url} as {}. Run `warren up` to connect.",
            me.user
        );
    }
    println!(
        "This deployment routes {} and {} into the tunnel and answers names under .{}.",
        me.deployment.ipv4_prefix, me.deployment.ipv6_prefix, me.deployment.suffix
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let socket = cli.socket;
    match cli.command {
        Command::Login {
            url,
            token_stdin,
            token_file,
            token_prompt,
            device,
            no_browser,
            timeout,
            ca,
        } => {
            login(login::LoginArgs {
                url,
                token_stdin,
                token_file,
                token_prompt,
                device,
                no_browser,
                timeout,
                ca,
            })
            .await
        }
        Command::Logout => session::logout(&socket).await,
        Command::Up => session::up(&socket).await,
        Command::Down => session::down(&socket).await,
        Command::Reconnect => session::reconnect(&socket).await,
        Command::Status { json } => session::status(&socket, json).await,
        Command::Watch => session::watch(&socket).await,
        Command::Ping {
            target,
            count,
            timeout_ms,
        } => ping::ping(&socket, &target, count, timeout_ms).await,
    }
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .context("can't start the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
