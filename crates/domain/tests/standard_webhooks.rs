//! Parley's webhook signatures against the Standard Webhooks reference vector
//! (`fixtures/standard_webhooks_vectors.json`, see `fixtures/README.md` for its origin).

use parley_domain::webhook::{self, DEFAULT_TOLERANCE_SECS, VerifyError, WebhookSecret};

struct Vector {
    secret: WebhookSecret,
    id: String,
    timestamp_header: String,
    timestamp: i64,
    payload: Vec<u8>,
    expected: String,
}

fn vector() -> Vector {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/standard_webhooks_vectors.json")).expect("the fixture is JSON");
    let field = |name: &str| json[name].as_str().unwrap_or_else(|| panic!("the fixture has no {name}")).to_owned();
    let timestamp_header = field("webhook-timestamp");
    Vector {
        secret: WebhookSecret::parse(&field("secret")).expect("the fixture's secret parses"),
        id: field("webhook-id"),
        timestamp: timestamp_header.parse().expect("the fixture's timestamp is an integer"),
        timestamp_header,
        payload: field("payload").into_bytes(),
        expected: field("expected_webhook-signature"),
    }
}

#[test]
fn signing_the_vector_gives_exactly_the_expected_signature() {
    let v = vector();
    assert_eq!(webhook::sign(&v.secret, &v.id, v.timestamp, &v.payload), v.expected);
    assert_eq!(webhook::signature_header(&[&v.secret], &v.id, v.timestamp, &v.payload), v.expected);
}

#[test]
fn the_vector_verifies() {
    let v = vector();
    let now = v.timestamp + 10;
    let check = |signature: &str| {
        webhook::verify(&[&v.secret], &v.id, &v.timestamp_header, signature, &v.payload, now, DEFAULT_TOLERANCE_SECS)
    };
    assert_eq!(check(&v.expected), Ok(()));
    // Next to an asymmetric signature it does not know, as in the spec's example header.
    assert_eq!(check(&format!("v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzC== {}", v.expected)), Ok(()));
}

#[test]
fn a_tampered_payload_is_refused() {
    let v = vector();
    let tampered = String::from_utf8(v.payload.clone()).expect("utf-8").replace("test_user", "admin");
    let mut one_byte_more = v.payload.clone();
    one_byte_more.push(b' ');
    for payload in [tampered.as_bytes(), &one_byte_more, b""] {
        assert_eq!(
            webhook::verify(
                &[&v.secret],
                &v.id,
                &v.timestamp_header,
                &v.expected,
                payload,
                v.timestamp,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }
    // The id is signed too.
    assert_eq!(
        webhook::verify(
            &[&v.secret],
            "msg_other",
            &v.timestamp_header,
            &v.expected,
            &v.payload,
            v.timestamp,
            DEFAULT_TOLERANCE_SECS
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn a_wrong_secret_is_refused() {
    let v = vector();
    let wrong = WebhookSecret::generate();
    assert_eq!(
        webhook::verify(
            &[&wrong],
            &v.id,
            &v.timestamp_header,
            &v.expected,
            &v.payload,
            v.timestamp,
            DEFAULT_TOLERANCE_SECS
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn an_old_or_future_timestamp_is_refused_even_with_a_valid_signature() {
    let v = vector();
    let at = |now: i64| {
        webhook::verify(&[&v.secret], &v.id, &v.timestamp_header, &v.expected, &v.payload, now, DEFAULT_TOLERANCE_SECS)
    };
    assert_eq!(at(v.timestamp + 300), Ok(()));
    assert_eq!(
        at(v.timestamp + 301),
        Err(VerifyError::TimestampOutOfTolerance { timestamp: v.timestamp, now: v.timestamp + 301, tolerance: 300 })
    );
    // A replay a day later.
    assert!(matches!(at(v.timestamp + 86_400), Err(VerifyError::TimestampOutOfTolerance { .. })));
    assert!(matches!(at(v.timestamp - 301), Err(VerifyError::TimestampOutOfTolerance { .. })));
}
