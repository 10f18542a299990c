//! OAuth2 for RBM: a service-account key signs a JWT (RS256), which the token endpoint exchanges
//! for a bearer access token (the JWT-bearer grant, RFC 7523). The token is cached until shortly
//! before it expires; a send that gets 401 drops it and fetches a new one once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The OAuth2 scope of the RBM API.
pub const SCOPE: &str = "https://www.googleapis.com/auth/rcsbusinessmessaging";
/// The grant type of a JWT-bearer token request.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a signed assertion is valid (Google's maximum).
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A cached token is replaced this long before the expiry the token endpoint announced.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The whole token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The fields of a Google service-account JSON key that Parley uses; the others (`type`,
/// `project_id`, `client_id`, `auth_uri`, …) are accepted and ignored.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Where Google says to exchange assertions; Parley uses the account's `token_url` setting.
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .field("private_key_id", &self.private_key_id.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why no access token could be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    /// `rbm:auth_failed` (the token endpoint refused the key: retrying cannot help) or
    /// `rbm:auth_unavailable` (it could not be reached or failed).
    pub code: &'static str,
    pub detail: String,
    pub permanent: bool,
}

impl AuthError {
    fn refused(detail: String) -> AuthError {
        AuthError { code: "rbm:auth_failed", detail, permanent: true }
    }

    fn unavailable(detail: String) -> AuthError {
        AuthError { code: "rbm:auth_unavailable", detail, permanent: false }
    }
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    /// When to stop using it (the announced expiry minus [`REFRESH_MARGIN`]).
    use_until: Instant,
}

/// Mints and caches access tokens for one service account.
pub struct TokenSource {
    signing_key: SigningKey<Sha256>,
    client_email: String,
    key_id: Option<String>,
    token_url: String,
    http: reqwest::Client,
    /// Held across a fetch, so that concurrent sends fetch once.
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.client_email)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Parse a PKCS#8 PEM private key. The error never quotes the key.
pub fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::from_pkcs8_pem(pem.trim()).map_err(|_| "is not an RSA private key in PKCS#8 PEM form".to_string())
}

impl TokenSource {
    pub fn new(key: &ServiceAccountKey, private_key: RsaPrivateKey, token_url: &str, http: reqwest::Client) -> Self {
        TokenSource {
            signing_key: SigningKey::<Sha256>::new(private_key),
            client_email: key.client_email.clone(),
            key_id: key.private_key_id.clone().filter(|k| !k.is_empty()),
            token_url: token_url.to_string(),
            http,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The signed JWT for the token request, issued at `now` (seconds since the epoch).
    pub fn assertion(&self, now: u64) -> String {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = serde_json::Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.signing_key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    pub async fn token(&self) -> Result<String, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && Instant::now() < cached.use_until
        {
            return Ok(cached.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *cache = Some(fetched);
        Ok(token)
    }

    /// Forget `token` (the API answered 401 to it), unless a newer one has replaced it already.
    pub async fn invalidate(&self, token: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.token == token) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<CachedToken, AuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let assertion = self.assertion(now);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", &assertion)
            .finish();
        let started = Instant::now();
        let response = self
            .http
            .post(&self.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| AuthError::unavailable(format!("token endpoint unreachable: {}", without_url(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| AuthError::unavailable(format!("token endpoint answer unreadable: {}", without_url(&e))))?;
        if !status.is_success() {
            let why = serde_json::from_str::<TokenErrorResponse>(&text)
                .ok()
                .map(|e| {
                    let mut s = e.error.unwrap_or_default();
                    if let Some(d) = e.error_description {
                        s = format!("{s}: {d}");
                    }
                    s
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no error description".into());
            let why: String = why.chars().take(300).collect();
            let detail = format!("token endpoint answered {}: {why}", status.as_u16());
            return Err(if status.is_client_error() && status.as_u16() != 429 {
                AuthError::refused(detail)
            } else {
                AuthError::unavailable(detail)
            });
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|_| AuthError::unavailable("token endpoint answer has no access_token".into()))?;
        if parsed.access_token.is_empty() {
            return Err(AuthError::unavailable("token endpoint answered an empty access_token".into()));
        }
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        // Measured from when the request started: the token may have been issued then.
        let use_until = started + lifetime.saturating_sub(REFRESH_MARGIN);
        tracing::debug!(client_email = %self.client_email, expires_in = lifetime.as_secs(), "rbm access token obtained");
        Ok(CachedToken { token: parsed.access_token, use_until })
    }
}

/// A reqwest error's text without its URL (which may carry nothing secret here, but keeps logs
/// short).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    kind.to_string()
}
