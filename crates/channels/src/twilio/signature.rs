//! `X-Twilio-Signature`: `base64(HMAC-SHA1(auth_token, url + Σ sorted(name + value)))`.
//!
//! As Twilio's own validators do (twilio-python `request_validator.py`): parameters are sorted by
//! name, the values of a repeated name are sorted and de-duplicated; the URL is tried as given,
//! without its port, and with the scheme's default port added when it has none. A JSON body is
//! signed through the URL: the URL carries `bodySHA256=<hex SHA-256 of the body>` and there are
//! no parameters. Comparisons are constant-time (`Mac::verify_slice`).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

type HmacSha1 = Hmac<Sha1>;

/// The string Twilio signs: the URL, then each parameter's name and value, sorted.
fn signed_content(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name.as_str()).or_default().insert(value.as_str());
    }
    let mut content = url.as_bytes().to_vec();
    for (name, values) in sorted {
        for value in values {
            content.extend_from_slice(name.as_bytes());
            content.extend_from_slice(value.as_bytes());
        }
    }
    content
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<HmacSha1> {
    // HMAC takes a key of any length: this never fails.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(&signed_content(url, params));
    Some(mac)
}

/// The `X-Twilio-Signature` of a request to `url` with these form parameters.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    mac(auth_token, url, params)
        .map(|mac| base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `signature` signs `url` and `params` under `auth_token`, for any of the URL's forms
/// (as given, without the port, with the default port).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    url_forms(url)
        .iter()
        .any(|candidate| mac(auth_token, candidate, params).is_some_and(|mac| mac.verify_slice(&expected).is_ok()))
}

/// Whether the `bodySHA256` a JSON callback's URL carries is the hash of `body` (hex, any case).
pub fn body_hash_matches(expected_hex: &str, body: &[u8]) -> bool {
    let actual = hex::encode(Sha256::digest(body));
    let expected = expected_hex.to_ascii_lowercase();
    // Constant time over the length of the hash.
    actual.len() == expected.len() && actual.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `url` as given, without its port, and with the scheme's default port when it has none.
fn url_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return forms;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The host part (after any user info); IPv6 literals keep their colons inside brackets.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let port_colon = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
        None => host_port.rfind(':'),
    };
    match port_colon {
        Some(colon) => {
            let without = format!("{scheme}://{}{}{tail}", &authority[..host_start], &host_port[..colon]);
            forms.push(without);
        }
        None => {
            let port = match scheme.to_ascii_lowercase().as_str() {
                "https" => 443,
                "http" => 80,
                _ => return forms,
            };
            forms.push(format!("{scheme}://{authority}:{port}{tail}"));
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_drop_or_add_the_port() {
        assert_eq!(url_forms("https://a.example/x?y=1"), ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]);
        assert_eq!(url_forms("http://127.0.0.1:8080/h"), ["http://127.0.0.1:8080/h", "http://127.0.0.1/h"]);
        assert_eq!(url_forms("http://[::1]:80/h"), ["http://[::1]:80/h", "http://[::1]/h"]);
        assert_eq!(url_forms("http://[::1]/h"), ["http://[::1]/h", "http://[::1]:80/h"]);
        assert_eq!(url_forms("http://u:p@h.example:81"), ["http://u:p@h.example:81", "http://u:p@h.example"]);
        assert_eq!(url_forms("not a url"), ["not a url"]);
    }

    #[test]
    fn a_signature_verifies_and_a_changed_one_does_not() {
        let params = vec![("B".to_string(), "2".to_string()), ("A".to_string(), "1".to_string())];
        let sig = sign("token", "https://h.example/p", &params);
        assert!(verify("token", "https://h.example/p", &params, &sig));
        assert!(verify("token", "https://h.example:443/p", &params, &sig));
        assert!(!verify("other", "https://h.example/p", &params, &sig));
        assert!(!verify("token", "https://h.example/q", &params, &sig));
        let changed = vec![("B".to_string(), "3".to_string()), ("A".to_string(), "1".to_string())];
        assert!(!verify("token", "https://h.example/p", &changed, &sig));
        assert!(!verify("token", "https://h.example/p", &params, "not base64!"));
        assert!(!verify("token", "https://h.example/p", &params, ""));
    }
}
