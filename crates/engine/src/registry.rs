//! The channel accounts this process knows, each with its connector, its rate limit and its
//! in-flight cap. Loaded from the store at start and again whenever an unknown account is asked
//! for (another process may have created it).

use crate::rate::RateLimit;
use crate::{EngineError, Result};
use parley_channels::{Connector, ConnectorContext, ProviderEvents, SubmissionLedger};
use parley_domain::{Channel, ChannelAccountId, WorkspaceId};
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

pub struct Registry {
    maps: RwLock<Maps>,
    context: ConnectorContext,
    /// Serialises reloads so that a burst of misses loads once.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(ledger: Arc<SubmissionLedger>, events: ProviderEvents) -> Self {
        let context = ConnectorContext { events, ledger, http: reqwest::Client::new() };
        Registry { maps: RwLock::default(), context, reload_lock: tokio::sync::Mutex::new(()) }
    }

    pub fn ledger(&self) -> &Arc<SubmissionLedger> {
        &self.context.ledger
    }

    /// Read every channel account and build connectors for the ones not known yet.
    pub async fn reload(&self, store: &dyn Store) -> Result<()> {
        let _guard = self.reload_lock.lock().await;
        let accounts = store.all_channel_accounts().await?;
        let mut fresh = Vec::new();
        {
            let maps = self.maps.read().map_err(|_| poisoned())?;
            for account in accounts {
                if !maps.by_id.contains_key(&account.id) {
                    fresh.push(account);
                }
            }
        }
        let mut built = Vec::new();
        for account in fresh {
            let spec = parley_channels::AccountSpec {
                id: account.id,
                channel: account.channel,
                provider: &account.provider,
                config: &account.config,
                credentials: &serde_json::Value::Null,
                callback_url: "",
            };
            match parley_channels::build(spec, &self.context) {
                Ok(connector) => built.push(Arc::new(AccountEntry {
                    rate: RateLimit::per_second(account.rate_limit_per_second),
                    in_flight: Arc::new(Semaphore::new(account.max_in_flight.max(1) as usize)),
                    connector,
                    account,
                })),
                Err(e) => tracing::error!(account = %account.id, error = %e, "channel account cannot be used"),
            }
        }
        let mut maps = self.maps.write().map_err(|_| poisoned())?;
        for entry in built {
            if entry.account.is_default {
                maps.defaults.insert((entry.account.workspace_id, entry.account.channel), entry.account.id);
            }
            maps.by_id.insert(entry.account.id, entry);
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
