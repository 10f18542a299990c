//! `parley`: the one binary. `serve` runs the API and the workers; the other commands manage a
//! database (`migrate`, `keys`, `workspaces`) or talk to a running server (`send`, `tail`), and
//! `bench` measures a server.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod config;
mod contacts;
mod serve;

use clap::{Args, Parser, Subcommand};
use config::{Config, LogFormat};
use figment::Figment;
use figment::providers::Serialized;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "parley", version, about = "Customer conversations over SMS, RCS, WhatsApp and web chat")]
struct Cli {
    /// Configuration file (default: ./parley.toml if it exists).
    #[arg(long, global = true, env = "PARLEY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Settings that override the configuration file and environment.
#[derive(Args, Clone, Default)]
struct ServerFlags {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the embedded database (default ./parley-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of the embedded SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Do not serve the HTTP API (workers only).
    #[arg(long)]
    no_api: bool,
    /// Do not run workers (API only).
    #[arg(long)]
    no_workers: bool,
}

impl ServerFlags {
    fn figment(&self) -> Figment {
        let mut f = Figment::new();
        if let Some(v) = &self.listen {
            f = f.merge(Serialized::default("listen", v));
        }
        if let Some(v) = &self.data_dir {
            f = f.merge(Serialized::default("data_dir", v));
        }
        if let Some(v) = &self.database_url {
            f = f.merge(Serialized::default("database_url", v));
        }
        if let Some(v) = &self.log_format {
            f = f.merge(Serialized::default("log_format", v));
        }
        if self.no_api {
            f = f.merge(Serialized::default("api", false));
        }
        if self.no_workers {
            f = f.merge(Serialized::default("workers", false));
        }
        f
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run Parley: the API and the workers.
    Serve(ServerFlags),
    /// Create or update the database schema, then exit.
    Migrate(ServerFlags),
    /// Manage API keys in the database.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage workspaces in the database.
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// Send a message through a running server.
    Send(client::SendArgs),
    /// Follow message events of a running server.
    Tail(client::TailArgs),
    /// Measure a server: accepted and delivered messages per second, latencies, memory.
    Bench(bench::BenchArgs),
    /// Work with the contacts of a running server (bulk import).
    #[command(subcommand)]
    Contacts(contacts::ContactsCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[command(flatten)]
        db: ServerFlags,
        /// The workspace (default: the only one, or the oldest).
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long, default_value = "cli key")]
        name: String,
        /// Comma-separated: messages:write, messages:read, admin.
        #[arg(long, default_value = "admin", value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// List the keys of a workspace.
    List {
        #[command(flatten)]
        db: ServerFlags,
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Revoke a key.
    Revoke {
        #[command(flatten)]
        db: ServerFlags,
        #[arg(long)]
        workspace: Option<String>,
        /// The key id (key_…).
        id: String,
    },
}

#[derive(Subcommand)]
enum WorkspacesCommand {
    /// Create a workspace with sandbox channel accounts and an admin key (printed once).
    Create {
        #[command(flatten)]
        db: ServerFlags,
        #[arg(long)]
        name: String,
    },
    /// List workspaces.
    List {
        #[command(flatten)]
        db: ServerFlags,
    },
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = |flags: &ServerFlags| Config::load(cli.config.as_deref(), flags.figment());
    match cli.command {
        Command::Serve(flags) => {
            let config = load(&flags)?;
            init_logs(&config);
            serve::serve(config).await
        }
        Command::Migrate(flags) => {
            let config = load(&flags)?;
            init_logs(&config);
            let store = parley_store::open(&config.database_url()).await?;
            println!("database {} is up to date", store.backend());
            Ok(())
        }
        Command::Keys(cmd) => serve::keys(cmd_config(&cli.config, &cmd)?, cmd).await,
        Command::Workspaces(cmd) => {
            let flags = match &cmd {
                WorkspacesCommand::Create { db, .. } | WorkspacesCommand::List { db } => db,
            };
            serve::workspaces(load(flags)?, cmd).await
        }
        Command::Send(args) => client::send(args).await,
        Command::Tail(args) => client::tail(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Contacts(command) => contacts::run(command).await,
    }
}

fn cmd_config(file: &Option<PathBuf>, cmd: &KeysCommand) -> anyhow::Result<Config> {
    let flags = match cmd {
        KeysCommand::Create { db, .. } | KeysCommand::List { db, .. } | KeysCommand::Revoke { db, .. } => db,
    };
    Config::load(file.as_deref(), flags.figment())
}
