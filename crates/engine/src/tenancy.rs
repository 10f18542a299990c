//! Workspaces, API keys and the first start.
//!
//! API keys are `pk_` followed by 32 random base62 characters (about 190 bits). Only their
//! SHA-256 is stored: a key this random cannot be guessed from its hash, so a slow password
//! hash would add nothing but cost on every request. Authentications are cached for a few
//! seconds so that the hot path does not read the database; a revocation by this process takes
//! effect at once, one by another process within the cache time.

use crate::cache::TtlCache;
use crate::{Engine, Result};
use parley_domain::{ApiKeyId, Channel, ChannelAccountId, Millis, Scope, Scopes, WorkspaceId};
use parley_store::{ApiKey, ChannelAccount, Workspace};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::time::Duration;

const KEY_RANDOM_CHARS: usize = 32;
const PREFIX_CHARS: usize = 8;
const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Default send rate of a sandbox account: far above what the benchmarks push.
pub const SANDBOX_RATE_LIMIT: u32 = 100_000;
pub const SANDBOX_MAX_IN_FLIGHT: u32 = 10_000;

/// A key just made: the secret is shown this once and never again.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: String,
}

pub fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let random: String = (0..KEY_RANDOM_CHARS).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("pk_{random}")
}

/// Keys by hash (`None`: no such key), read again after [`AUTH_CACHE_TTL`].
pub struct AuthCache(TtlCache<String, Option<ApiKey>>);

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache(TtlCache::new(AUTH_CACHE_TTL))
    }
}

impl Engine {
    /// The active (not revoked) key whose secret is `secret`.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        let hash = hash_api_key(secret);
        let key = match self.inner.auth_cache.0.get(&hash) {
            Some(cached) => cached,
            None => {
                let found = self.store().find_api_key_by_hash(&hash).await?;
                self.inner.auth_cache.0.put(hash, found.clone());
                found
            }
        };
        Ok(key.filter(|k| k.revoked_at.is_none()))
    }

    /// A new workspace with a sandbox channel account for every channel (the defaults).
    pub async fn create_workspace(&self, name: &str) -> Result<(Workspace, Vec<ChannelAccount>)> {
        let now = Millis::now();
        let workspace = Workspace { id: WorkspaceId::new(), name: name.to_string(), created_at: now };
        self.store().create_workspace(&workspace).await?;
        let mut accounts = Vec::new();
        for channel in Channel::ALL {
            let account = ChannelAccount {
                id: ChannelAccountId::new(),
                workspace_id: workspace.id,
                channel,
                provider: "sandbox".into(),
                name: format!("Sandbox {}", channel.as_str()),
                config: serde_json::json!({}),
                rate_limit_per_second: SANDBOX_RATE_LIMIT,
                max_in_flight: SANDBOX_MAX_IN_FLIGHT,
                is_default: true,
                created_at: now,
                updated_at: now,
                credentials: None,
                credentials_hint: None,
                deleted_at: None,
            };
            self.store().create_channel_account(&account).await?;
            accounts.push(account);
        }
        self.inner.registry.reload(self.store().as_ref()).await?;
        Ok((workspace, accounts))
    }

    pub async fn create_api_key(&self, workspace: WorkspaceId, name: &str, scopes: Vec<Scope>) -> Result<NewApiKey> {
        let secret = new_secret();
        let key = ApiKey {
            id: ApiKeyId::new(),
            workspace_id: workspace,
            name: name.to_string(),
            prefix: secret[..3 + PREFIX_CHARS].to_string(),
            hash: hash_api_key(&secret),
            scopes: Scopes::new(scopes),
            created_at: Millis::now(),
            revoked_at: None,
        };
        self.store().create_api_key(&key).await?;
        Ok(NewApiKey { key, secret })
    }

    pub async fn revoke_api_key(&self, workspace: WorkspaceId, id: ApiKeyId) -> Result<Option<ApiKey>> {
        let key = self.store().revoke_api_key(workspace, id, Millis::now()).await?;
        if let Some(k) = &key {
            self.inner.auth_cache.0.forget(&k.hash);
        }
        Ok(key)
    }

    /// On a store without workspaces: make the first one, with sandbox accounts and an admin key,
    /// and return the key (to be shown once). `None` when the store was set up before.
    pub async fn bootstrap(&self) -> Result<Option<(Workspace, NewApiKey)>> {
        if !self.store().list_workspaces().await?.is_empty() {
            return Ok(None);
        }
        let (workspace, _) = self.create_workspace("Default workspace").await?;
        let key = self.create_api_key(workspace.id, "bootstrap admin key", vec![Scope::Admin]).await?;
        Ok(Some((workspace, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("pk_") && a.len() == 3 + KEY_RANDOM_CHARS);
        assert_eq!(hash_api_key(&a).len(), 64);
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
    }
}
