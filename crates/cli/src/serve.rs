//! `parley serve` and the commands that manage the database directly (`keys`, `workspaces`).

use crate::config::Config;
use crate::{KeysCommand, WorkspacesCommand};
use anyhow::Context;
use parley_domain::{ApiKeyId, Scope, WorkspaceId};
use parley_engine::{Engine, EngineConfig};

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn open_engine(config: &Config, engine_config: EngineConfig) -> anyhow::Result<Engine> {
    let url = config.database_url();
    let store = parley_store::open(&url).await.with_context(|| format!("cannot open the database {}", redact(&url)))?;
    Ok(Engine::new(store, engine_config).await?)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut engine_config = config.engine_config();
    engine_config.sealing_key = Some(config.sealing_key()?);
    let engine = open_engine(&config, engine_config).await?;
    if let Some((workspace, key)) = engine.bootstrap().await? {
        // Printed to the terminal, never logged: this is the only time the secret is shown.
        println!("Parley: created workspace {} with a sandbox channel account for every channel.", workspace.id);
        println!("Admin API key (shown once, store it now): {}", key.secret);
    }
    engine.start().await;
    let backend = engine.store().backend();
    if config.api {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr()?;
        println!("Parley is listening on http://{address} ({backend})");
        tracing::info!(%address, backend, workers = config.workers, "serving");
        parley_server::serve_with(engine.clone(), listener, config.server_options(), shutdown_signal()).await?;
    } else {
        tracing::info!(backend, "running workers only");
        shutdown_signal().await;
    }
    tracing::info!("shutting down: finishing in-flight sends");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn db_engine_config() -> EngineConfig {
    EngineConfig { run_workers: false, sandbox_ledger: None, ..Default::default() }
}

async fn pick_workspace(engine: &Engine, requested: Option<&str>) -> anyhow::Result<WorkspaceId> {
    match requested {
        Some(raw) => {
            let id = WorkspaceId::parse(raw)?;
            engine.store().get_workspace(id).await?.map(|w| w.id).with_context(|| format!("no workspace {id}"))
        }
        None => {
            let all = engine.store().list_workspaces().await?;
            all.first()
                .map(|w| w.id)
                .context("there is no workspace yet: run `parley serve` once or `parley workspaces create`")
        }
    }
}

fn parse_scopes(raw: &[String]) -> anyhow::Result<Vec<Scope>> {
    raw.iter()
        .map(|s| {
            Scope::parse(s.trim())
                .with_context(|| format!("unknown scope '{s}' (messages:write, messages:read, admin)"))
        })
        .collect()
}

pub async fn keys(config: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let engine = open_engine(&config, db_engine_config()).await?;
    let result = match cmd {
        KeysCommand::Create { workspace, name, scopes, .. } => {
            let workspace = pick_workspace(&engine, workspace.as_deref()).await?;
            let key = engine.create_api_key(workspace, &name, parse_scopes(&scopes)?).await?;
            println!("{}", key.secret);
            eprintln!(
                "created {} ({}) in {workspace}; the key above is shown only once",
                key.key.id,
                key.key.scopes.to_stored()
            );
            Ok(())
        }
        KeysCommand::List { workspace, .. } => {
            let workspace = pick_workspace(&engine, workspace.as_deref()).await?;
            for k in engine.store().list_api_keys(workspace).await? {
                let state = k.revoked_at.map_or("active".to_string(), |t| format!("revoked {t}"));
                println!("{}  {}…  {:<40}  {:<30}  {}", k.id, k.prefix, k.scopes.to_stored(), k.name, state);
            }
            Ok(())
        }
        KeysCommand::Revoke { workspace, id, .. } => {
            let workspace = pick_workspace(&engine, workspace.as_deref()).await?;
            let id = ApiKeyId::parse(&id)?;
            match engine.revoke_api_key(workspace, id).await? {
                Some(_) => {
                    println!("revoked {id}");
                    Ok(())
                }
                None => Err(anyhow::anyhow!("no key {id} in {workspace}")),
            }
        }
    };
    engine.shutdown().await;
    result
}

pub async fn workspaces(config: Config, cmd: WorkspacesCommand) -> anyhow::Result<()> {
    let engine = open_engine(&config, db_engine_config()).await?;
    let result = match cmd {
        WorkspacesCommand::Create { name, .. } => {
            let (workspace, _) = engine.create_workspace(&name).await?;
            let key = engine.create_api_key(workspace.id, "admin key", vec![Scope::Admin]).await?;
            println!("{}", workspace.id);
            println!("{}", key.secret);
            eprintln!(
                "created workspace {} with sandbox channel accounts; its admin key is shown only once",
                workspace.id
            );
            Ok(())
        }
        WorkspacesCommand::List { .. } => {
            for w in engine.store().list_workspaces().await? {
                println!("{}  {}  {}", w.id, w.created_at, w.name);
            }
            Ok(())
        }
    };
    engine.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
