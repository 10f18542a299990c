//! Parley's configuration: defaults, then `parley.toml` (or `--config`), then `PARLEY_*`
//! environment variables (nested keys with `__`, e.g. `PARLEY_DISPATCHER__CLAIM_BATCH`), then
//! command-line flags. Loaded and checked once at start; a bad value stops start-up with a
//! message naming the key.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where the embedded database and the sandbox's records live.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; unset for SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter: `info`, `parley_engine=debug,info`, …
    pub log_level: String,
    /// Serve the HTTP API in this process.
    pub api: bool,
    /// Run the dispatcher and other workers in this process.
    pub workers: bool,
    pub dispatcher: DispatcherConfig,
    pub sandbox: SandboxSettings,
    pub metrics: MetricsSettings,
    pub webhooks: WebhookConfig,
    pub rate_limit: RateLimitConfig,
    /// The base URL providers reach this server at (`https://parley.example.com`), for the
    /// callback URLs given to them; default `http://` and `listen`.
    pub public_url: Option<String>,
    pub secrets: SecretsConfig,
    pub conversations: ConversationsConfig,
}

/// How conversations behave.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsConfig {
    /// A conversation without a message for this long closes; the next message opens a new one
    /// (60 to 2,592,000, i.e. 30 days; default 86,400).
    pub idle_seconds: i64,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        ConversationsConfig { idle_seconds: parley_domain::conversation::DEFAULT_IDLE_SECONDS }
    }
}

/// The key that seals channel account credentials at rest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 32 bytes in standard base64 (`openssl rand -base64 32`). Unset: the key in
    /// `data_dir/sealing.key`, created on first start. Processes sharing a PostgreSQL database
    /// must share the key.
    pub key: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Jobs claimed at once (1 to 10,000).
    pub claim_batch: u32,
    /// How long a claim holds a job (10 to 3,600 s).
    pub lease_seconds: u32,
    /// Sends in progress at once in this process (1 to 100,000).
    pub max_in_flight: usize,
    /// How often an idle dispatcher looks for due work (10 to 60,000 ms).
    pub idle_poll_ms: u64,
    /// At shutdown, how long in-flight sends may take (0 to 300 s).
    pub shutdown_grace_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Record every submission the sandbox receives in `data_dir/sandbox-submissions.log`.
    pub ledger: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` (Prometheus text format, no key needed) beside the API.
    pub enabled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Networks (CIDR, e.g. `10.20.0.0/16`, `127.0.0.1/32`) that webhook endpoints may reach
    /// beyond the public internet. Empty by default: loopback, private, link-local and metadata
    /// addresses are refused.
    pub allow_networks: Vec<String>,
    /// How long an endpoint has to answer one delivery (1 to 60 s).
    pub timeout_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained API requests per second per key (0: no limit). Counted per process.
    pub per_key_per_second: u32,
    /// Requests a key may make at once (1 to 1,000,000).
    pub per_key_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let d = parley_server::ratelimit::RateLimitSettings::default();
        RateLimitConfig { per_key_per_second: d.per_second, per_key_burst: d.burst }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig { allow_networks: Vec::new(), timeout_seconds: 15 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("parley-data"),
            database_url: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            api: true,
            workers: true,
            dispatcher: DispatcherConfig::default(),
            sandbox: SandboxSettings::default(),
            metrics: MetricsSettings::default(),
            webhooks: WebhookConfig::default(),
            rate_limit: RateLimitConfig::default(),
            public_url: None,
            secrets: SecretsConfig::default(),
            conversations: ConversationsConfig::default(),
        }
    }
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        let engine = parley_engine::EngineConfig::default();
        DispatcherConfig {
            claim_batch: engine.claim_batch,
            lease_seconds: (engine.lease_ms / 1000) as u32,
            max_in_flight: engine.max_in_flight,
            idle_poll_ms: engine.idle_poll_ms,
            shutdown_grace_seconds: engine.shutdown_grace_ms / 1000,
        }
    }
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings { ledger: true }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { enabled: true }
    }
}

/// Environment variables that the client commands read, not the server's configuration.
const CLIENT_VARIABLES: &[&str] = &["key", "url"];

impl Config {
    /// Load from `file` (default `parley.toml` if it exists), the environment and `overrides`.
    pub fn load(file: Option<&Path>, overrides: Figment) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    anyhow::bail!("configuration file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("parley.toml")),
        }
        let env = Env::prefixed("PARLEY_").split("__").filter(|key| {
            // Keys keep the case they were written in.
            let key = key.as_str().to_ascii_lowercase();
            !key.starts_with("test_") && !CLIENT_VARIABLES.contains(&key.as_str())
        });
        let config: Config = figment
            .merge(env)
            .merge(overrides)
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {}", describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let d = &self.dispatcher;
        let checks: [(&str, bool, &str); 5] = [
            ("dispatcher.claim_batch", (1..=10_000).contains(&d.claim_batch), "1 to 10000"),
            ("dispatcher.lease_seconds", (10..=3_600).contains(&d.lease_seconds), "10 to 3600"),
            ("dispatcher.max_in_flight", (1..=100_000).contains(&d.max_in_flight), "1 to 100000"),
            ("dispatcher.idle_poll_ms", (10..=60_000).contains(&d.idle_poll_ms), "10 to 60000"),
            ("dispatcher.shutdown_grace_seconds", d.shutdown_grace_seconds <= 300, "0 to 300"),
        ];
        for (key, ok, range) in checks {
            if !ok {
                anyhow::bail!("invalid configuration: '{key}' must be {range}");
            }
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            anyhow::bail!("invalid configuration: 'public_url' must start with https:// or http://");
        }
        if let Some(key) = &self.secrets.key {
            parley_store::seal::SealingKey::from_base64(key)
                .map_err(|e| anyhow::anyhow!("invalid configuration: 'secrets.key': {e}"))?;
        }
        if !(60..=30 * 86_400).contains(&self.conversations.idle_seconds) {
            anyhow::bail!("invalid configuration: 'conversations.idle_seconds' must be 60 to 2592000");
        }
        if !(1..=60).contains(&self.webhooks.timeout_seconds) {
            anyhow::bail!("invalid configuration: 'webhooks.timeout_seconds' must be 1 to 60");
        }
        self.webhook_policy()?;
        if !(1..=1_000_000).contains(&self.rate_limit.per_key_burst) {
            anyhow::bail!("invalid configuration: 'rate_limit.per_key_burst' must be 1 to 1000000");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite://"))
        {
            anyhow::bail!("invalid configuration: 'database_url' must start with postgres:// or sqlite://");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            anyhow::bail!("invalid configuration: 'log_level' is not a valid filter: '{}'", self.log_level);
        }
        Ok(())
    }

    /// The database to open: `database_url`, or the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("parley.db").display()),
        }
    }

    pub fn server_options(&self) -> parley_server::ServerOptions {
        let r = &self.rate_limit;
        parley_server::ServerOptions {
            metrics: self.metrics.enabled,
            rate_limit: (r.per_key_per_second > 0).then_some(parley_server::ratelimit::RateLimitSettings {
                per_second: r.per_key_per_second,
                burst: r.per_key_burst,
            }),
        }
    }

    /// The SSRF guard's allow-list, each entry checked.
    fn webhook_policy(&self) -> anyhow::Result<parley_engine::webhooks::UrlPolicy> {
        let mut allow = Vec::new();
        for (i, entry) in self.webhooks.allow_networks.iter().enumerate() {
            let cidr = entry.parse().map_err(|e| {
                anyhow::anyhow!("invalid configuration: 'webhooks.allow_networks[{i}]' ('{entry}'): {e}")
            })?;
            allow.push(cidr);
        }
        Ok(parley_engine::webhooks::UrlPolicy::new(allow))
    }

    pub fn engine_config(&self) -> parley_engine::EngineConfig {
        let d = &self.dispatcher;
        let webhooks = parley_engine::WebhookSettings {
            // Checked by `validate` at load.
            policy: self.webhook_policy().unwrap_or_default(),
            timeout: std::time::Duration::from_secs(self.webhooks.timeout_seconds),
            ..Default::default()
        };
        parley_engine::EngineConfig {
            public_url: self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)),
            run_workers: self.workers,
            claim_batch: d.claim_batch,
            lease_ms: i64::from(d.lease_seconds) * 1000,
            max_in_flight: d.max_in_flight,
            idle_poll_ms: d.idle_poll_ms,
            shutdown_grace_ms: d.shutdown_grace_seconds * 1000,
            sandbox_ledger: self.sandbox.ledger.then(|| self.data_dir.join("sandbox-submissions.log")),
            webhooks,
            conversation_idle_seconds: self.conversations.idle_seconds,
            ..Default::default()
        }
    }
}

impl Config {
    /// The sealing key: `secrets.key`, or the data directory's key file, created (readable by
    /// this user only) when it does not exist yet.
    pub fn sealing_key(&self) -> anyhow::Result<parley_store::seal::SealingKey> {
        use parley_store::seal::SealingKey;
        if let Some(key) = &self.secrets.key {
            return SealingKey::from_base64(key).map_err(|e| anyhow::anyhow!("'secrets.key': {e}"));
        }
        let path = self.data_dir.join("sealing.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => SealingKey::from_base64(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.data_dir)?;
                let key = SealingKey::generate();
                write_private(&path, &key.to_base64())?;
                tracing::info!(path = %path.display(), "created the key that seals channel account credentials");
                Ok(key)
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// Create `path` with `contents`, readable and writable by this user only; fails if it exists.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// figment's message, with the key it concerns (and the source that set it).
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { format!("'{}': ", e.path.join(".")) };
            let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's Jail closures return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        figment::Jail::expect_with(|_jail| {
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 8080);
            assert!(c.database_url().starts_with("sqlite://"));
            Ok(())
        });
    }

    #[test]
    fn file_and_environment_are_read_and_bad_keys_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("parley.toml", "listen = \"127.0.0.1:9999\"\n[dispatcher]\nclaim_batch = 7\n")?;
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9999);
            assert_eq!(c.dispatcher.claim_batch, 7);
            jail.set_env("PARLEY_DISPATCHER__CLAIM_BATCH", "9");
            jail.set_env("PARLEY_TEST_POSTGRES_URL", "ignored");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.dispatcher.claim_batch, 9);
            jail.set_env("PARLEY_LISTEN", "not an address");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("'listen'"), "{e}");
            jail.set_env("PARLEY_LISTEN", "127.0.0.1:1");
            jail.set_env("PARLEY_LISTN", "typo");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("listn"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn metrics_are_on_by_default_and_can_be_switched_off() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert!(c.metrics.enabled && c.server_options().metrics);
            jail.create_file("parley.toml", "[metrics]\nenabled = false\n")?;
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert!(!c.server_options().metrics);
            jail.set_env("PARLEY_METRICS__ENABLED", "true");
            assert!(Config::load(None, Figment::new()).map_err(|e| e.to_string())?.metrics.enabled);
            jail.set_env("PARLEY_METRICS__ENABLED", "sometimes");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("'metrics.enabled'"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn webhook_networks_are_checked_and_reach_the_engine() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert!(c.engine_config().webhooks.policy.allow.is_empty());
            assert_eq!(c.engine_config().webhooks.timeout.as_secs(), 15);
            jail.create_file("parley.toml", "[webhooks]\nallow_networks = [\"10.20.0.0/16\", \"::1/128\"]\n")?;
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            let policy = c.engine_config().webhooks.policy;
            assert!(policy.allows("10.20.3.4".parse().unwrap()));
            assert!(!policy.allows("10.21.0.1".parse().unwrap()));
            assert!(policy.allows("::1".parse().unwrap()));
            jail.create_file("parley.toml", "[webhooks]\nallow_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n")?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("'webhooks.allow_networks[1]'"), "{e}");
            jail.create_file("parley.toml", "[webhooks]\ntimeout_seconds = 0\n")?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("'webhooks.timeout_seconds'"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn rate_limits_default_on_and_can_be_lifted() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            let limit = c.server_options().rate_limit.expect("on by default");
            assert_eq!((limit.per_second, limit.burst), (1000, 2000));
            jail.set_env("PARLEY_RATE_LIMIT__PER_KEY_PER_SECOND", "0");
            assert!(
                Config::load(None, Figment::new()).map_err(|e| e.to_string())?.server_options().rate_limit.is_none()
            );
            jail.set_env("PARLEY_RATE_LIMIT__PER_KEY_BURST", "0");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("'rate_limit.per_key_burst'"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn out_of_range_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PARLEY_DISPATCHER__LEASE_SECONDS", "1");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("dispatcher.lease_seconds"), "{e}");
            Ok(())
        });
    }
}
