//! The channel accounts this process knows, each with its connector, its rate limit and its
//! in-flight cap. Loaded from the store at start, again whenever an unknown account is asked for
//! (another process may have created it) and every few seconds by the maintenance task, so that
//! changes made through another process reach this one. An account changed or deleted through
//! this process is swapped at once ([`Registry::install`], [`Registry::remove`]).

use crate::rate::RateLimit;
use crate::{EngineError, Result};
use parley_channels::{AccountSpec, ConfigError, Connector, ConnectorContext, ProviderEvents, SubmissionLedger};
use parley_domain::{Channel, ChannelAccountId, Millis, WorkspaceId};
use parley_store::seal::SealingKey;
use parley_store::{ChannelAccount, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

pub struct AccountEntry {
    pub account: ChannelAccount,
    pub connector: Arc<dyn Connector>,
    pub rate: RateLimit,
    pub in_flight: Arc<Semaphore>,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<ChannelAccountId, Arc<AccountEntry>>,
    defaults: HashMap<(WorkspaceId, Channel), ChannelAccountId>,
}

impl Maps {
    fn insert(&mut self, entry: Arc<AccountEntry>) -> Option<Arc<AccountEntry>> {
        let key = (entry.account.workspace_id, entry.account.channel);
        if entry.account.is_default {
            self.defaults.insert(key, entry.account.id);
        } else if self.defaults.get(&key) == Some(&entry.account.id) {
            self.defaults.remove(&key);
        }
        self.by_id.insert(entry.account.id, entry)
    }

    fn remove(&mut self, id: ChannelAccountId) -> Option<Arc<AccountEntry>> {
        let entry = self.by_id.remove(&id)?;
        let key = (entry.account.workspace_id, entry.account.channel);
        if self.defaults.get(&key) == Some(&id) {
            self.defaults.remove(&key);
        }
        Some(entry)
    }
}

/// Why a stored account cannot be turned into a connector.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the account's credentials cannot be opened: {0}")]
    Credentials(String),
}

pub struct Registry {
    maps: RwLock<Maps>,
    context: ConnectorContext,
    sealing_key: Option<SealingKey>,
    /// The server's public base URL, for the callback URLs connectors give providers.
    public_url: String,
    /// Serialises reloads so that a burst of misses loads once.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(
        ledger: Arc<SubmissionLedger>,
        events: ProviderEvents,
        sealing_key: Option<SealingKey>,
        public_url: String,
    ) -> Self {
        let context = ConnectorContext { events, ledger, http: reqwest::Client::new() };
        Registry {
            maps: RwLock::default(),
            context,
            sealing_key,
            public_url: public_url.trim_end_matches('/').to_string(),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn ledger(&self) -> &Arc<SubmissionLedger> {
        &self.context.ledger
    }

    pub fn sealing_key(&self) -> Option<&SealingKey> {
        self.sealing_key.as_ref()
    }

    /// Where the provider of `account` reaches its callbacks.
    pub fn callback_url(&self, provider: &str, id: ChannelAccountId) -> String {
        format!("{}/hooks/{provider}/{id}", self.public_url)
    }

    /// The public URL a request to `path_and_query` on this server was made to.
    pub fn public_url_of(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url)
    }

    /// Open an account's sealed credentials (`null` when it has none).
    pub fn open_credentials(&self, account: &ChannelAccount) -> Result<serde_json::Value, BuildError> {
        let Some(sealed) = &account.credentials else { return Ok(serde_json::Value::Null) };
        let key = self.sealing_key.as_ref().ok_or_else(|| {
            BuildError::Credentials(
                "no sealing key is configured (secrets.key or the data directory's key file)".into(),
            )
        })?;
        let plain = key.open(&account.id.to_string(), sealed).map_err(|e| BuildError::Credentials(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| BuildError::Credentials(e.to_string()))
    }

    /// Make the connector and limits of `account` with its credentials in the clear.
    pub fn build(&self, account: ChannelAccount, credentials: &serde_json::Value) -> Result<AccountEntry, BuildError> {
        let callback_url = self.callback_url(&account.provider, account.id);
        let spec = AccountSpec {
            id: account.id,
            channel: account.channel,
            provider: &account.provider,
            config: &account.config,
            credentials,
            callback_url: &callback_url,
        };
        let connector = parley_channels::build(spec, &self.context)?;
        Ok(AccountEntry {
            rate: RateLimit::per_second(account.rate_limit_per_second),
            in_flight: Arc::new(Semaphore::new(account.max_in_flight.max(1) as usize)),
            connector,
            account,
        })
    }

    fn build_stored(&self, account: ChannelAccount) -> Result<AccountEntry, BuildError> {
        let credentials = self.open_credentials(&account)?;
        self.build(account, &credentials)
    }

    /// Read every channel account and build connectors for the ones not known yet or changed
    /// since; drop the ones deleted.
    pub async fn reload(&self, store: &dyn Store) -> Result<()> {
        let _guard = self.reload_lock.lock().await;
        let accounts = store.all_channel_accounts().await?;
        let mut fresh = Vec::new();
        let missing: Vec<(WorkspaceId, ChannelAccountId)>;
        {
            let maps = self.maps.read().map_err(|_| poisoned())?;
            let stored: std::collections::HashSet<ChannelAccountId> = accounts.iter().map(|a| a.id).collect();
            missing = maps
                .by_id
                .values()
                .filter(|e| !stored.contains(&e.account.id))
                .map(|e| (e.account.workspace_id, e.account.id))
                .collect();
            for account in accounts {
                let known: Option<Millis> = maps.by_id.get(&account.id).map(|e| e.account.updated_at);
                if known.is_none_or(|at| at < account.updated_at) {
                    fresh.push(account);
                }
            }
        }
        // An account missing from the list may have been created (and installed) after the list
        // was read: only the ones the store says are gone (deleted) are dropped.
        let mut gone = Vec::new();
        for (workspace, id) in missing {
            if store.get_channel_account(workspace, id).await?.is_none() {
                gone.push(id);
            }
        }
        let mut built = Vec::new();
        for account in fresh {
            let id = account.id;
            match self.build_stored(account) {
                Ok(entry) => built.push(Arc::new(entry)),
                Err(e) => tracing::error!(account = %id, error = %e, "channel account cannot be used"),
            }
        }
        let mut replaced = Vec::new();
        {
            let mut maps = self.maps.write().map_err(|_| poisoned())?;
            for entry in built {
                // Installed meanwhile by this process with newer settings: keep that one.
                let newer =
                    maps.by_id.get(&entry.account.id).is_some_and(|e| e.account.updated_at >= entry.account.updated_at);
                if newer {
                    replaced.push(entry);
                } else {
                    replaced.extend(maps.insert(entry));
                }
            }
            for id in gone {
                replaced.extend(maps.remove(id));
            }
        }
        for old in replaced {
            old.connector.shutdown();
        }
        Ok(())
    }

    /// Use `entry` from now on (an account created or changed by this process); the connector
    /// it replaces is shut down. A default account takes its channel's default from the others
    /// (whose stored flag the store cleared in the same transaction).
    pub fn install(&self, entry: AccountEntry) -> Result<()> {
        let entry = Arc::new(entry);
        let mut replaced = Vec::new();
        {
            let mut maps = self.maps.write().map_err(|_| poisoned())?;
            replaced.extend(maps.insert(entry));
        }
        for old in replaced {
            old.connector.shutdown();
        }
        Ok(())
    }

    /// Forget a deleted account and stop its connector.
    pub fn remove(&self, id: ChannelAccountId) -> Result<()> {
        let removed = self.maps.write().map_err(|_| poisoned())?.remove(id);
        if let Some(old) = removed {
            old.connector.shutdown();
        }
        Ok(())
    }

    fn lookup(&self, id: ChannelAccountId) -> Option<Arc<AccountEntry>> {
        self.maps.read().ok()?.by_id.get(&id).cloned()
    }

    /// The account `id`, loading accounts again if this process has not seen it yet.
    pub async fn get(&self, store: &dyn Store, id: ChannelAccountId) -> Result<Option<Arc<AccountEntry>>> {
        if let Some(e) = self.lookup(id) {
            return Ok(Some(e));
        }
        self.reload(store).await?;
        Ok(self.lookup(id))
    }

    /// The account a send in `workspace` on `channel` uses: `requested`, or the default.
    pub async fn resolve(
        &self,
        store: &dyn Store,
        workspace: WorkspaceId,
        channel: Channel,
        requested: Option<ChannelAccountId>,
    ) -> Result<Arc<AccountEntry>> {
        if let Some(id) = requested {
            let entry = self
                .get(store, id)
                .await?
                .filter(|e| e.account.workspace_id == workspace)
                .ok_or_else(|| EngineError::ChannelAccountNotFound(id.to_string()))?;
            if entry.account.channel != channel {
                return Err(EngineError::ChannelAccountMismatch {
                    account: id.to_string(),
                    actual: entry.account.channel.as_str(),
                    requested: channel.as_str(),
                });
            }
            return Ok(entry);
        }
        let default = |maps: &Maps| maps.defaults.get(&(workspace, channel)).and_then(|id| maps.by_id.get(id).cloned());
        if let Some(e) = self.maps.read().ok().and_then(|m| default(&m)) {
            return Ok(e);
        }
        self.reload(store).await?;
        self.maps.read().ok().and_then(|m| default(&m)).ok_or(EngineError::NoChannelAccount(channel.as_str()))
    }

    pub fn shutdown(&self) {
        if let Ok(maps) = self.maps.read() {
            for entry in maps.by_id.values() {
                entry.connector.shutdown();
            }
        }
    }
}

fn poisoned() -> EngineError {
    EngineError::Store(parley_store::StoreError::Database("channel account registry lock poisoned".into()))
}
