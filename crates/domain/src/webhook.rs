//! Signing of outbound webhooks, per Standard Webhooks 1.0 (symmetric scheme): the `whsec_`
//! secret of an endpoint, the `v1,<base64 HMAC-SHA256>` signature over `{id}.{timestamp}.{body}`,
//! the space-separated `webhook-signature` header used while a secret rotates, and the
//! verification a receiver (or a test of ours) does. No IO: callers pass the clock in.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the webhook's unique id (the same for every attempt of one event).
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the attempt's time, in integer seconds since the epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// What every serialised secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest secret the spec allows, in bytes (192 bits).
pub const MIN_SECRET_BYTES: usize = 24;
/// The longest secret the spec allows, in bytes (512 bits); also SHA-256's block size.
pub const MAX_SECRET_BYTES: usize = 64;
/// How far a `webhook-timestamp` may be from the receiver's clock, either way (the spec's 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// The signature version of HMAC-SHA256 signatures (`v1a` is the asymmetric scheme).
const VERSION: &str = "v1";
/// The block size of SHA-256, the length HMAC pads its key to.
const BLOCK: usize = 64;

/// An endpoint's signing secret: `whsec_` followed by the standard base64 of 24 to 64 random bytes.
///
/// Its `Debug` never shows the secret and it has no `Display`: the text is reached only through
/// [`WebhookSecret::expose`], for the one time it is shown to the workspace (and for storage).
#[derive(Clone)]
pub struct WebhookSecret {
    text: String,
    /// HMAC keyed with the secret, ready to be cloned for each signature.
    mac: HmacSha256,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with \"whsec_\"")]
    MissingPrefix,
    #[error("the part of a webhook secret after \"whsec_\" must be standard base64 (with padding)")]
    NotBase64,
    #[error("a webhook secret must decode to 24 to 64 bytes, not {0}")]
    BadLength(usize),
}

impl WebhookSecret {
    /// A new random secret of 24 bytes (192 bits, the spec's minimum) from the thread's CSPRNG.
    pub fn generate() -> Self {
        let key: [u8; MIN_SECRET_BYTES] = rand::rng().random();
        WebhookSecret { text: format!("{SECRET_PREFIX}{}", BASE64.encode(key)), mac: keyed_mac(&key) }
    }

    /// Read a secret in its serialised form, `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(WebhookSecret { text: text.to_owned(), mac: keyed_mac(&key) })
    }

    /// The secret in its serialised form, `whsec_…`. Show it once, at creation; never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…redacted)")
    }
}

/// HMAC-SHA256 keyed with `key` (at most [`MAX_SECRET_BYTES`] long).
///
/// HMAC pads a key shorter than the hash's block size with zeros (RFC 2104), and a valid secret
/// is never longer than SHA-256's 64-byte block, so keying with the zero-padded block gives the
/// same MAC as keying with the secret itself, through a constructor that cannot fail.
fn keyed_mac(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; BLOCK];
    let len = key.len().min(BLOCK);
    block[..len].copy_from_slice(&key[..len]);
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// The MAC state after `{id}.{timestamp}.{payload}`, ready to be finalised or verified.
fn mac_over(secret: &WebhookSecret, webhook_id: &str, timestamp_secs: i64, payload: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac.clone();
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The signature of one attempt, `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{payload}">`.
///
/// `payload` must be the exact bytes sent as the body. `webhook_id` must not contain a `.`
/// (Parley's ids never do), or the signed content would be ambiguous.
pub fn sign(secret: &WebhookSecret, webhook_id: &str, timestamp_secs: i64, payload: &[u8]) -> String {
    let tag = mac_over(secret, webhook_id, timestamp_secs, payload).finalize().into_bytes();
    format!("{VERSION},{}", BASE64.encode(tag))
}

/// The `webhook-signature` header: one signature per secret, separated by spaces. While a secret
/// rotates, both the new and the old one sign, so a receiver that knows either one accepts.
pub fn signature_header(secrets: &[&WebhookSecret], webhook_id: &str, timestamp_secs: i64, payload: &[u8]) -> String {
    let signatures: Vec<String> =
        secrets.iter().map(|secret| sign(secret, webhook_id, timestamp_secs, payload)).collect();
    signatures.join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp header must be integer seconds since the epoch")]
    InvalidTimestamp,
    #[error(
        "the webhook-timestamp {timestamp} is {} s away from now ({now}), more than the {tolerance} s allowed",
        timestamp.abs_diff(*now)
    )]
    TimestampOutOfTolerance { timestamp: i64, now: i64, tolerance: i64 },
    #[error("the webhook-signature header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature in the webhook-signature header matches a known secret")]
    NoMatchingSignature,
}

/// Check a received webhook, as a receiver would.
///
/// The timestamp must be within `tolerance_secs` of `now_secs`, either way (use
/// [`DEFAULT_TOLERANCE_SECS`]); then at least one `v1,` signature of the header must match one of
/// `secrets`, compared in constant time. Signatures of other versions (`v1a,` …) and entries that
/// are not valid base64 are ignored, as the spec asks.
pub fn verify(
    secrets: &[&WebhookSecret],
    webhook_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    payload: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let timestamp_header = timestamp_header.trim();
    if timestamp_header.is_empty() || !timestamp_header.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    let timestamp: i64 = timestamp_header.parse().map_err(|_| VerifyError::InvalidTimestamp)?;
    // A negative tolerance allows no skew at all.
    if timestamp.abs_diff(now_secs) > u64::try_from(tolerance_secs).unwrap_or(0) {
        return Err(VerifyError::TimestampOutOfTolerance { timestamp, now: now_secs, tolerance: tolerance_secs });
    }

    let candidates: Vec<Vec<u8>> = signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, signature)| BASE64.decode(signature).ok())
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    for secret in secrets {
        let mac = mac_over(secret, webhook_id, timestamp, payload);
        // `verify_slice` compares in constant time (and refuses a wrong length).
        if candidates.iter().any(|candidate| mac.clone().verify_slice(candidate).is_ok()) {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "evt_01J9ZQ3T9B5N9V3Z8K7X6W5V4U";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":"message.delivered","data":{"id":"msg_1"}}"#;

    fn secret_of(bytes: &[u8]) -> String {
        format!("whsec_{}", BASE64.encode(bytes))
    }

    #[test]
    fn parse_requires_the_prefix() {
        let bare = BASE64.encode([7u8; 24]);
        assert_eq!(WebhookSecret::parse(&bare).unwrap_err(), SecretError::MissingPrefix);
        assert_eq!(WebhookSecret::parse(&format!("WHSEC_{bare}")).unwrap_err(), SecretError::MissingPrefix);
        assert_eq!(WebhookSecret::parse(&format!("whsk_{bare}")).unwrap_err(), SecretError::MissingPrefix);
    }

    #[test]
    fn parse_requires_standard_base64() {
        for text in ["whsec_not base64!", "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD", "whsec_AAAA=AAA"] {
            assert_eq!(WebhookSecret::parse(text).unwrap_err(), SecretError::NotBase64, "{text}");
        }
    }

    #[test]
    fn parse_requires_24_to_64_bytes() {
        assert_eq!(WebhookSecret::parse("whsec_").unwrap_err(), SecretError::BadLength(0));
        assert_eq!(WebhookSecret::parse(&secret_of(&[1; 23])).unwrap_err(), SecretError::BadLength(23));
        assert_eq!(WebhookSecret::parse(&secret_of(&[1; 65])).unwrap_err(), SecretError::BadLength(65));
        for len in [24, 32, 64] {
            let text = secret_of(&vec![1; len]);
            assert_eq!(WebhookSecret::parse(&text).unwrap().expose(), text);
        }
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            WebhookSecret::parse("whsec_AAAA").unwrap_err().to_string(),
            "a webhook secret must decode to 24 to 64 bytes, not 3"
        );
    }

    #[test]
    fn generated_secrets_parse_back_and_differ() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(BASE64.decode(&a.expose()[6..]).unwrap().len(), 24);
        assert_ne!(a.expose(), b.expose());
        let again = WebhookSecret::parse(a.expose()).unwrap();
        assert_eq!(sign(&a, ID, TS, BODY), sign(&again, ID, TS, BODY));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = WebhookSecret::generate();
        let shown = format!("{secret:?} {:?} {secret:#?}", Some(&secret));
        assert!(!shown.contains(&secret.expose()[6..]), "{shown}");
        assert!(shown.starts_with("WebhookSecret(whsec_…redacted)"), "{shown}");
    }

    #[test]
    fn the_padded_key_gives_the_same_mac_as_the_plain_key() {
        for len in [24, 33, 63, 64] {
            let key: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let secret = WebhookSecret::parse(&secret_of(&key)).unwrap();
            let mut plain = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            plain.update(format!("{ID}.{TS}.").as_bytes());
            plain.update(BODY);
            let expected = format!("v1,{}", BASE64.encode(plain.finalize().into_bytes()));
            assert_eq!(sign(&secret, ID, TS, BODY), expected, "key of {len} bytes");
        }
    }

    #[test]
    fn a_rotation_header_verifies_with_either_secret() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let header = signature_header(&[&new, &old], ID, TS, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [sign(&new, ID, TS, BODY), sign(&old, ID, TS, BODY)]);
        for receiver_knows in [&old, &new] {
            assert_eq!(verify(&[receiver_knows], ID, &TS.to_string(), &header, BODY, TS, 300), Ok(()));
        }
        let other = WebhookSecret::generate();
        assert_eq!(
            verify(&[&other], ID, &TS.to_string(), &header, BODY, TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
        // A receiver in the middle of its own rotation knows two secrets; one match is enough.
        assert_eq!(verify(&[&other, &old], ID, &TS.to_string(), &header, BODY, TS, 300), Ok(()));
    }

    #[test]
    fn an_empty_rotation_header_has_no_signature() {
        let secret = WebhookSecret::generate();
        assert_eq!(signature_header(&[], ID, TS, BODY), "");
        assert_eq!(verify(&[&secret], ID, "1700000000", "", BODY, TS, 300), Err(VerifyError::NoSignature));
    }

    #[test]
    fn unknown_versions_and_garbage_are_ignored() {
        let secret = WebhookSecret::generate();
        let good = sign(&secret, ID, TS, BODY);
        let v1a = format!("v1a,{}", &good[3..]);
        assert_eq!(verify(&[&secret], ID, "1700000000", &v1a, BODY, TS, 300), Err(VerifyError::NoSignature));
        let header = format!("{v1a} v1,@@not-base64@@ v2,AAAA nocomma {good}");
        assert_eq!(verify(&[&secret], ID, "1700000000", &header, BODY, TS, 300), Ok(()));
        // A truncated signature is not a match.
        let short = &good[..good.len() - 8];
        assert_eq!(verify(&[&secret], ID, "1700000000", short, BODY, TS, 300), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn the_timestamp_is_checked_first_and_both_ways() {
        let secret = WebhookSecret::generate();
        let header = sign(&secret, ID, TS, BODY);
        for bad in ["", "abc", "1700000000.5", "-1700000000", "+1700000000", "99999999999999999999"] {
            assert_eq!(
                verify(&[&secret], ID, bad, &header, BODY, TS, 300),
                Err(VerifyError::InvalidTimestamp),
                "{bad:?}"
            );
        }
        assert_eq!(verify(&[&secret], ID, "1700000000", &header, BODY, TS + 300, 300), Ok(()));
        assert_eq!(verify(&[&secret], ID, "1700000000", &header, BODY, TS - 300, 300), Ok(()));
        let err = verify(&[&secret], ID, "1700000000", &header, BODY, TS - 301, 300).unwrap_err();
        assert_eq!(err, VerifyError::TimestampOutOfTolerance { timestamp: TS, now: TS - 301, tolerance: 300 });
        assert_eq!(
            err.to_string(),
            "the webhook-timestamp 1700000000 is 301 s away from now (1699999699), more than the 300 s allowed"
        );
    }
}
