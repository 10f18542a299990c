//! The Twilio connector against the fake Twilio (`parley_testkit::fake_twilio`) over real HTTP,
//! without the rest of Parley: what goes on the wire, how answers map, and the signed status
//! callbacks the fake sends back, verified by the connector's `ingress`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use parley_channels::twilio::{EMPTY_TWIML, TwilioConnector};
use parley_channels::{AccountSpec, CheckResult, Connector, IngressError, IngressRequest, OutboundRequest, SendResult};
use parley_domain::{Channel, ChannelAccountId, Content, InboundMessage, MessageId, MessageState, Millis, Receipt};
use parley_testkit::fake_twilio::{self, FakeTwilio, magic};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FROM: &str = "+15017122661";
const WAIT: Duration = Duration::from_secs(10);

/// A local endpoint that hands every callback to the connector's `ingress`, as Parley's
/// `/hooks/twilio/{id}` does, and keeps what comes out.
#[derive(Default)]
struct Hooks {
    receipts: Mutex<Vec<Receipt>>,
    inbound: Mutex<Vec<InboundMessage>>,
    refused: Mutex<Vec<IngressError>>,
}

struct Rig {
    fake: FakeTwilio,
    connector: Arc<TwilioConnector>,
    hooks: Arc<Hooks>,
    hook_url: String,
}

async fn rig_with(config: impl FnOnce(&FakeTwilio) -> Value, credentials: impl FnOnce(&FakeTwilio) -> Value) -> Rig {
    let fake = FakeTwilio::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks/twilio/cha_test", listener.local_addr().unwrap());
    let config = config(&fake);
    let credentials = credentials(&fake);
    let spec = AccountSpec {
        id: ChannelAccountId::new(),
        channel: Channel::Sms,
        provider: "twilio",
        config: &config,
        credentials: &credentials,
        callback_url: &hook_url,
    };
    let connector = Arc::new(TwilioConnector::from_spec(spec, reqwest::Client::new()).unwrap());
    let hooks = Arc::new(Hooks::default());
    let base = hook_url.split("/hooks").next().unwrap().to_string();
    let app = axum::Router::new().fallback({
        let (connector, hooks) = (connector.clone(), hooks.clone());
        move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (connector, hooks, base) = (connector.clone(), hooks.clone(), base.clone());
            async move {
                let headers: Vec<(String, String)> =
                    headers.iter().map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string())).collect();
                let url = format!("{base}{}", uri.path_and_query().unwrap().as_str());
                let request = IngressRequest {
                    method: "POST",
                    url: &url,
                    query: uri.query().unwrap_or(""),
                    headers: &headers,
                    body: &body,
                    received_at: Millis::now(),
                };
                match connector.ingress(&request) {
                    Ok(outcome) => {
                        hooks.receipts.lock().unwrap().extend(outcome.receipts);
                        hooks.inbound.lock().unwrap().extend(outcome.inbound);
                        (axum::http::StatusCode::OK, [("content-type", outcome.reply.content_type)], outcome.reply.body)
                    }
                    Err(e) => {
                        hooks.refused.lock().unwrap().push(e);
                        (axum::http::StatusCode::UNAUTHORIZED, [("content-type", "text/plain")], Vec::new())
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Rig { fake, connector, hooks, hook_url }
}

async fn rig() -> Rig {
    rig_with(|f| f.config(FROM), |f| f.credentials()).await
}

fn text_to(to: &str, text: &str) -> OutboundRequest {
    OutboundRequest {
        message_id: MessageId::new(),
        channel_account_id: ChannelAccountId::new(),
        attempt: 1,
        channel: Channel::Sms,
        to: to.into(),
        from: None,
        content: Content::text(text),
        expires_at: Millis::now().plus_seconds(3600),
    }
}

impl Rig {
    async fn receipts_for(&self, sid: &str, count: usize) -> Vec<Receipt> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mine: Vec<Receipt> =
                self.hooks.receipts.lock().unwrap().iter().filter(|r| r.provider_message_id == sid).cloned().collect();
            if mine.len() >= count {
                return mine;
            }
            assert!(tokio::time::Instant::now() < deadline, "{count} receipts for {sid}; have {mine:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn accepted_sid(result: SendResult) -> String {
    match result {
        SendResult::Accepted { provider_message_id, part_ids } => {
            assert!(part_ids.is_empty());
            provider_message_id
        }
        other => panic!("not accepted: {other:?}"),
    }
}

#[tokio::test]
async fn a_text_goes_out_as_twilio_documents_and_comes_back_delivered() {
    let rig = rig().await;
    let sid = accepted_sid(rig.connector.send(&text_to("+12025550150", "Hello! 👍 & goodbye")).await);
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");

    let requests = rig.fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{}/Messages.json", fake_twilio::ACCOUNT_SID));
    assert_eq!(r.user.as_deref(), Some(fake_twilio::ACCOUNT_SID));
    assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(r.status, 201);
    assert_eq!(r.param("To"), Some("+12025550150"));
    assert_eq!(r.param("From"), Some(FROM));
    assert_eq!(r.param("Body"), Some("Hello! 👍 & goodbye"));
    assert_eq!(r.param("StatusCallback"), Some(rig.hook_url.as_str()));
    assert_eq!(r.param("Attempt"), Some("1"));
    let validity: i64 = r.param("ValidityPeriod").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&validity), "{validity}");
    // Only fields Twilio's OpenAPI documents.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../channels/tests/fixtures/twilio/create_message_openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for (name, _) in &r.form {
        assert!(spec["request_properties"].get(name).is_some(), "{name} is not documented");
    }

    let receipts = rig.receipts_for(&sid, 2).await;
    assert_eq!(receipts.iter().map(|r| r.state).collect::<Vec<_>>(), [MessageState::Sent, MessageState::Delivered]);
    let delivered = &receipts[1];
    assert_eq!(delivered.error, None);
    let details = delivered.details.as_ref().unwrap();
    assert_eq!(details["MessageStatus"], "delivered");
    assert_eq!(details["ApiVersion"], "2010-04-01");
    assert!(details["RawDlrDoneDate"].as_str().is_some());
    // queued, sent, delivered were all accepted by the hook; queued made no receipt.
    let callbacks = rig.fake.wait_for_callbacks(3, WAIT).await;
    assert_eq!(callbacks.iter().map(|c| c.status.as_str()).collect::<Vec<_>>(), ["queued", "sent", "delivered"]);
    assert!(callbacks.iter().all(|c| c.answered == Some(200)), "{callbacks:?}");
    assert!(rig.hooks.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn media_goes_out_as_media_url_with_the_caption_as_body() {
    let rig = rig().await;
    let mut request = text_to("+12025550150", "");
    request.content = Content::Media {
        url: Some("https://example.com/cat.jpg".into()),
        media_id: None,
        kind: None,
        caption: Some("a cat".into()),
        mime_type: None,
        filename: None,
    };
    let sid = accepted_sid(rig.connector.send(&request).await);
    assert!(sid.starts_with("MM"), "{sid}");
    let r = &rig.fake.requests()[0];
    assert_eq!(r.params("MediaUrl"), ["https://example.com/cat.jpg"]);
    assert_eq!(r.param("Body"), Some("a cat"));
}

#[tokio::test]
async fn undelivered_and_failed_callbacks_carry_the_error_code() {
    let rig = rig().await;
    let undelivered = accepted_sid(rig.connector.send(&text_to(magic::UNDELIVERED, "x")).await);
    let failed = accepted_sid(rig.connector.send(&text_to(magic::FAILED, "x")).await);
    let r = rig.receipts_for(&undelivered, 2).await;
    assert_eq!(r[1].state, MessageState::Undelivered);
    let error = r[1].error.as_ref().unwrap();
    assert_eq!(error.code, "twilio:30003");
    assert!(error.permanent);
    assert_eq!(r[1].details.as_ref().unwrap()["ErrorCode"], "30003");
    let r = rig.receipts_for(&failed, 1).await;
    assert_eq!(r[0].state, MessageState::Failed);
    assert_eq!(r[0].error.as_ref().unwrap().code, "twilio:30008");
}

#[tokio::test]
async fn refusals_map_to_permanent_and_transient_errors() {
    let rig = rig().await;
    for (to, code) in [
        (magic::INVALID_TO, "twilio:21211"),
        (magic::UNSUBSCRIBED, "twilio:21610"),
        (magic::NOT_MOBILE, "twilio:21614"),
        ("+15005550002", "twilio:21612"),
    ] {
        match rig.connector.send(&text_to(to, "x")).await {
            SendResult::Permanent { error } => {
                assert_eq!(error.code, code, "{to}");
                assert!(error.permanent);
                assert!(error.detail.contains("https://www.twilio.com/docs/errors/"), "{}", error.detail);
            }
            other => panic!("{to}: {other:?}"),
        }
    }
    // 429 with Retry-After: 1, then taken.
    match rig.connector.send(&text_to(magic::RATE_LIMITED_ONCE, "x")).await {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "twilio:20429");
            assert_eq!(retry_after_ms, Some(1000));
        }
        other => panic!("{other:?}"),
    }
    accepted_sid(rig.connector.send(&text_to(magic::RATE_LIMITED_ONCE, "x")).await);
    // 500, then taken.
    match rig.connector.send(&text_to(magic::SERVER_ERROR_ONCE, "x")).await {
        SendResult::Transient { error, retry_after_ms } => {
            assert_eq!(error.code, "twilio:20500");
            assert_eq!(retry_after_ms, None);
        }
        other => panic!("{other:?}"),
    }
    accepted_sid(rig.connector.send(&text_to(magic::SERVER_ERROR_ONCE, "x")).await);
    // A number Twilio's own validation refuses.
    match rig.connector.send(&text_to("12345", "x")).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "twilio:21211"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_credentials_are_a_permanent_20003_and_check_says_so() {
    let rig = rig_with(|f| f.config(FROM), |_| json!({"auth_token": "wrong"})).await;
    match rig.connector.send(&text_to("+12025550150", "x")).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "twilio:20003"),
        other => panic!("{other:?}"),
    }
    match rig.connector.check().await {
        CheckResult::Failed { code, .. } => assert_eq!(code, "twilio:20003"),
        other => panic!("{other:?}"),
    }
    let good = rig_with(|f| f.config(FROM), |f| f.credentials()).await;
    match good.connector.check().await {
        CheckResult::Ok { detail } => assert!(detail.contains(fake_twilio::ACCOUNT_SID), "{detail}"),
        other => panic!("{other:?}"),
    }
    let r = good.fake.requests();
    assert_eq!(r[0].method, "GET");
    assert_eq!(r[0].path, format!("/2010-04-01/Accounts/{}.json", fake_twilio::ACCOUNT_SID));
}

#[tokio::test]
async fn api_keys_authenticate_sends_and_messaging_services_pick_the_sender() {
    const KEY: &str = "SK0123456789abcdef0123456789abcdef";
    const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
    let rig = rig_with(
        |f| json!({"account_sid": f.account_sid, "messaging_service_sid": SERVICE, "base_url": f.base_url}),
        |f| json!({"auth_token": f.auth_token, "api_key_sid": KEY, "api_key_secret": "key-secret"}),
    )
    .await;
    match rig.connector.send(&text_to("+12025550150", "x")).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "twilio:20003", "the key is not known yet"),
        other => panic!("{other:?}"),
    }
    rig.fake.add_api_key(KEY, "key-secret");
    let sid = accepted_sid(rig.connector.send(&text_to("+12025550150", "x")).await);
    let r = rig.fake.requests_to("+12025550150");
    let last = r.last().unwrap();
    assert_eq!(last.user.as_deref(), Some(KEY));
    assert_eq!(last.param("MessagingServiceSid"), Some(SERVICE));
    assert_eq!(last.param("From"), None);
    // Callbacks are still signed with the auth token, and verified.
    let receipts = rig.receipts_for(&sid, 2).await;
    assert_eq!(receipts[1].state, MessageState::Delivered);
    assert_eq!(receipts[1].details.as_ref().unwrap()["MessagingServiceSid"], SERVICE);
}

#[tokio::test]
async fn inbound_sms_from_the_fake_is_verified_and_read() {
    let rig = rig().await;
    let (sid, response) = rig.fake.send_inbound_sms(&rig.hook_url, "+12025550150", FROM, "Hi there", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/xml");
    assert_eq!(response.text().await.unwrap(), EMPTY_TWIML);
    let inbound = rig.hooks.inbound.lock().unwrap().clone();
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].provider_message_id, sid);
    assert_eq!(inbound[0].from, "+12025550150");
    assert_eq!(inbound[0].to.as_deref(), Some(FROM));
    assert_eq!(inbound[0].content, Content::text("Hi there"));

    // Signed with another token: refused.
    let (_, params) = fake_twilio::inbound_sms_params(fake_twilio::ACCOUNT_SID, "+12025550150", FROM, "forged", &[]);
    let response = fake_twilio::post_signed(&reqwest::Client::new(), &rig.hook_url, "not-the-token", &params).await;
    assert_eq!(response.status(), 401);
    assert!(matches!(rig.hooks.refused.lock().unwrap()[0], IngressError::BadSignature(_)));
    assert_eq!(rig.hooks.inbound.lock().unwrap().len(), 1);
}
