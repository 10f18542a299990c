//! Unit tests of the RBM connector: JWT, request bodies against the docs-derived examples of
//! `tests/fixtures/rbm/rbm_examples.json`, error mapping, webhook verification and parsing.

use super::auth::{ServiceAccountKey, TokenSource};
use super::*;
use crate::{IngressReply, IngressRequest};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use parley_domain::{
    CardMedia, CardOrientation, CardWidth, Content, MediaHeight, MediaKind, MessageState, RichCard, Suggestion,
};
use serde_json::{Value, json};

const EXAMPLES: &str = include_str!("../../tests/fixtures/rbm/rbm_examples.json");
/// A throwaway RSA key made for these tests (also `crates/testkit/keys/rbm_test_key.pem`).
const TEST_KEY: &str = include_str!("../../tests/fixtures/rbm/test_service_account_key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/rbm/test_service_account_key.pub.pem");
const CLIENT_TOKEN: &str = "SJENCPGJESMGUFPY";
const AGENT: &str = "my-agent@rbm.goog";

fn examples() -> Value {
    serde_json::from_str(EXAMPLES).unwrap()
}

fn service_account() -> Value {
    json!({
        "type": "service_account",
        "project_id": "rbm-test",
        "private_key_id": "kid-123",
        "private_key": TEST_KEY,
        "client_email": "parley@rbm-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
}

fn credentials() -> Value {
    json!({"service_account": service_account(), "client_token": CLIENT_TOKEN})
}

fn connector(config: Value) -> RbmConnector {
    RbmConnector::new(
        ChannelAccountId::new(),
        RbmConfig::from_json(&config).unwrap(),
        RbmCredentials::from_json(&credentials()).unwrap(),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn token_source() -> TokenSource {
    let key: ServiceAccountKey = serde_json::from_value(service_account()).unwrap();
    let private = auth::parse_private_key(&key.private_key).unwrap();
    TokenSource::new(&key, private, "https://oauth2.example.test/token", reqwest::Client::new())
}

#[test]
fn jwt_has_the_claims_and_verifies_with_the_public_key() {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let jwt = token_source().assertion(1_700_000_000);
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"}));
    assert_eq!(
        claims,
        json!({
            "iss": "parley@rbm-test.iam.gserviceaccount.com",
            "scope": "https://www.googleapis.com/auth/rcsbusinessmessaging",
            "aud": "https://oauth2.example.test/token",
            "iat": 1_700_000_000u64,
            "exp": 1_700_003_600u64,
        })
    );
    let public = rsa::RsaPublicKey::from_public_key_pem(TEST_PUBLIC_KEY).unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(public);
    let signature = rsa::pkcs1v15::Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    verifier.verify(signed.as_bytes(), &signature).unwrap();
    assert!(verifier.verify(b"tampered", &signature).is_err());
}

#[test]
fn config_defaults_and_named_errors() {
    let c = RbmConfig::from_json(&json!({"agent_id": AGENT})).unwrap();
    assert_eq!(c.base_url, RbmConfig::DEFAULT_BASE_URL);
    assert_eq!(c.token_url, RbmConfig::DEFAULT_TOKEN_URL);
    assert_eq!(c.capability_cache_seconds, 60);
    let trimmed = RbmConfig::from_json(&json!({"agent_id": AGENT, "base_url": "http://127.0.0.1:9/"})).unwrap();
    assert_eq!(trimmed.base_url, "http://127.0.0.1:9");
    let field = |v: Value| match RbmConfig::from_json(&v) {
        Err(ConfigError::InvalidField { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(json!({})), "(config)");
    assert_eq!(field(json!({"agent_id": AGENT, "agentId": "x"})), "agentId");
    assert_eq!(field(json!({"agent_id": AGENT, "base_url": "ftp://x"})), "base_url");
    assert_eq!(field(json!({"agent_id": ""})), "agent_id");
    assert_eq!(field(json!({"agent_id": AGENT, "capability_cache_seconds": -1})), "capability_cache_seconds");
}

#[test]
fn credential_errors_name_the_field_and_never_quote_secrets() {
    let err = |v: Value| match RbmCredentials::from_json(&v) {
        Err(ConfigError::InvalidField { field, reason, .. }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let (field, reason) = err(json!({"service_account": service_account(), "client_token": 12345}));
    assert_eq!(field, "credentials.client_token");
    assert!(!reason.contains("12345"), "{reason}");
    let (field, _) = err(json!({"service_account": service_account()}));
    assert_eq!(field, "credentials");
    let (field, _) = err(Value::Null);
    assert_eq!(field, "credentials");
    let mut sa = service_account();
    sa["private_key"] = json!("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n");
    let built = RbmConnector::new(
        ChannelAccountId::new(),
        RbmConfig::from_json(&json!({"agent_id": AGENT})).unwrap(),
        RbmCredentials::from_json(&json!({"service_account": sa, "client_token": "t"})).unwrap(),
        reqwest::Client::new(),
    );
    match built {
        Err(ConfigError::InvalidField { field, reason, .. }) => {
            assert_eq!(field, "credentials.service_account.private_key");
            assert!(!reason.contains("c2VjcmV0"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let creds = RbmCredentials::from_json(&credentials()).unwrap();
    let debug = format!("{creds:?}");
    assert!(!debug.contains(CLIENT_TOKEN) && !debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn build_makes_an_rbm_connector_for_rcs_only() {
    let (events, _r, _i) = crate::ProviderEvents::channel();
    let ctx = crate::ConnectorContext {
        events,
        ledger: std::sync::Arc::new(crate::SubmissionLedger::in_memory()),
        http: reqwest::Client::new(),
    };
    let config = json!({"agent_id": AGENT});
    let creds = credentials();
    let spec = |channel| crate::AccountSpec {
        id: ChannelAccountId::new(),
        channel,
        provider: "rbm",
        config: &config,
        credentials: &creds,
        callback_url: "http://127.0.0.1/hooks/rbm/cha_x",
    };
    assert_eq!(crate::build(spec(Channel::Rcs), &ctx).unwrap().provider(), "rbm");
    assert!(crate::build(spec(Channel::Sms), &ctx).is_err());
    assert!(crate::PROVIDERS.contains(&"rbm"));
}

// ---- bodies ----------------------------------------------------------------------------------

fn reply(text: &str, postback: &str) -> Suggestion {
    Suggestion::Reply { text: text.into(), postback_data: postback.into() }
}

#[test]
fn text_body_is_the_example() {
    let ex = examples();
    let body = body::agent_message(&Content::text("Hello World"), None).unwrap();
    assert_eq!(body, ex["send_requests"]["text"]);
}

#[test]
fn text_with_suggestions_and_ttl_is_the_example() {
    let ex = &examples()["send_requests"]["text_with_suggestions_and_ttl"];
    let content = Content::Text {
        text: "Your order shipped".into(),
        suggestions: vec![
            reply("Track", "track_order"),
            Suggestion::Dial {
                text: "Call us".into(),
                postback_data: "call".into(),
                phone_number: "+15551234567".into(),
            },
        ],
    };
    let body = body::agent_message(&content, Some(3600)).unwrap();
    assert_eq!(body["contentMessage"], ex["contentMessage"]);
    assert_eq!(body["ttl"], ex["ttl"]);
    // messageTrafficType is left to Google's default.
    assert!(body.get("messageTrafficType").is_none());
}

#[test]
fn rich_card_body_is_the_example() {
    let ex = &examples()["send_requests"]["rich_card"];
    let card = RichCard {
        title: Some("Hello, world!".into()),
        description: Some("RBM is awesome!".into()),
        media: None,
        suggestions: vec![
            reply("Suggestion #1", "suggestion_1"),
            reply("Suggestion #2", "suggestion_2"),
            Suggestion::ViewLocation {
                text: "View map".into(),
                postback_data: "postback_data_1234".into(),
                latitude: 37.4220188,
                longitude: -122.0844786,
                label: Some("Googleplex".into()),
            },
        ],
        orientation: Some(CardOrientation::Vertical),
    };
    let body = body::agent_message(&Content::Card { card, suggestions: vec![] }, None).unwrap();
    assert_eq!(&body, ex);
}

#[test]
fn carousel_media_and_every_action_have_rbm_shapes() {
    let card = |title: &str| RichCard {
        title: Some(title.into()),
        description: None,
        media: Some(CardMedia {
            url: "https://example.com/a.mp4".into(),
            height: MediaHeight::Tall,
            thumbnail_url: Some("https://example.com/a.jpg".into()),
        }),
        suggestions: vec![],
        orientation: None,
    };
    let suggestions = vec![
        Suggestion::OpenUrl { text: "Open".into(), postback_data: "o".into(), url: "https://example.com".into() },
        Suggestion::ShareLocation { text: "Where?".into(), postback_data: "s".into() },
        Suggestion::CreateCalendarEvent {
            text: "Save".into(),
            postback_data: "c".into(),
            start_time: "2026-01-01T10:00:00Z".into(),
            end_time: "2026-01-01T11:00:00Z".into(),
            title: "Meeting".into(),
            description: Some("Bring cake".into()),
        },
    ];
    let content = Content::Carousel { width: CardWidth::Medium, cards: vec![card("A"), card("B")], suggestions };
    let body = body::agent_message(&content, None).unwrap();
    assert_eq!(
        body,
        json!({"contentMessage": {
            "richCard": {"carouselCard": {"cardWidth": "MEDIUM", "cardContents": [
                {"title": "A", "media": {"height": "TALL", "contentInfo": {"fileUrl": "https://example.com/a.mp4", "thumbnailUrl": "https://example.com/a.jpg"}}},
                {"title": "B", "media": {"height": "TALL", "contentInfo": {"fileUrl": "https://example.com/a.mp4", "thumbnailUrl": "https://example.com/a.jpg"}}}
            ]}},
            "suggestions": [
                {"action": {"text": "Open", "postbackData": "o", "openUrlAction": {"url": "https://example.com"}}},
                {"action": {"text": "Where?", "postbackData": "s", "shareLocationAction": {}}},
                {"action": {"text": "Save", "postbackData": "c", "createCalendarEventAction": {
                    "startTime": "2026-01-01T10:00:00Z", "endTime": "2026-01-01T11:00:00Z", "title": "Meeting", "description": "Bring cake"}}}
            ]
        }})
    );
    let media = |url: Option<&str>, id: Option<&str>, caption: Option<&str>, mime: Option<&str>| Content::Media {
        url: url.map(Into::into),
        media_id: id.map(Into::into),
        kind: None,
        caption: caption.map(Into::into),
        mime_type: mime.map(Into::into),
        filename: None,
    };
    assert_eq!(
        body::agent_message(&media(Some("https://example.com/p.png"), None, None, None), None).unwrap(),
        json!({"contentMessage": {"contentInfo": {"fileUrl": "https://example.com/p.png"}}})
    );
    assert_eq!(
        body::agent_message(&media(None, Some("files/abc"), None, None), None).unwrap(),
        json!({"contentMessage": {"fileName": "files/abc"}})
    );
    assert_eq!(
        body::agent_message(&media(Some("https://example.com/p.png"), None, Some("Look"), None), None).unwrap(),
        json!({"contentMessage": {"richCard": {"standaloneCard": {"cardOrientation": "VERTICAL", "cardContent": {
            "description": "Look", "media": {"height": "MEDIUM", "contentInfo": {"fileUrl": "https://example.com/p.png"}}}}}}})
    );
    let refused = body::agent_message(&media(Some("https://example.com/x.pdf"), None, Some("Doc"), None), None);
    assert_eq!(refused.unwrap_err().code, "rbm:unsupported_content");
    let mut horizontal = card("H");
    horizontal.orientation = Some(CardOrientation::Horizontal);
    let b = body::agent_message(&Content::Card { card: horizontal, suggestions: vec![] }, None).unwrap();
    assert_eq!(b["contentMessage"]["richCard"]["standaloneCard"]["cardOrientation"], "HORIZONTAL");
    assert_eq!(b["contentMessage"]["richCard"]["standaloneCard"]["thumbnailImageAlignment"], "LEFT");
}

#[test]
fn unsendable_content_is_refused_before_any_request() {
    let too_long = Content::text("x".repeat(body::MAX_RBM_TEXT_CHARS + 1));
    assert_eq!(body::agent_message(&too_long, None).unwrap_err().code, "rbm:text_too_long");
    let reaction = Content::Reaction { message_id: "m".into(), emoji: "👍".into() };
    assert_eq!(body::agent_message(&reaction, None).unwrap_err().code, "rbm:unsupported_content");
    let many = Content::Text { text: "hi".into(), suggestions: (0..12).map(|i| reply("r", &i.to_string())).collect() };
    assert_eq!(body::agent_message(&many, None).unwrap_err().code, "rbm:unsupported_content");
}

#[test]
fn ttl_is_whole_seconds_left_rounded_up() {
    assert_eq!(body::ttl_seconds(10_000, 0), Some(10));
    assert_eq!(body::ttl_seconds(10_001, 0), Some(11));
    assert_eq!(body::ttl_seconds(0, 5_000), Some(1));
    assert_eq!(body::ttl_seconds(i64::MAX, 0), None);
}

#[test]
fn rbm_message_id_is_the_parley_uuid() {
    let id = parley_domain::MessageId::parse("msg_0190a1b2c3d4e5f60718293a4b5c6d7e").unwrap();
    assert_eq!(RbmConnector::rbm_message_id(&id), "0190a1b2-c3d4-e5f6-0718-293a4b5c6d7e");
}

// ---- errors ----------------------------------------------------------------------------------

fn outcome(status: u16, body: &Value, retry_after: Option<&str>) -> SendResult {
    ApiError::from_answer(status, &body.to_string(), retry_after).send_result()
}

#[test]
fn errors_map_by_google_status() {
    let ex = examples();
    match outcome(404, &ex["responses"]["not_rcs_reachable_404"], None) {
        SendResult::Permanent { error } => assert_eq!(error.code, "rcs_unreachable"),
        other => panic!("{other:?}"),
    }
    match outcome(400, &ex["responses"]["unsupported_feature_400"], None) {
        SendResult::Permanent { error } => {
            assert_eq!(error.code, "rbm:INVALID_ARGUMENT");
            assert!(error.permanent);
        }
        other => panic!("{other:?}"),
    }
    let exhausted = json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}});
    assert_eq!(
        outcome(429, &exhausted, Some("2")),
        SendResult::Transient {
            error: ErrorInfo {
                code: "rbm:RESOURCE_EXHAUSTED".into(),
                detail: "RBM answered 429 RESOURCE_EXHAUSTED: Quota exceeded".into(),
                permanent: false
            },
            retry_after_ms: Some(2000),
        }
    );
    let unavailable = json!({"error": {"code": 503, "message": "try later", "status": "UNAVAILABLE"}});
    assert!(matches!(outcome(503, &unavailable, None),
        SendResult::Transient { error, retry_after_ms: None } if error.code == "rbm:UNAVAILABLE"));
    // No google.rpc.Status body: the HTTP status decides.
    assert!(matches!(outcome(502, &json!("<html>"), None),
        SendResult::Transient { error, .. } if error.code == "rbm:INTERNAL"));
    assert!(matches!(outcome(404, &json!(null), None),
        SendResult::Permanent { error } if error.code == "rcs_unreachable"));
    let denied = json!({"error": {"code": 403, "message": "not a tester", "status": "PERMISSION_DENIED"}});
    assert!(matches!(outcome(403, &denied, None),
        SendResult::Permanent { error } if error.code == "rbm:PERMISSION_DENIED"));
    // The status wins over the message text.
    let odd = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "UNAVAILABLE"}});
    assert!(matches!(outcome(404, &odd, None), SendResult::Transient { .. }));
}

// ---- ingress ---------------------------------------------------------------------------------

fn request<'a>(body: &'a [u8], headers: &'a [(String, String)]) -> IngressRequest<'a> {
    IngressRequest {
        method: "POST",
        url: "https://parley.example/hooks/rbm/cha_x",
        query: "",
        headers,
        body,
        received_at: Millis(1_000),
    }
}

/// A Pub/Sub push of `data`, signed with `token`.
fn push(data: &Value, token: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let raw = data.to_string();
    let body = json!({
        "message": {"data": STANDARD.encode(&raw), "messageId": "1234", "publishTime": "2025-01-01T12:00:01.6Z", "attributes": {}},
        "subscription": "projects/rbm-my-agent/subscriptions/rbm-agent-subscription"
    });
    let sig = ingress::signature(token.as_bytes(), raw.as_bytes());
    (body.to_string().into_bytes(), vec![("x-goog-signature".to_string(), sig)])
}

#[test]
fn the_example_envelope_verifies_and_is_a_delivered_receipt() {
    let ex = &examples()["push_envelope_example"];
    let c = connector(json!({"agent_id": AGENT}));
    let body = ex["body"].to_string().into_bytes();
    let headers =
        vec![("x-goog-signature".to_string(), ex["headers"]["X-Goog-Signature"].as_str().unwrap().to_string())];
    let out = c.ingress(&request(&body, &headers)).unwrap();
    assert_eq!(out.reply, IngressReply::ok());
    assert_eq!(out.receipts.len(), 1);
    assert_eq!(out.receipts[0].provider_message_id, "4d4f1a3e-0000-4000-8000-000000000001");
    assert_eq!(out.receipts[0].state, MessageState::Delivered);
    assert_eq!(out.receipts[0].occurred_at, Millis::parse_rfc3339("2025-01-01T12:00:01.5Z").unwrap());
    assert_eq!(out.receipts[0].channel_account_id, c.account_id());
    // Our signer agrees with the example's.
    let data = STANDARD.decode(ex["body"]["message"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(ingress::signature(CLIENT_TOKEN.as_bytes(), &data), ex["headers"]["X-Goog-Signature"]);
}

#[test]
fn bad_missing_or_foreign_signatures_are_refused() {
    let c = connector(json!({"agent_id": AGENT}));
    let data = &examples()["webhook_user_messages"]["text"];
    let (body, _) = push(data, CLIENT_TOKEN);
    assert!(matches!(c.ingress(&request(&body, &[])), Err(IngressError::BadSignature(_))));
    let (_, wrong) = push(data, "another-token");
    assert!(matches!(c.ingress(&request(&body, &wrong)), Err(IngressError::BadSignature(_))));
    let garbage = vec![("x-goog-signature".to_string(), "not base64!".to_string())];
    assert!(matches!(c.ingress(&request(&body, &garbage)), Err(IngressError::BadSignature(_))));
    // A valid signature over other data.
    let (_, other_sig) = push(&json!({"text": "x"}), CLIENT_TOKEN);
    assert!(matches!(c.ingress(&request(&body, &other_sig)), Err(IngressError::BadSignature(_))));
    assert!(matches!(c.ingress(&request(b"not json", &[])), Err(IngressError::Malformed(_))));
    let mut get = request(&body, &[]);
    get.method = "GET";
    assert!(matches!(c.ingress(&get), Err(IngressError::NotSupported)));
}

#[test]
fn registration_handshake_echoes_the_secret_for_the_right_token() {
    let ex = &examples()["webhook_registration_handshake"];
    let c = connector(json!({"agent_id": AGENT}));
    let body = ex["request_body"].to_string().into_bytes();
    let out = c.ingress(&request(&body, &[])).unwrap();
    assert_eq!(out.reply, IngressReply::text("1234567890"));
    assert!(out.receipts.is_empty() && out.inbound.is_empty());
    let wrong = json!({"clientToken": "SJENCPGJESMGUFPZ", "secret": "1234567890"}).to_string().into_bytes();
    assert!(matches!(c.ingress(&request(&wrong, &[])), Err(IngressError::Forbidden(_))));
    let not_string = json!({"clientToken": 5, "secret": "1"}).to_string().into_bytes();
    assert!(matches!(c.ingress(&request(&not_string, &[])), Err(IngressError::Forbidden(_))));
}

#[test]
fn every_example_event_parses() {
    let ex = examples();
    let c = connector(json!({"agent_id": AGENT}));
    let run = |data: &Value| {
        let (body, headers) = push(data, CLIENT_TOKEN);
        c.ingress(&request(&body, &headers)).unwrap()
    };
    let events = &ex["webhook_user_events"];
    let id = "4d4f1a3e-0000-4000-8000-000000000001";
    let out = run(&events["DELIVERED"]);
    assert_eq!((out.receipts[0].provider_message_id.as_str(), out.receipts[0].state), (id, MessageState::Delivered));
    let out = run(&events["READ"]);
    assert_eq!((out.receipts[0].provider_message_id.as_str(), out.receipts[0].state), (id, MessageState::Read));
    assert_eq!(out.receipts[0].details, Some(json!({"rbm_event": "READ", "event_id": "MxYyYyYy"})));
    let out = run(&events["IS_TYPING"]);
    assert!(out.receipts.is_empty() && out.inbound.is_empty());
    assert_eq!(out.reply, IngressReply::ok());
    let out = run(&events["server_TTL_EXPIRATION_REVOKED"]);
    assert_eq!(out.receipts[0].state, MessageState::Undelivered);
    assert_eq!(out.receipts[0].error.as_ref().unwrap().code, "rbm:TTL_EXPIRATION_REVOKED");
    let out = run(&events["server_TTL_EXPIRATION_REVOKE_FAILED"]);
    assert_eq!(out.receipts[0].state, MessageState::Sent);
    assert!(out.receipts[0].error.is_none());
    assert_eq!(out.receipts[0].details.as_ref().unwrap()["rbm_event"]["eventType"], "TTL_EXPIRATION_REVOKE_FAILED");

    let messages = &ex["webhook_user_messages"];
    let one = |data: &Value| {
        let out = run(data);
        assert!(out.receipts.is_empty());
        assert_eq!(out.inbound.len(), 1, "{data}");
        let m = out.inbound.into_iter().next().unwrap();
        assert_eq!(m.from, "+12223334444");
        assert_eq!(m.provider_message_id, data["messageId"].as_str().unwrap());
        assert_eq!(m.received_at, Millis::parse_rfc3339(data["sendTime"].as_str().unwrap()).unwrap());
        m.content
    };
    assert_eq!(one(&messages["text"]), Content::text("Hi"));
    assert_eq!(
        one(&messages["suggestionResponse"]),
        Content::Reply { text: "Suggestion #1".into(), payload: Some("suggestion_1".into()) }
    );
    assert_eq!(
        one(&messages["location"]),
        Content::Location { latitude: 37.422, longitude: -122.084, name: None, address: None }
    );
    assert_eq!(
        one(&messages["userFile"]),
        Content::Media {
            url: Some(messages["userFile"]["userFile"]["payload"]["fileUri"].as_str().unwrap().into()),
            media_id: None,
            kind: Some(MediaKind::Image),
            caption: None,
            mime_type: Some("image/gif".into()),
            filename: Some("4_animated.gif".into()),
        }
    );
    // Every webhook example of the file was covered.
    assert_eq!(events.as_object().unwrap().len(), 5);
    assert_eq!(messages.as_object().unwrap().len(), 4);
}

#[test]
fn unknown_shapes_are_kept_raw_and_other_agents_ignored() {
    let c = connector(json!({"agent_id": AGENT}));
    let run = |data: &Value| {
        let (body, headers) = push(data, CLIENT_TOKEN);
        c.ingress(&request(&body, &headers)).unwrap()
    };
    let odd = json!({"senderPhoneNumber": "+12223334444", "messageId": "MsX", "agentId": AGENT, "sticker": {"id": 1}});
    let out = run(&odd);
    assert_eq!(out.inbound[0].content, Content::Other { kind: "rbm_message".into(), raw: odd.clone() });
    assert_eq!(out.inbound[0].received_at, Millis(1_000));
    let event =
        json!({"senderPhoneNumber": "+12223334444", "eventType": "NEW_THING", "eventId": "E1", "agentId": AGENT});
    let out = run(&event);
    assert_eq!(out.inbound[0].provider_message_id, "E1");
    assert!(matches!(&out.inbound[0].content, Content::Other { kind, .. } if kind == "rbm_event:NEW_THING"));
    let foreign = json!({"senderPhoneNumber": "+1", "messageId": "M", "agentId": "other@rbm.goog", "text": "hi"});
    let out = run(&foreign);
    assert!(out.inbound.is_empty() && out.receipts.is_empty());
}
