//! `warren-coord`: the reference coordinator's command line. `serve` runs the
//! API; the other commands administer the same SQLite file, also while
//! `serve` runs (changes reach connected clients within a second).

mod serve;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use tracing_subscriber::EnvFilter;
use warren_coord::db::{rfc3339, Db, TokenOrigin};

#[derive(Parser)]
#[command(
    name = "warren-coord",
    version,
    about = "Warren's reference coordinator"
)]
struct Cli {
    /// The SQLite database file (created if missing).
    #[arg(long, global = true, env = "WARREN_COORD_DB", value_name = "FILE")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the control WebSocket.
    // Boxed: the serve options outweigh every other command's.
    Serve(Box<serve::ServeArgs>),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage user tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Bulk-create workspaces `ws-00000..` with agents `a0, a1..` (benchmarks).
    #[command(hide = true)]
    Seed {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        workspaces: u32,
        #[arg(long, default_value_t = 1)]
        agents_per_workspace: u32,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user.
    Add { name: String },
    /// Remove a user with all their tokens, workspaces and agents.
    Rm { name: String },
    /// List users.
    List,
    /// Let a user sign in with the browser as an identity provider's subject
    /// (the `sub` of their ID token at `--issuer`).
    LinkOidc {
        name: String,
        /// The identity provider's issuer URL, exactly as `serve --oidc-issuer`.
        #[arg(long)]
        issuer: String,
        /// The user's subject (`sub`) at that provider.
        #[arg(long)]
        subject: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for a user and print it (shown only this once).
    Create {
        user: String,
        /// Name the token after the device it is for (at most 64
        /// characters), as a browser sign-in does; shown by `token list`.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// List tokens (never the secrets): id, owner, device name, created and
    /// last used, for every user or one.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        owner: Option<String>,
        /// The same as `--owner`, the form of earlier versions (kept for
        /// scripts).
        #[arg(hide = true, conflicts_with = "owner")]
        user: Option<String>,
    },
    /// Revoke a token by its id (the 16 hex characters after `wut_`/`wat_`).
    Revoke { id: String },
}

#[derive(Subcommand)]
enum WorkspaceCmd {
    /// Create a workspace.
    Add {
        #[arg(long)]
        owner: String,
        name: String,
    },
    /// Remove a workspace and its agents.
    Rm {
        #[arg(long)]
        owner: String,
        name: String,
    },
    /// List a user's workspaces.
    List {
        #[arg(long)]
        owner: String,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Add an agent and print its token (shown only this once). With
    /// `--public-key`, register any WireGuard peer instead: no token, always
    /// shown online.
    Add {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        workspace: String,
        name: String,
        /// WireGuard public key (base64) of a peer that does not run
        /// `warren-agent`.
        #[arg(long)]
        public_key: Option<String>,
        /// UDP endpoint HOST:PORT of that peer (repeatable).
        #[arg(long = "endpoint", requires = "public_key")]
        endpoints: Vec<String>,
    },
    /// Remove an agent and its tokens.
    Rm {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        workspace: String,
        name: String,
    },
    /// List a workspace's agents.
    List {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        workspace: String,
    },
}

fn init_tracing() {
    // Header-echoing dependencies are capped below trace even when RUST_LOG
    // asks for everything, so a bearer token can never reach the log.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in [
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "tungstenite=info",
        "tokio_tungstenite=info",
        "rustls=info",
    ] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn resolve_endpoint(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .with_context(|| format!("endpoint {s:?} is not HOST:PORT (for example 192.0.2.7:51820)"))?
        .next()
        .with_context(|| format!("endpoint {s:?} does not resolve to any address"))
}

async fn open(db: Option<&Path>) -> Result<Db> {
    let path = db.context("no database given; pass --db FILE (or set WARREN_COORD_DB)")?;
    Db::open(path)
        .await
        .with_context(|| format!("cannot use the database {}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = async {
        let db = open(cli.db.as_deref()).await?;
        let result = run(&db, cli.command).await;
        db.close().await;
        result
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain; no backtrace for people.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(db: &Db, command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve::serve(db.clone(), *args).await?,
        Command::User(UserCmd::Add { name }) => {
            db.add_user(&name).await?;
            eprintln!("created user {name}; make a token with `warren-coord token create {name}`");
        }
        Command::User(UserCmd::Rm { name }) => {
            db.remove_user(&name).await?;
            eprintln!("removed user {name}");
        }
        Command::User(UserCmd::LinkOidc {
            name,
            issuer,
            subject,
        }) => {
            db.link_oidc(&name, &issuer, &subject).await?;
            eprintln!("user {name} now signs in with the browser as {subject:?} at {issuer}");
        }
        Command::User(UserCmd::List) => {
            for u in db.list_users().await? {
                println!("{u}");
            }
        }
        Command::Token(TokenCmd::Create { user, device }) => {
            let token = match device {
                Some(device) => {
                    db.create_device_token(&user, &device, TokenOrigin::Admin)
                        .await?
                        .0
                }
                None => db.create_user_token(&user).await?.token,
            };
            // The one place a token is shown: stdout, one line, nothing else.
            println!("{}", token.expose());
        }
        Command::Token(TokenCmd::List { owner, user }) => {
            let owner = owner.or(user);
            println!("ID\tOWNER\tDEVICE\tCREATED\tLAST USED");
            for t in db.list_tokens_all(owner.as_deref()).await? {
                // Tabs and newlines in a device name would break the columns.
                let device = t
                    .device_name
                    .as_deref()
                    .map(|d| d.replace(['\t', '\n', '\r'], " "))
                    .unwrap_or_else(|| "-".into());
                let last_used = t
                    .last_used_at
                    .map(rfc3339)
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.owner,
                    device,
                    rfc3339(t.created_at),
                    last_used
                );
            }
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            db.revoke_token(&id).await?;
            eprintln!("revoked token {id}");
        }
        Command::Workspace(WorkspaceCmd::Add { owner, name }) => {
            db.add_workspace(&owner, &name).await?;
            eprintln!("created workspace {name} of {owner}");
        }
        Command::Workspace(WorkspaceCmd::Rm { owner, name }) => {
            db.remove_workspace(&owner, &name).await?;
            eprintln!("removed workspace {name} of {owner} and its agents");
        }
        Command::Workspace(WorkspaceCmd::List { owner }) => {
            for w in db.list_workspaces(&owner).await? {
                println!("{w}");
            }
        }
        Command::Agent(AgentCmd::Add {
            owner,
            workspace,
            name,
            public_key,
            endpoints,
        }) => {
            let endpoints = endpoints
                .iter()
                .map(|e| resolve_endpoint(e))
                .collect::<Result<Vec<_>>>()?;
            // Loopback and link-local stay allowed: this command can't know
            // where `serve` listens, and the operator typing it does.
            warren_proto::checks::check_endpoints(
                &endpoints,
                warren_proto::checks::Sender::Admin,
                true,
            )
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let peer = public_key.as_deref().map(|k| (k, endpoints.as_slice()));
            let (_, token) = db.add_agent(&owner, &workspace, &name, peer).await?;
            match token {
                Some(t) => println!("{}", t.token.expose()),
                None => eprintln!(
                    "added {name} to workspace {workspace} of {owner} as a static WireGuard peer (no token)"
                ),
            }
        }
        Command::Agent(AgentCmd::Rm {
            owner,
            workspace,
            name,
        }) => {
            db.remove_agent(&owner, &workspace, &name).await?;
            eprintln!("removed agent {name} from workspace {workspace} of {owner}");
        }
        Command::Agent(AgentCmd::List { owner, workspace }) => {
            for a in db.list_agents(&owner, &workspace).await? {
                println!("{a}");
            }
        }
        Command::Seed {
            owner,
            workspaces,
            agents_per_workspace,
        } => {
            let started = std::time::Instant::now();
            db.seed(&owner, workspaces, agents_per_workspace).await?;
            eprintln!(
                "seeded {workspaces} workspaces × {agents_per_workspace} agents for {owner} in {} ms",
                started.elapsed().as_millis()
            );
        }
    }
    Ok(())
}
