//! The `rbm` connector against the fake RBM API over real HTTP: OAuth2 (JWT verified by the
//! fake, token cached, refreshed once on 401), sends and their error mapping, idempotent
//! `messageId`, the capability check and its cache, and `check()`.

use parley_channels::rbm::{Capabilities, RbmConnector};
use parley_channels::{
    AccountSpec, CheckResult, Connector, ConnectorContext, OutboundRequest, ProviderEvents, SendResult,
    SubmissionLedger,
};
use parley_domain::{Channel, ChannelAccountId, Content, MessageId, Millis, RichCard, Suggestion};
use parley_testkit::fake_rbm::{self, FakeRbm, magic};
use serde_json::{Value, json};
use std::sync::Arc;

fn connector_with(fake: &FakeRbm, config: Value, credentials: Value) -> Arc<dyn Connector> {
    let (events, _r, _i) = ProviderEvents::channel();
    let ctx =
        ConnectorContext { events, ledger: Arc::new(SubmissionLedger::in_memory()), http: reqwest::Client::new() };
    let spec = AccountSpec {
        id: ChannelAccountId::new(),
        channel: Channel::Rcs,
        provider: "rbm",
        config: &config,
        credentials: &credentials,
        callback_url: &format!("{}/unused", fake.base_url),
    };
    parley_channels::build(spec, &ctx).unwrap()
}

fn connector(fake: &FakeRbm) -> Arc<dyn Connector> {
    connector_with(fake, fake.config_json(), fake.credentials_json(fake_rbm::CLIENT_TOKEN))
}

fn rbm(fake: &FakeRbm) -> RbmConnector {
    let (events, _r, _i) = ProviderEvents::channel();
    let ctx =
        ConnectorContext { events, ledger: Arc::new(SubmissionLedger::in_memory()), http: reqwest::Client::new() };
    let config = fake.config_json();
    let credentials = fake.credentials_json(fake_rbm::CLIENT_TOKEN);
    let spec = AccountSpec {
        id: ChannelAccountId::new(),
        channel: Channel::Rcs,
        provider: "rbm",
        config: &config,
        credentials: &credentials,
        callback_url: "",
    };
    RbmConnector::from_spec(&spec, &ctx).unwrap()
}

fn request(to: &str, content: Content, attempt: i32) -> OutboundRequest {
    OutboundRequest {
        message_id: MessageId::new(),
        channel_account_id: ChannelAccountId::new(),
        attempt,
        channel: Channel::Rcs,
        to: to.into(),
        from: None,
        content,
        expires_at: Millis::now().plus_seconds(600),
    }
}

const TO: &str = "+12025550150";

#[tokio::test]
async fn sends_text_and_a_card_with_one_cached_token() {
    let fake = FakeRbm::start().await;
    let c = connector(&fake);
    let text = request(TO, Content::text("Hello"), 1);
    let expected_id = text.message_id.uuid().hyphenated().to_string();
    assert_eq!(c.send(&text).await, SendResult::accepted(expected_id.clone()));
    let card = Content::Card {
        card: RichCard {
            title: Some("Order".into()),
            description: Some("Shipped".into()),
            media: None,
            suggestions: vec![Suggestion::Reply { text: "Track".into(), postback_data: "track".into() }],
            orientation: None,
        },
        suggestions: vec![],
    };
    assert!(matches!(c.send(&request(TO, card, 1)).await, SendResult::Accepted { .. }));
    assert_eq!(fake.token_requests(), 1, "the token is cached");
    let claims = &fake.assertions()[0];
    assert_eq!(claims["iss"], fake_rbm::CLIENT_EMAIL);
    assert_eq!(claims["aud"], fake.token_url.as_str());
    let sent = fake.accepted_messages();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].phone, TO);
    assert_eq!(sent[0].query["messageId"], expected_id);
    assert_eq!(sent[0].query["agentId"], fake_rbm::AGENT_ID);
    assert_eq!(sent[0].body["contentMessage"], json!({"text": "Hello"}));
    let ttl = sent[0].body["ttl"].as_str().unwrap();
    let secs: i64 = ttl.strip_suffix('s').unwrap().parse().unwrap();
    assert!((590..=600).contains(&secs), "{ttl}");
    assert_eq!(sent[1].body["contentMessage"]["richCard"]["standaloneCard"]["cardContent"]["title"], "Order");
}

#[tokio::test]
async fn a_repeated_message_id_counts_as_accepted() {
    let fake = FakeRbm::start().await;
    let c = connector(&fake);
    let r = request(TO, Content::text("once"), 1);
    let first = c.send(&r).await;
    let again = c.send(&OutboundRequest { attempt: 2, ..r.clone() }).await;
    assert_eq!(first, again);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(fake.accepted_messages().len(), 1, "the phone gets it once");
}

#[tokio::test]
async fn errors_map_to_send_results() {
    let fake = FakeRbm::start().await;
    let c = connector(&fake);
    match c.send(&request(magic::UNREACHABLE, Content::text("x"), 1)).await {
        SendResult::Permanent { error } => {
            assert_eq!(error.code, "rcs_unreachable");
            assert!(error.permanent);
        }
        other => panic!("{other:?}"),
    }
    match c.send(&request(magic::UNSUPPORTED, Content::text("x"), 1)).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "rbm:INVALID_ARGUMENT"),
        other => panic!("{other:?}"),
    }
    let limited = request(magic::RATE_LIMITED, Content::text("x"), 1);
    match c.send(&limited).await {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "rbm:RESOURCE_EXHAUSTED");
            assert_eq!(retry_after_ms, Some(1000));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.send(&OutboundRequest { attempt: 2, ..limited }).await, SendResult::Accepted { .. }));
    match c.send(&request(magic::UNAVAILABLE, Content::text("x"), 1)).await {
        SendResult::Transient { error, retry_after_ms: None } => assert_eq!(error.code, "rbm:UNAVAILABLE"),
        other => panic!("{other:?}"),
    }
    // Refused before any request: not E.164, or content RBM cannot carry.
    let before = fake.requests().len();
    assert!(matches!(c.send(&request("12025550150", Content::text("x"), 1)).await, SendResult::Permanent { .. }));
    let reaction = Content::Reaction { message_id: "m".into(), emoji: "👍".into() };
    match c.send(&request(TO, reaction, 1)).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "rbm:unsupported_content"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn a_401_fetches_a_new_token_once() {
    let fake = FakeRbm::start().await;
    let c = connector(&fake);
    assert!(matches!(c.send(&request(TO, Content::text("a"), 1)).await, SendResult::Accepted { .. }));
    fake.revoke_tokens();
    assert!(matches!(c.send(&request(TO, Content::text("b"), 1)).await, SendResult::Accepted { .. }));
    assert_eq!(fake.token_requests(), 2);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
}

#[tokio::test]
async fn short_lived_tokens_are_not_reused_past_their_expiry_margin() {
    let fake = FakeRbm::start().await;
    fake.set_token_lifetime(30);
    let c = connector(&fake);
    for text in ["a", "b"] {
        assert!(matches!(c.send(&request(TO, Content::text(text), 1)).await, SendResult::Accepted { .. }));
    }
    assert_eq!(fake.token_requests(), 2, "a token within a minute of expiry is replaced");
}

#[tokio::test]
async fn capabilities_are_checked_and_cached() {
    let fake = FakeRbm::start().await;
    let c = rbm(&fake);
    match c.capabilities(TO).await.unwrap() {
        Capabilities::Reachable { features } => assert!(features.iter().any(|f| f == "RICHCARD_CAROUSEL")),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.capabilities(TO).await.unwrap(), c.capabilities(TO).await.unwrap());
    assert_eq!(c.capabilities(magic::UNREACHABLE).await.unwrap(), Capabilities::Unreachable);
    assert_eq!(c.capabilities(magic::UNREACHABLE).await.unwrap(), Capabilities::Unreachable);
    let asked: Vec<String> =
        fake.requests().iter().filter(|r| r.kind == "capabilities").map(|r| r.phone.clone()).collect();
    assert_eq!(asked, [TO, magic::UNREACHABLE], "each number is asked once within the cache time");
    assert!(c.capabilities("not a number").await.is_err());
}

#[tokio::test]
async fn check_fetches_a_token_and_reports_a_refused_key() {
    let fake = FakeRbm::start().await;
    assert!(matches!(connector(&fake).check().await, CheckResult::Ok { .. }));
    let mut creds = fake.credentials_json("t");
    creds["service_account"]["client_email"] = json!("someone-else@example.iam.gserviceaccount.com");
    match connector_with(&fake, fake.config_json(), creds).check().await {
        CheckResult::Failed { code, detail } => {
            assert_eq!(code, "rbm:auth_failed");
            assert!(detail.contains("invalid_grant"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let mut creds = fake.credentials_json("t");
    creds["service_account"]["client_email"] = json!("someone-else@example.iam.gserviceaccount.com");
    match connector_with(&fake, fake.config_json(), creds).send(&request(TO, Content::text("x"), 1)).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "rbm:auth_failed"),
        other => panic!("{other:?}"),
    }
    assert!(fake.accepted_messages().is_empty());
    // Nobody listening: transient, not a refusal.
    let mut config = fake.config_json();
    config["token_url"] = json!("http://127.0.0.1:9/token");
    match connector_with(&fake, config, fake.credentials_json("t")).check().await {
        CheckResult::Failed { code, .. } => assert_eq!(code, "rbm:auth_unavailable"),
        other => panic!("{other:?}"),
    }
}
