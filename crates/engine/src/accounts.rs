//! Channel accounts: creating, changing and deleting them (with their credentials sealed at
//! rest and shown afterwards only as a masked hint), checking them against their provider, and
//! the provider callbacks that arrive for them.

use crate::registry::BuildError;
use crate::{Engine, EngineError, Result};
use parley_channels::{CheckResult, IngressError, IngressReply, IngressRequest};
use parley_domain::{Channel, ChannelAccountId, Content, EventKind, InboundMessage, Message, Millis, WorkspaceId};
use parley_store::ChannelAccount;
use serde_json::Value;

/// At most this many bytes of credentials JSON.
pub const MAX_CREDENTIALS_BYTES: usize = 16 * 1024;
/// At most this many bytes of config JSON.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;

/// A channel account to create.
#[derive(Clone, Debug)]
pub struct NewChannelAccount {
    pub channel: Channel,
    pub provider: String,
    pub name: String,
    pub config: Value,
    pub credentials: Value,
    pub rate_limit_per_second: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub is_default: bool,
}

/// A change to a channel account; `None` leaves a field as it is. New credentials replace the
/// old ones whole.
#[derive(Clone, Debug, Default)]
pub struct ChannelAccountPatch {
    pub name: Option<String>,
    pub config: Option<Value>,
    pub credentials: Option<Value>,
    pub rate_limit_per_second: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub is_default: Option<bool>,
}

/// Why an account's settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The provider's settings or credentials are invalid (names the field).
    #[error(transparent)]
    Config(#[from] parley_channels::ConfigError),
    #[error("provider '{provider}' does not serve the {channel} channel")]
    ProviderChannel { provider: String, channel: &'static str },
    #[error("{0}")]
    Invalid(String),
    /// Credentials cannot be stored: no sealing key is configured.
    #[error("credentials cannot be stored: this server has no sealing key")]
    NoSealingKey,
}

/// A provider callback refused, or for an account that does not take it.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("no {provider} channel account {account}")]
    UnknownAccount { provider: String, account: String },
    #[error(transparent)]
    Refused(#[from] IngressError),
}

/// Why a read report could not be given.
#[derive(Debug, thiserror::Error)]
pub enum MarkReadError {
    #[error("only inbound messages can be marked as read")]
    NotInbound,
    #[error("the message's channel account no longer exists")]
    AccountUnavailable,
    /// The connector cannot report reads (code `read_receipts_not_supported`), or the provider
    /// refused.
    #[error("{}: {}", .0.code, .0.detail)]
    Provider(parley_domain::ErrorInfo),
}

/// A masked view of credentials: the same shape, every string shortened to its last four
/// characters (or nothing, when it is short), numbers and booleans hidden.
pub fn credentials_hint(credentials: &Value) -> Value {
    match credentials {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), credentials_hint(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(credentials_hint).collect()),
        Value::String(s) => {
            let n = s.chars().count();
            if n >= 12 {
                Value::String(format!("…{}", s.chars().skip(n - 4).collect::<String>()))
            } else {
                Value::String("…".into())
            }
        }
        Value::Null => Value::Null,
        _ => Value::String("…".into()),
    }
}

fn check_limits(name: &str, rate: u32, in_flight: u32) -> Result<(), AccountError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(AccountError::Invalid("name: must be 1 to 200 characters".into()));
    }
    if !(1..=100_000).contains(&rate) {
        return Err(AccountError::Invalid("rate_limit_per_second: must be 1 to 100000".into()));
    }
    if !(1..=10_000).contains(&in_flight) {
        return Err(AccountError::Invalid("max_in_flight: must be 1 to 10000".into()));
    }
    Ok(())
}

fn check_json(field: &str, value: &Value, max: usize) -> Result<(), AccountError> {
    if !(value.is_object() || value.is_null()) {
        return Err(AccountError::Invalid(format!("{field}: must be a JSON object")));
    }
    if value.to_string().len() > max {
        return Err(AccountError::Invalid(format!("{field}: at most {max} bytes of JSON")));
    }
    Ok(())
}

impl Engine {
    /// Where `provider` sends the callbacks of account `id`.
    pub fn callback_url(&self, provider: &str, id: ChannelAccountId) -> String {
        self.inner.registry.callback_url(provider, id)
    }

    /// The public URL of a request to this server's `path_and_query`.
    pub fn public_url_of(&self, path_and_query: &str) -> String {
        self.inner.registry.public_url_of(path_and_query)
    }

    /// Create an account: its settings and credentials are checked by building its connector,
    /// which then serves it at once.
    pub async fn create_channel_account(
        &self,
        workspace: WorkspaceId,
        new: NewChannelAccount,
    ) -> Result<std::result::Result<ChannelAccount, AccountError>> {
        match parley_channels::serves(&new.provider, new.channel) {
            None => return Ok(Err(parley_channels::ConfigError::UnknownProvider(new.provider).into())),
            Some(false) => {
                return Ok(Err(AccountError::ProviderChannel {
                    provider: new.provider,
                    channel: new.channel.as_str(),
                }));
            }
            Some(true) => {}
        }
        let (rate, in_flight) = parley_channels::default_limits(&new.provider);
        let now = Millis::now();
        let account = ChannelAccount {
            id: ChannelAccountId::new(),
            workspace_id: workspace,
            channel: new.channel,
            provider: new.provider,
            name: new.name,
            config: new.config,
            credentials: None,
            credentials_hint: None,
            rate_limit_per_second: new.rate_limit_per_second.unwrap_or(rate),
            max_in_flight: new.max_in_flight.unwrap_or(in_flight),
            is_default: new.is_default,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        self.save_account(account, new.credentials, true).await
    }

    /// Apply `patch` to the account; `Ok(None)` when there is no such account.
    pub async fn update_channel_account(
        &self,
        workspace: WorkspaceId,
        id: ChannelAccountId,
        patch: ChannelAccountPatch,
    ) -> Result<Option<std::result::Result<ChannelAccount, AccountError>>> {
        let Some(mut account) = self.store().get_channel_account(workspace, id).await? else { return Ok(None) };
        let credentials = match patch.credentials {
            Some(credentials) => credentials,
            None => match self.inner.registry.open_credentials(&account) {
                Ok(credentials) => credentials,
                Err(e) => return Ok(Some(Err(AccountError::Invalid(format!("credentials: {e}; send new ones"))))),
            },
        };
        if let Some(name) = patch.name {
            account.name = name;
        }
        if let Some(config) = patch.config {
            account.config = config;
        }
        if let Some(rate) = patch.rate_limit_per_second {
            account.rate_limit_per_second = rate;
        }
        if let Some(in_flight) = patch.max_in_flight {
            account.max_in_flight = in_flight;
        }
        if let Some(is_default) = patch.is_default {
            account.is_default = is_default;
        }
        account.updated_at = Millis::now().max(account.updated_at.plus_millis(1));
        self.save_account(account, credentials, false).await.map(Some)
    }

    /// Build the connector (which validates everything), seal the credentials, store, serve.
    async fn save_account(
        &self,
        mut account: ChannelAccount,
        credentials: Value,
        create: bool,
    ) -> Result<std::result::Result<ChannelAccount, AccountError>> {
        if let Err(e) = check_limits(&account.name, account.rate_limit_per_second, account.max_in_flight)
            .and_then(|()| check_json("config", &account.config, MAX_CONFIG_BYTES))
            .and_then(|()| check_json("credentials", &credentials, MAX_CREDENTIALS_BYTES))
        {
            return Ok(Err(e));
        }
        let has_credentials = credentials.as_object().is_some_and(|o| !o.is_empty());
        if has_credentials {
            let Some(key) = self.inner.registry.sealing_key() else { return Ok(Err(AccountError::NoSealingKey)) };
            account.credentials = Some(key.seal(&account.id.to_string(), credentials.to_string().as_bytes()));
            account.credentials_hint = Some(credentials_hint(&credentials));
        } else {
            account.credentials = None;
            account.credentials_hint = None;
        }
        let entry = match self.inner.registry.build(account.clone(), &credentials) {
            Ok(entry) => entry,
            Err(BuildError::Config(e)) => return Ok(Err(e.into())),
            Err(BuildError::Credentials(e)) => return Ok(Err(AccountError::Invalid(e))),
        };
        let stored = if create {
            self.store().create_channel_account(&account).await.map(|()| true)
        } else {
            self.store().update_channel_account(&account).await
        };
        match stored {
            Ok(true) => {}
            Ok(false) => {
                entry.connector.shutdown();
                return Err(EngineError::ChannelAccountNotFound(account.id.to_string()));
            }
            Err(e) => {
                entry.connector.shutdown();
                return Err(e.into());
            }
        }
        self.inner.registry.install(entry)?;
        Ok(Ok(account))
    }

    /// Delete the account: it is kept for the messages that refer to it, and never used again
    /// (its queued messages fail with `channel_account_unavailable`). `false` if there is none.
    pub async fn delete_channel_account(&self, workspace: WorkspaceId, id: ChannelAccountId) -> Result<bool> {
        let Some(mut account) = self.store().get_channel_account(workspace, id).await? else { return Ok(false) };
        let now = Millis::now();
        account.deleted_at = Some(now);
        account.is_default = false;
        account.updated_at = now.max(account.updated_at.plus_millis(1));
        if !self.store().update_channel_account(&account).await? {
            return Ok(false);
        }
        self.inner.registry.remove(id)?;
        Ok(true)
    }

    /// Check the account's credentials with its provider; `None` if there is no such account.
    pub async fn check_channel_account(
        &self,
        workspace: WorkspaceId,
        id: ChannelAccountId,
    ) -> Result<Option<CheckResult>> {
        let Some(entry) = self.inner.registry.get(self.store().as_ref(), id).await? else { return Ok(None) };
        if entry.account.workspace_id != workspace {
            return Ok(None);
        }
        Ok(Some(entry.connector.check().await))
    }

    /// Tell the provider that the inbound message `id` was read (WhatsApp shows the customer blue
    /// ticks). `Ok(None)` when there is no such message in the workspace.
    pub async fn mark_read(
        &self,
        workspace: WorkspaceId,
        id: parley_domain::MessageId,
    ) -> Result<Option<std::result::Result<(), MarkReadError>>> {
        let Some(message) = self.store().get_message(workspace, id, false).await? else { return Ok(None) };
        if message.direction != parley_domain::Direction::Inbound {
            return Ok(Some(Err(MarkReadError::NotInbound)));
        }
        let Some(provider_id) = message.provider_message_id.as_deref() else {
            return Ok(Some(Err(MarkReadError::NotInbound)));
        };
        let Some(entry) = self.inner.registry.get(self.store().as_ref(), message.channel_account_id).await? else {
            return Ok(Some(Err(MarkReadError::AccountUnavailable)));
        };
        Ok(Some(entry.connector.mark_read(provider_id).await.map_err(MarkReadError::Provider)))
    }

    /// A provider callback for `/hooks/{provider}/{account}`: the account's connector verifies
    /// and parses it, what it reports is committed, then the connector's reply is the answer.
    /// Nothing is answered 2xx before it is stored, so the provider's retries cover a crash.
    pub async fn provider_callback(
        &self,
        provider: &str,
        account: &str,
        request: &IngressRequest<'_>,
    ) -> Result<std::result::Result<IngressReply, CallbackError>> {
        let unknown = || CallbackError::UnknownAccount {
            provider: provider.chars().take(32).collect(),
            account: account.chars().take(64).collect(),
        };
        let Ok(id) = ChannelAccountId::parse(account) else { return Ok(Err(unknown())) };
        let entry = match self.inner.registry.get(self.store().as_ref(), id).await? {
            Some(entry) if entry.account.provider == provider => entry,
            _ => return Ok(Err(unknown())),
        };
        let outcome = match entry.connector.ingress(request) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.inner.metrics.record_callback(provider, e.code());
                return Ok(Err(e.into()));
            }
        };
        let channel = entry.account.channel;
        if !outcome.receipts.is_empty() {
            let mut tally = crate::metrics::EventTally::default();
            for receipt in &outcome.receipts {
                tally.add(channel, EventKind::from(receipt.state));
            }
            // A failed route step has a job due now, to move on: wake the dispatcher.
            let failures = outcome.receipts.iter().any(|r| r.state.is_failure());
            self.store().record_receipts(outcome.receipts).await?;
            self.inner.metrics.record_events(&tally);
            if failures {
                self.inner.work_ready.notify_one();
            }
        }
        if !outcome.inbound.is_empty() {
            self.receive_inbound(outcome.inbound).await?;
        }
        self.inner.metrics.record_callback(provider, "accepted");
        Ok(Ok(outcome.reply))
    }

    /// Store inbound messages (those not stored before) and act on them; every path that
    /// receives messages comes through here. Returns the messages stored now.
    pub(crate) async fn receive_inbound(&self, batch: Vec<InboundMessage>) -> Result<Vec<Message>> {
        Ok(crate::ingest::receive(self, batch).await?)
    }

    /// Make a sandbox account receive a message, as if `from` had written to it: how to try
    /// conversations, keywords and replies without a provider. Refused for any other provider.
    pub async fn simulate_inbound(
        &self,
        workspace: WorkspaceId,
        account: ChannelAccountId,
        from: &str,
        content: Content,
    ) -> Result<std::result::Result<Message, SimulateError>> {
        let Some(entry) = self.inner.registry.get(self.store().as_ref(), account).await? else {
            return Ok(Err(SimulateError::NotFound));
        };
        if entry.account.workspace_id != workspace {
            return Ok(Err(SimulateError::NotFound));
        }
        if entry.account.provider != "sandbox" {
            return Ok(Err(SimulateError::NotSandbox));
        }
        let inbound = InboundMessage {
            channel_account_id: account,
            provider_message_id: format!("sim-{}{}", Millis::now().0, crate::uuid_like()),
            from: from.to_string(),
            to: None,
            content,
            received_at: Millis::now(),
            contact_id: None,
        };
        let stored = self.receive_inbound(vec![inbound]).await?;
        stored.into_iter().next().map(Ok).ok_or_else(|| {
            crate::EngineError::Store(parley_store::StoreError::Database("the simulated message was not stored".into()))
        })
    }
}

/// Why a simulated inbound message is refused.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("no such channel account in this workspace")]
    NotFound,
    #[error("only sandbox accounts can simulate inbound messages")]
    NotSandbox,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hints_keep_the_shape_and_hide_the_secrets() {
        let hint = credentials_hint(&json!({
            "auth_token": "0123456789abcdef",
            "pin": "1234",
            "service_account": {"private_key": "-----BEGIN PRIVATE KEY-----\nMIIE…xyz9\n", "port": 5},
            "none": null
        }));
        assert_eq!(
            hint,
            json!({"auth_token": "…cdef", "pin": "…", "service_account": {"private_key": "…yz9\n", "port": "…"}, "none": null})
        );
    }
}
