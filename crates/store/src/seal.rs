//! Sealing secrets at rest: channel account credentials are encrypted with XChaCha20-Poly1305
//! under the operator's key before they reach a table, and opened only in memory.
//!
//! A sealed value reads `v1.<base64url(nonce ‖ ciphertext ‖ tag)>`. The nonce is 24 random
//! bytes, so random nonces never repeat in practice; the account id is bound as associated data,
//! so a sealed value copied onto another account does not open.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const VERSION: &str = "v1.";
const NONCE_BYTES: usize = 24;

/// The 32-byte key that seals credentials. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SealingKey([u8; 32]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a sealing key is 32 bytes in standard base64 (44 characters); this one is not")]
    BadKey,
    #[error("the sealed value is not in the v1 format")]
    Format,
    #[error("the sealed value does not open with this key (a different key, or tampered with)")]
    WrongKeyOrTampered,
}

impl SealingKey {
    /// A new random key.
    pub fn generate() -> SealingKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SealingKey(key)
    }

    /// Read a key written as standard base64 (what [`SealingKey::to_base64`] gives).
    pub fn from_base64(text: &str) -> Result<SealingKey, SealError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(SealingKey(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Seal `plaintext` for the record named `bound_to` (e.g. a channel account id).
    pub fn seal(&self, bound_to: &str, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce length cannot fail.
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: bound_to.as_bytes() })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Open a value sealed for `bound_to`.
    pub fn open(&self, bound_to: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(VERSION).ok_or(SealError::Format)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Format)?;
        if bytes.len() < NONCE_BYTES + 16 {
            return Err(SealError::Format);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: bound_to.as_bytes() })
            .map_err(|_| SealError::WrongKeyOrTampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_record() {
        let key = SealingKey::generate();
        let sealed = key.seal("cha_1", br#"{"auth_token":"s3cret"}"#);
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open("cha_1", &sealed).unwrap(), br#"{"auth_token":"s3cret"}"#);
        assert_eq!(key.open("cha_2", &sealed), Err(SealError::WrongKeyOrTampered));
        assert_eq!(SealingKey::generate().open("cha_1", &sealed), Err(SealError::WrongKeyOrTampered));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(key.seal("cha_1", b"x"), key.seal("cha_1", b"x"));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let key = SealingKey::generate();
        let sealed = key.seal("a", b"hello");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(key.open("a", &tampered), Err(SealError::WrongKeyOrTampered));
        assert_eq!(key.open("a", "hello"), Err(SealError::Format));
        assert_eq!(key.open("a", "v1.AAAA"), Err(SealError::Format));
        assert_eq!(key.open("a", "v1.!!!"), Err(SealError::Format));
    }

    #[test]
    fn keys_round_trip_through_base64_and_never_print() {
        let key = SealingKey::generate();
        let again = SealingKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.open("a", &key.seal("a", b"x")).unwrap(), b"x");
        assert_eq!(SealingKey::from_base64("c2hvcnQ=").err(), Some(SealError::BadKey));
        assert_eq!(SealingKey::from_base64("not base64!").err(), Some(SealError::BadKey));
        assert_eq!(format!("{key:?}"), "SealingKey(…)");
    }
}
