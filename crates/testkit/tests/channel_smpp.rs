//! The SMPP connector against the fake SMSC (`parley_testkit::smsc`): first the connector alone
//! over a real socket (bind, window, receipts, MO, throttling, link loss, malformed PDUs), then
//! end to end through the HTTP API on both backends.

mod common;

use common::*;
use parley_channels::smpp::{SmppConfig, SmppConnector};
use parley_channels::{CheckResult, Connector, OutboundRequest, ProviderEvents, SendResult};
use parley_domain::{Channel, ChannelAccountId, Content, InboundMessage, MessageId, MessageState, Millis, Receipt};
use parley_testkit::smsc::{FakeSmsc, IdFormat, SmscConfig};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    smsc: FakeSmsc,
    connector: SmppConnector,
    account: ChannelAccountId,
    receipts: UnboundedReceiver<Receipt>,
    inbound: UnboundedReceiver<InboundMessage>,
}

async fn rig(smsc: SmscConfig, extra: Value) -> Rig {
    let smsc = FakeSmsc::start(smsc).await.unwrap();
    let mut config = smsc.account_config();
    config["reconnect_min_ms"] = json!(50);
    config["reconnect_max_ms"] = json!(200);
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let (events, receipts, inbound) = ProviderEvents::channel();
    let account = ChannelAccountId::new();
    let config = SmppConfig::from_json(&config).unwrap();
    let connector = SmppConnector::start(account, config, &smsc.credentials(), events).unwrap();
    assert!(connector.wait_bound(WAIT).await, "the connector binds");
    Rig { smsc, connector, account, receipts, inbound }
}

fn request(to: &str, text: &str) -> OutboundRequest {
    OutboundRequest {
        message_id: MessageId::new(),
        channel_account_id: ChannelAccountId::new(),
        attempt: 1,
        channel: Channel::Sms,
        to: to.into(),
        from: None,
        content: Content::text(text),
        expires_at: Millis(i64::MAX),
    }
}

async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("open")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn accepted(r: SendResult) -> (String, Vec<String>) {
    match r {
        SendResult::Accepted { provider_message_id, part_ids } => (provider_message_id, part_ids),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn send_then_delivered_receipt_matches_the_id() {
    for (format, text, tlvs) in
        [(IdFormat::Hex, true, false), (IdFormat::Decimal, true, false), (IdFormat::Hex, false, true)]
    {
        let config = SmscConfig { id_format: format, receipt_text: text, receipt_tlvs: tlvs, ..SmscConfig::default() };
        let mut r = rig(config, json!({"source_addr": "ACME"})).await;
        let (id, parts) = accepted(r.connector.send(&request("+447700900123", "Hello world")).await);
        assert!(parts.is_empty());
        let taken = r.smsc.submitted();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].text, "Hello world");
        assert_eq!((taken[0].sm.destination_addr.as_str(), taken[0].sm.dest_addr_ton), ("447700900123", 1));
        assert_eq!((taken[0].sm.source_addr.as_str(), taken[0].sm.data_coding), ("ACME", 0));
        // The SMSC's id has leading zeros (and upper-case hex); Parley's is normalised.
        assert_ne!(taken[0].message_id, id);
        assert_eq!(parley_channels::smpp::receipt::normalize_id(&taken[0].message_id), id);
        let receipt = next(&mut r.receipts).await;
        assert_eq!((receipt.provider_message_id.as_str(), receipt.state), (id.as_str(), MessageState::Delivered));
        assert_eq!(receipt.channel_account_id, r.account);
        assert!(receipt.details.is_some());
        assert!(matches!(r.connector.check().await, CheckResult::Ok { .. }));
        r.connector.shutdown();
    }
}

#[tokio::test]
async fn receipt_ids_in_another_base_are_converted() {
    let config =
        SmscConfig { id_format: IdFormat::Hex, receipt_id_format: Some(IdFormat::Decimal), ..SmscConfig::default() };
    let mut r = rig(config, json!({"receipt_id_conversion": "submit_hex_receipt_decimal"})).await;
    let (id, _) = accepted(r.connector.send(&request("+447700900123", "hi")).await);
    let receipt = next(&mut r.receipts).await;
    assert_eq!(receipt.provider_message_id, id);
}

#[tokio::test]
async fn undelivered_receipts_carry_the_error() {
    let config = SmscConfig { receipt_stat: "UNDELIV".into(), receipt_tlvs: false, ..SmscConfig::default() };
    let mut r = rig(config, json!({})).await;
    let (id, _) = accepted(r.connector.send(&request("+447700900123", "hi")).await);
    let receipt = next(&mut r.receipts).await;
    assert_eq!((receipt.provider_message_id, receipt.state), (id, MessageState::Undelivered));
    let error = receipt.error.unwrap();
    assert_eq!(error.code, "smpp:undeliv");
    assert_eq!(receipt.details.unwrap()["err"], "001");
}

#[tokio::test]
async fn long_and_unicode_texts_go_in_parts() {
    let mut r = rig(SmscConfig::default(), json!({})).await;
    let text = format!("{} — ünïcödé 😜 {}", "a".repeat(60), "b".repeat(100));
    let (first, parts) = accepted(r.connector.send(&request("+447700900123", &text)).await);
    let taken = r.smsc.submitted();
    assert_eq!(parts.len(), taken.len());
    assert!(taken.len() >= 3, "{} parts", taken.len());
    assert_eq!(first, parts[0]);
    let mut by_seq: Vec<_> = taken.iter().map(|t| (t.sm.short_message[5], t.text.clone())).collect();
    by_seq.sort();
    assert_eq!(by_seq.into_iter().map(|(_, t)| t).collect::<String>(), text);
    for t in &taken {
        assert_eq!((t.sm.data_coding, t.sm.esm_class & 0x40), (8, 0x40));
        assert_eq!(&t.sm.short_message[..3], &[5, 0, 3]);
    }
    for _ in 0..taken.len() {
        let receipt = next(&mut r.receipts).await;
        assert!(parts.contains(&receipt.provider_message_id));
    }
}

#[tokio::test]
async fn mobile_originated_messages_arrive_whole() {
    let mut r = rig(SmscConfig::default(), json!({})).await;
    assert!(r.smsc.inject_mo("+447700900999", "12345", "YES please €"));
    let mo = next(&mut r.inbound).await;
    assert_eq!(mo.from, "+447700900999");
    assert_eq!(mo.to.as_deref(), Some("12345"));
    assert_eq!(mo.content, Content::text("YES please €"));
    assert!(mo.provider_message_id.starts_with("smpp_mo_"));
    let long = "z".repeat(400);
    assert!(r.smsc.inject_mo("+447700900999", "12345", &long));
    let mo = next(&mut r.inbound).await;
    assert_eq!(mo.content, Content::text(long));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.smsc.deliver_sm_resps(), 1 + 3, "every deliver_sm is answered");
}

#[tokio::test]
async fn throttling_answers_transient_and_pauses() {
    let r = rig(SmscConfig::default(), json!({"throttle_pause_ms": 300})).await;
    r.smsc.throttle_next(1);
    match r.connector.send(&request("+447700900123", "one")).await {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "smpp:0x00000058");
            assert_eq!(retry_after_ms, Some(300));
        }
        other => panic!("{other:?}"),
    }
    let started = tokio::time::Instant::now();
    accepted(r.connector.send(&request("+447700900123", "two")).await);
    assert!(started.elapsed() >= Duration::from_millis(200), "the bind paused: {:?}", started.elapsed());
    assert_eq!((r.smsc.throttled(), r.smsc.submitted_count()), (1, 1));
}

#[tokio::test]
async fn a_link_drop_mid_flight_is_transient_and_the_retry_goes_once() {
    let r = rig(SmscConfig::default(), json!({})).await;
    r.smsc.drop_on_next_submits(1);
    let req = request("+447700900123", "important");
    match r.connector.send(&req).await {
        SendResult::Transient { error, .. } => assert_eq!(error.code, "smpp:link_down"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.smsc.dropped().len(), 1);
    // While reconnecting, sends answer at once (transient); once bound again the retry goes.
    assert!(r.connector.wait_bound(WAIT).await);
    accepted(r.connector.send(&req).await);
    assert_eq!(r.smsc.submitted_count(), 1, "taken exactly once");
    assert_eq!(r.smsc.binds(), 2);
    // Dropped from the SMSC's side without a submit in flight: the bind comes back by itself.
    r.smsc.drop_links();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(r.connector.wait_bound(WAIT).await);
    accepted(r.connector.send(&request("+447700900123", "after")).await);
}

#[tokio::test]
async fn the_window_caps_submits_in_flight() {
    let config = SmscConfig { ack_delay: Duration::from_millis(30), receipts: false, ..SmscConfig::default() };
    let r = rig(config, json!({"window": 4})).await;
    let connector = std::sync::Arc::new(r.connector);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = connector.clone();
        tasks.push(tokio::spawn(async move { c.send(&request("+447700900123", &format!("m{i}"))).await }));
    }
    for t in tasks {
        accepted(t.await.unwrap());
    }
    assert_eq!(r.smsc.submitted_count(), 40);
    assert_eq!(r.smsc.max_outstanding(), 4);
}

#[tokio::test]
async fn malformed_pdus_get_generic_nack_and_the_session_survives() {
    let r = rig(SmscConfig::default(), json!({})).await;
    // An unknown command, then a deliver_sm whose body is cut short.
    let mut raw = unhex("00000010000000ff0000000000000063");
    raw.extend(unhex("00000013000000050000000000000064000000"));
    assert!(r.smsc.inject_raw(raw));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.smsc.generic_nacks(), 2);
    accepted(r.connector.send(&request("+447700900123", "still here")).await);
    assert_eq!(r.smsc.binds(), 1, "no reconnect was needed");
}

#[tokio::test]
async fn enquire_link_keeps_the_link_checked() {
    let r = rig(SmscConfig::default(), json!({"enquire_link_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(r.smsc.enquire_links() >= 2, "{}", r.smsc.enquire_links());
    assert_eq!(r.smsc.binds(), 1);
}

#[tokio::test]
async fn a_wrong_password_is_reported_by_check() {
    let smsc = FakeSmsc::start(SmscConfig::default()).await.unwrap();
    let (events, _r, _i) = ProviderEvents::channel();
    let config = SmppConfig::from_json(&smsc.account_config()).unwrap();
    let c = SmppConnector::start(ChannelAccountId::new(), config, &json!({"password": "wrong"}), events).unwrap();
    match c.check().await {
        CheckResult::Failed { code, detail } => {
            assert_eq!(code, "smpp:not_bound");
            assert!(detail.contains("0x0000000e"), "{detail}");
            assert!(!detail.contains("wrong"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(smsc.refused_binds() >= 1);
}

// End to end through the HTTP API.

on_both_backends!(smpp_send_delivered_and_mo, smpp_link_drop_and_throttle_lose_nothing);

async fn smpp_account(app: &TestApp, smsc: &FakeSmsc, extra: Value) -> String {
    let mut config = smsc.account_config();
    config["reconnect_min_ms"] = json!(50);
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let body = json!({"channel": "sms", "provider": "smpp", "name": "fake smsc", "config": config,
        "credentials": smsc.credentials(), "is_default": true});
    let a = Answer::read(app.post("/v1/channel-accounts", &body).await).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cha_"));
    id
}

async fn smpp_send_delivered_and_mo(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let smsc = FakeSmsc::start(SmscConfig::default()).await.unwrap();
    let account = smpp_account(&app, &smsc, json!({})).await;
    let sent = app.send_text("+12025550150", "Hello over SMPP").await;
    let id = sent["id"].as_str().unwrap().to_string();
    let m = app.wait_for_status(&id, &["delivered"], WAIT).await;
    let taken = smsc.submitted();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].text, "Hello over SMPP");
    assert_eq!(m["provider_message_id"], parley_channels::smpp::receipt::normalize_id(&taken[0].message_id));
    // A mobile-originated reply arrives as an inbound message.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !smsc.inject_mo("+12025550150", "ACME", "STOP") {
        assert!(tokio::time::Instant::now() < deadline, "no bound session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = app.get_json("/v1/messages?status=received").await;
        let found = list["data"].as_array().into_iter().flatten().find(|m| m["status"] == "received");
        if let Some(m) = found {
            assert_eq!(m["from"], "+12025550150");
            assert_eq!(m["content"]["text"], "STOP");
            assert_eq!(m["channel_account_id"], account);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no inbound message: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.finish().await;
}

async fn smpp_link_drop_and_throttle_lose_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let smsc = FakeSmsc::start(SmscConfig::default()).await.unwrap();
    smpp_account(&app, &smsc, json!({"throttle_pause_ms": 200})).await;
    // Wait for the bind before arming the faults, so they hit sends.
    let deadline = tokio::time::Instant::now() + WAIT;
    while smsc.sessions() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    smsc.drop_on_next_submits(2);
    smsc.throttle_next(3);
    let mut ids = Vec::new();
    for i in 0..20 {
        let sent = app.send_text("+12025550150", &format!("message {i}")).await;
        ids.push(sent["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        app.wait_for_status(id, &["delivered"], Duration::from_secs(60)).await;
    }
    let taken = smsc.submitted();
    assert_eq!(taken.len(), 20, "every message taken exactly once");
    let mut texts: Vec<_> = taken.iter().map(|t| t.text.clone()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 20, "no duplicates");
    assert_eq!(smsc.dropped().len(), 2);
    assert_eq!(smsc.throttled(), 3);
    app.finish().await;
}
