//! Config and status-table tests; socket-level tests of the session are in
//! `crates/testkit/tests/channel_smpp.rs` (against the fake SMSC).

use super::*;
use serde_json::json;

#[test]
fn config_defaults_and_named_errors() {
    let c = SmppConfig::from_json(&json!({"host": "smsc.example", "system_id": "esme1"})).unwrap();
    assert_eq!((c.port, c.window, c.enquire_link_seconds, c.response_timeout_ms), (2775, 50, 30, 10_000));
    assert_eq!(c.data_coding_default, 0);
    let field = |v: serde_json::Value| match SmppConfig::from_json(&v) {
        Err(ConfigError::InvalidField { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(json!({"system_id": "x"})), "host");
    assert_eq!(field(json!({"host": "h"})), "system_id");
    assert_eq!(field(json!({"host": "h", "system_id": "x", "windw": 5})), "windw");
    assert_eq!(field(json!({"host": "h", "system_id": "x", "window": 0})), "window");
    assert_eq!(field(json!({"host": "h", "system_id": "x", "tls": "yes"})), "tls");
    assert_eq!(field(json!({"host": "h", "system_id": "x", "receipt_id_conversion": "hex"})), "receipt_id_conversion");
    assert!(
        SmppConfig::from_json(&json!({"host": "h", "system_id": "x",
        "receipt_id_conversion": "submit_hex_receipt_decimal"}))
        .is_ok()
    );
}

#[test]
fn credentials_are_checked_and_never_echoed() {
    assert!(parse_credentials(&json!({"password": "secret"})).is_ok());
    let e = parse_credentials(&json!({"password": "much-too-long-secret"})).unwrap_err();
    assert!(!e.to_string().contains("much-too-long"), "{e}");
    let e = parse_credentials(&json!({"pasword": "topsecret1"})).unwrap_err();
    assert!(!e.to_string().contains("topsecret1"), "{e}");
    assert!(parse_credentials(&serde_json::Value::Null).is_err());
    assert_eq!(format!("{:?}", Password("pw".into())), "Password(***)");
}

#[test]
fn status_table() {
    let c = |s: u32| classify(&SubmitOutcome::Refused(s), 1500);
    match c(0x58) {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "smpp:0x00000058");
            assert_eq!(retry_after_ms, Some(1500));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(c(0x14), SendResult::Transient { retry_after_ms: Some(1500), .. }));
    assert!(matches!(c(0x08), SendResult::Transient { retry_after_ms: None, .. }));
    assert!(matches!(c(0x22), SendResult::Transient { .. }), "unknown codes are transient");
    for s in [0x01, 0x0A, 0x0B, 0x43, 0x53] {
        match c(s) {
            SendResult::Permanent { error } => assert_eq!(error.code, format!("smpp:0x{s:08x}")),
            other => panic!("{s:#x}: {other:?}"),
        }
    }
    assert!(matches!(classify(&SubmitOutcome::LinkDown, 0), SendResult::Transient { .. }));
    assert!(matches!(classify(&SubmitOutcome::Timeout, 0), SendResult::Transient { .. }));
}

#[tokio::test]
async fn build_starts_a_bind_that_reports_its_state() {
    // Nothing listens on this port: the bind stays down and check() says so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (events, _r, _i) = ProviderEvents::channel();
    let config = SmppConfig::from_json(&json!({"host": "127.0.0.1", "port": port, "system_id": "esme1",
        "reconnect_min_ms": 50}))
    .unwrap();
    let c = SmppConnector::start(ChannelAccountId::new(), config, &json!({"password": "pw"}), events).unwrap();
    match c.check().await {
        CheckResult::Failed { code, .. } => assert_eq!(code, "smpp:not_bound"),
        other => panic!("{other:?}"),
    }
    let request = OutboundRequest {
        message_id: parley_domain::MessageId::new(),
        channel_account_id: ChannelAccountId::new(),
        attempt: 1,
        channel: Channel::Sms,
        to: "+447700900123".into(),
        from: None,
        content: Content::text("hi"),
        expires_at: parley_domain::Millis(i64::MAX),
    };
    match c.send(&request).await {
        SendResult::Transient { error, .. } => assert_eq!(error.code, "smpp:not_bound"),
        other => panic!("{other:?}"),
    }
    c.shutdown();
}
