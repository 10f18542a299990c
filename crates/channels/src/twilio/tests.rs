//! The Twilio connector against the fixtures in `tests/fixtures/twilio/` (see its README):
//! signature vectors, the OpenAPI's form fields and examples, error envelopes, callbacks.

use super::*;
use crate::{AccountSpec, ConnectorContext, ProviderEvents, SubmissionLedger};
use parley_domain::{MessageId, MessageState};
use serde_json::{Value, json};
use std::sync::Arc;

const TOKEN: &str = "12345";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const HOOK: &str = "https://parley.example/hooks/twilio/cha_test";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect(),
        Value::Array(items) => {
            items.iter().map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())).collect()
        }
        other => panic!("not params: {other}"),
    }
}

fn connector_with(channel: Channel, config: Value, credentials: Value) -> TwilioConnector {
    let spec = AccountSpec {
        id: ChannelAccountId::new(),
        channel,
        provider: PROVIDER,
        config: &config,
        credentials: &credentials,
        callback_url: HOOK,
    };
    TwilioConnector::from_spec(spec, reqwest::Client::new()).unwrap()
}

fn connector() -> TwilioConnector {
    connector_with(Channel::Sms, json!({"account_sid": ACCOUNT, "from": "+15017122661"}), json!({"auth_token": TOKEN}))
}

fn outbound(to: &str, content: Content, expires_in_ms: i64, now: Millis) -> OutboundRequest {
    OutboundRequest {
        message_id: MessageId::new(),
        channel_account_id: ChannelAccountId::new(),
        attempt: 1,
        channel: Channel::Sms,
        to: to.into(),
        from: None,
        content,
        expires_at: now.plus_millis(expires_in_ms),
    }
}

// ---- signatures -------------------------------------------------------------------------------

#[test]
fn every_signature_vector_of_the_fixtures_passes() {
    let examples = fixture("twilio_examples.json");
    let v = &examples["signature"];
    let token = v["auth_token"].as_str().unwrap();
    assert_eq!(token, TOKEN);
    let url = v["url"].as_str().unwrap();
    let params = pairs(&v["params"]);
    let expected = v["expected_X-Twilio-Signature"].as_str().unwrap();
    assert_eq!(signature::sign(token, url, &params), expected);
    assert!(signature::verify(token, url, &params, expected));
    // The order of the parameters does not matter.
    let mut reversed = params.clone();
    reversed.reverse();
    assert!(signature::verify(token, url, &reversed, expected));

    // Repeated names: sorted by value, duplicates removed.
    let dup = pairs(&v["duplicate_params_multidict"]);
    let dup_expected = v["duplicate_expected"].as_str().unwrap();
    assert_eq!(signature::sign(token, url, &dup), dup_expected);
    assert!(signature::verify(token, url, &dup, dup_expected));

    // JSON bodies: the hash of the body.
    let body = v["json_body"].as_str().unwrap();
    assert!(signature::body_hash_matches(v["json_bodySHA256"].as_str().unwrap(), body.as_bytes()));
    assert!(!signature::body_hash_matches(v["json_bodySHA256"].as_str().unwrap(), b"{}"));

    // The same vectors with the URL's port, and the JSON body signed through its URL.
    let extra = fixture("signature_vectors_extra.json");
    for case in ["removes_port_on_https", "removes_port_on_http", "adds_port_on_https", "adds_port_on_http"] {
        let c = &extra[case];
        assert!(
            signature::verify(token, c["url"].as_str().unwrap(), &params, c["signature"].as_str().unwrap()),
            "{case}"
        );
    }
    let j = &extra["json_body"];
    assert!(signature::verify(token, j["url"].as_str().unwrap(), &[], j["signature"].as_str().unwrap()));
    assert!(signature::body_hash_matches(
        j["url"].as_str().unwrap().rsplit_once("bodySHA256=").unwrap().1,
        j["body"].as_str().unwrap().as_bytes()
    ));
}

#[test]
fn a_json_callback_signed_through_its_url_is_verified_then_refused_as_not_messaging() {
    let extra = fixture("signature_vectors_extra.json");
    let j = &extra["json_body"];
    let c = connector_with(
        Channel::Sms,
        json!({"account_sid": ACCOUNT, "from": "+15017122661"}),
        json!({"auth_token": TOKEN}),
    );
    let url = j["url"].as_str().unwrap();
    let query = url.split_once('?').unwrap().1;
    let headers = vec![("x-twilio-signature".to_string(), j["signature"].as_str().unwrap().to_string())];
    let body = j["body"].as_str().unwrap().as_bytes();
    let req = IngressRequest { method: "POST", url, query, headers: &headers, body, received_at: Millis(1) };
    assert!(matches!(c.ingress(&req), Err(IngressError::Malformed(_))));
    let tampered = IngressRequest { body: b"{\"property\": \"other\"}", ..req.clone() };
    assert!(matches!(c.ingress(&tampered), Err(IngressError::BadSignature(_))));
}

// ---- callbacks --------------------------------------------------------------------------------

fn signed(params: &[(String, String)], url: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let sig = signature::sign(TOKEN, url, params);
    let body = encode_form(&params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect::<Vec<_>>());
    (
        vec![("content-type".into(), "application/x-www-form-urlencoded".into()), ("x-twilio-signature".into(), sig)],
        body.into_bytes(),
    )
}

fn post<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> IngressRequest<'a> {
    IngressRequest { method: "POST", url: HOOK, query: "", headers, body, received_at: Millis(1_700_000_000_000) }
}

fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The fixture's status-callback form, without its notes and placeholders.
fn fixture_status_form(status: &str, error_code: Option<&str>) -> Vec<(String, String)> {
    let examples = fixture("twilio_examples.json");
    let mut form: Vec<(String, String)> = examples["status_callback_form_example"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| !k.starts_with('_') && !v.as_str().unwrap().starts_with('('))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    for (k, v) in form.iter_mut() {
        if k == "MessageStatus" || k == "SmsStatus" {
            *v = status.into();
        }
    }
    if let Some(code) = error_code {
        form.push(("ErrorCode".into(), code.into()));
    }
    form
}

#[test]
fn the_fixture_status_callback_becomes_a_delivered_receipt_with_its_details() {
    let c = connector();
    let (headers, body) = signed(&fixture_status_form("delivered", None), HOOK);
    let out = c.ingress(&post(&headers, &body)).unwrap();
    assert_eq!(out.reply.status, 200);
    assert_eq!(out.reply.content_type, "application/xml");
    assert_eq!(String::from_utf8(out.reply.body.clone()).unwrap(), EMPTY_TWIML);
    assert!(out.inbound.is_empty());
    assert_eq!(out.receipts.len(), 1);
    let r = &out.receipts[0];
    assert_eq!(r.provider_message_id, "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
    assert_eq!(r.state, MessageState::Delivered);
    assert_eq!(r.error, None);
    assert_eq!(r.occurred_at, Millis(1_700_000_000_000));
    let details = r.details.as_ref().unwrap();
    assert_eq!(details["ApiVersion"], "2010-04-01");
    assert_eq!(details["MessagingServiceSid"], "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
}

#[test]
fn every_status_maps_to_its_receipt() {
    let c = connector();
    type Case<'a> = (&'a str, Option<&'a str>, Option<MessageState>, Option<&'a str>);
    let cases: &[Case<'_>] = &[
        ("queued", None, None, None),
        ("accepted", None, None, None),
        ("scheduled", None, None, None),
        ("sending", None, None, None),
        ("sent", None, Some(MessageState::Sent), None),
        ("delivered", None, Some(MessageState::Delivered), None),
        ("read", None, Some(MessageState::Read), None),
        ("undelivered", Some("30003"), Some(MessageState::Undelivered), Some("twilio:30003")),
        ("failed", Some("30008"), Some(MessageState::Failed), Some("twilio:30008")),
        ("failed", None, Some(MessageState::Failed), Some("twilio:failed")),
        ("canceled", None, Some(MessageState::Failed), Some("twilio:canceled")),
        ("some_new_status", None, None, None),
    ];
    for (status, error_code, state, code) in cases {
        let (headers, body) = signed(&fixture_status_form(status, *error_code), HOOK);
        let out = c.ingress(&post(&headers, &body)).unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(out.receipts.first().map(|r| r.state), *state, "{status}");
        assert_eq!(out.receipts.first().and_then(|r| r.error.as_ref()).map(|e| e.code.as_str()), *code, "{status}");
        if let Some(error) = out.receipts.first().and_then(|r| r.error.as_ref()) {
            assert!(error.permanent);
            assert!(!error.detail.is_empty());
        }
        if let (Some(r), Some(ec)) = (out.receipts.first(), error_code) {
            assert_eq!(r.details.as_ref().unwrap()["ErrorCode"], *ec);
        }
        assert_eq!(String::from_utf8(out.reply.body).unwrap(), EMPTY_TWIML);
    }
}

#[test]
fn an_inbound_sms_becomes_an_inbound_message() {
    let c = connector();
    let form = p(&[
        ("ToCountry", "US"),
        ("SmsMessageSid", "SM11111111111111111111111111111111"),
        ("NumMedia", "0"),
        ("SmsSid", "SM11111111111111111111111111111111"),
        ("SmsStatus", "received"),
        ("Body", "Hello + üñíçødé & more=1"),
        ("To", "+15017122661"),
        ("NumSegments", "1"),
        ("MessageSid", "SM11111111111111111111111111111111"),
        ("AccountSid", ACCOUNT),
        ("From", "+15558675310"),
        ("ApiVersion", "2010-04-01"),
    ]);
    let (headers, body) = signed(&form, HOOK);
    let out = c.ingress(&post(&headers, &body)).unwrap();
    assert!(out.receipts.is_empty());
    assert_eq!(out.inbound.len(), 1);
    let m = &out.inbound[0];
    assert_eq!(m.provider_message_id, "SM11111111111111111111111111111111");
    assert_eq!(m.from, "+15558675310");
    assert_eq!(m.to.as_deref(), Some("+15017122661"));
    assert_eq!(m.content, Content::text("Hello + üñíçødé & more=1"));
    assert_eq!(m.received_at, Millis(1_700_000_000_000));
    assert_eq!(m.channel_account_id, c.account_id());
    assert_eq!(String::from_utf8(out.reply.body.clone()).unwrap(), EMPTY_TWIML);
}

#[test]
fn inbound_media_becomes_one_message_per_item_and_whatsapp_prefixes_are_removed() {
    let c = connector_with(
        Channel::Whatsapp,
        json!({"account_sid": ACCOUNT, "from": "whatsapp:+15017122661"}),
        json!({"auth_token": TOKEN}),
    );
    let form = p(&[
        ("MessageSid", "MM22222222222222222222222222222222"),
        ("From", "whatsapp:+15558675310"),
        ("To", "whatsapp:+15017122661"),
        ("Body", "look"),
        ("NumMedia", "2"),
        ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM2/Media/ME1"),
        ("MediaContentType0", "image/jpeg"),
        ("MediaUrl1", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM2/Media/ME2"),
        ("MediaContentType1", "video/mp4"),
    ]);
    let (headers, body) = signed(&form, HOOK);
    let out = c.ingress(&post(&headers, &body)).unwrap();
    assert_eq!(out.inbound.len(), 2);
    assert_eq!(out.inbound[0].provider_message_id, "MM22222222222222222222222222222222");
    assert_eq!(out.inbound[1].provider_message_id, "MM22222222222222222222222222222222#1");
    assert_eq!(out.inbound[0].from, "+15558675310");
    assert_eq!(out.inbound[0].to.as_deref(), Some("+15017122661"));
    match &out.inbound[0].content {
        Content::Media { url, caption, mime_type, kind, .. } => {
            assert!(url.as_deref().unwrap().ends_with("/ME1"));
            assert_eq!(caption.as_deref(), Some("look"));
            assert_eq!(mime_type.as_deref(), Some("image/jpeg"));
            assert_eq!(*kind, Some(MediaKind::Image));
        }
        other => panic!("{other:?}"),
    }
    match &out.inbound[1].content {
        Content::Media { caption, kind, .. } => {
            assert_eq!(*caption, None);
            assert_eq!(*kind, Some(MediaKind::Video));
        }
        other => panic!("{other:?}"),
    }
}

use parley_domain::MediaKind;

#[test]
fn wrong_or_missing_signatures_are_refused() {
    let c = connector();
    let form = fixture_status_form("delivered", None);
    let (headers, body) = signed(&form, HOOK);
    // Missing.
    let none: Vec<(String, String)> = vec![];
    assert!(matches!(c.ingress(&post(&none, &body)), Err(IngressError::BadSignature(_))));
    // Another token.
    let other = vec![("x-twilio-signature".to_string(), signature::sign("another", HOOK, &form))];
    assert!(matches!(c.ingress(&post(&other, &body)), Err(IngressError::BadSignature(_))));
    // Another URL (the account's hook is part of what is signed).
    let elsewhere = IngressRequest { url: "https://parley.example/hooks/twilio/cha_other", ..post(&headers, &body) };
    assert!(matches!(c.ingress(&elsewhere), Err(IngressError::BadSignature(_))));
    // A changed body.
    let changed = String::from_utf8(body.clone()).unwrap().replace("delivered", "failed");
    assert!(matches!(c.ingress(&post(&headers, changed.as_bytes())), Err(IngressError::BadSignature(_))));
    // An added parameter.
    let added = format!("{}&Extra=1", String::from_utf8(body.clone()).unwrap());
    assert!(matches!(c.ingress(&post(&headers, added.as_bytes())), Err(IngressError::BadSignature(_))));
    // Garbage in the header.
    let garbage = vec![("x-twilio-signature".to_string(), "%%%".to_string())];
    assert!(matches!(c.ingress(&post(&garbage, &body)), Err(IngressError::BadSignature(_))));
    // Unsigned garbage is a signature problem, not a parse problem.
    assert!(matches!(c.ingress(&post(&other, b"%ZZ&&=")), Err(IngressError::BadSignature(_))));
    // And the right one passes.
    assert!(c.ingress(&post(&headers, &body)).is_ok());
}

#[test]
fn malformed_forms_that_are_signed_are_malformed() {
    let c = connector();
    let sign_raw = |raw: &[u8]| {
        let lenient: Vec<(String, String)> = url::form_urlencoded::parse(raw).into_owned().collect();
        vec![("x-twilio-signature".to_string(), signature::sign(TOKEN, HOOK, &lenient))]
    };
    for raw in [
        &b"MessageSid=SM1&MessageStatus=delivered&Bad=%ZZ"[..],
        &b"MessageSid=SM1&MessageStatus=delivered&Bad=%C3%28"[..],
        &b"MessageSid=SM1&Body=hi&From=%"[..],
        &b"Foo=bar"[..],
        &b""[..],
        &b"MessageStatus=delivered"[..],
        &b"MessageSid=SM1&Body=hi"[..],
        &b"MessageSid=SM1&From=%2B1555&NumMedia=two"[..],
        &b"MessageSid=SM1&From=%2B1555&NumMedia=1"[..],
    ] {
        let headers = sign_raw(raw);
        let result = c.ingress(&post(&headers, raw));
        assert!(matches!(result, Err(IngressError::Malformed(_))), "{}: {result:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn get_callbacks_are_signed_over_the_url_alone() {
    let c = connector();
    let query = "MessageSid=SM3&MessageStatus=sent";
    let url = format!("{HOOK}?{query}");
    let headers = vec![("x-twilio-signature".to_string(), signature::sign(TOKEN, &url, &[]))];
    let req = IngressRequest { method: "GET", url: &url, query, headers: &headers, body: b"", received_at: Millis(5) };
    let out = c.ingress(&req).unwrap();
    assert_eq!(out.receipts[0].state, MessageState::Sent);
    let put = IngressRequest { method: "PUT", ..req.clone() };
    assert_eq!(c.ingress(&put), Err(IngressError::NotSupported));
}

#[test]
fn decode_form_is_strict() {
    assert_eq!(
        callbacks::decode_form(b"A=1+2&B=%2B%C3%A9&&C=&D").unwrap(),
        p(&[("A", "1 2"), ("B", "+é"), ("C", ""), ("D", "")])
    );
    assert!(callbacks::decode_form(b"A=%2").is_err());
    assert!(callbacks::decode_form(b"A=%G1").is_err());
    assert!(callbacks::decode_form(b"A=%FF").is_err());
}

// ---- sending: the form ------------------------------------------------------------------------

#[test]
fn the_send_form_uses_only_fields_the_openapi_documents() {
    let spec = fixture("create_message_openapi.json");
    let documented = spec["request_properties"].as_object().unwrap();
    assert_eq!(spec["request_required"], json!(["To"]));
    let c = connector_with(
        Channel::Sms,
        json!({"account_sid": ACCOUNT, "from": "+15017122661", "messaging_service_sid": SERVICE}),
        json!({"auth_token": TOKEN}),
    );
    let now = Millis(1_700_000_000_000);
    let media = Content::Media {
        url: Some("https://example.com/cat.jpg".into()),
        media_id: None,
        kind: None,
        caption: Some("a cat".into()),
        mime_type: None,
        filename: None,
    };
    for content in [Content::text("Hello! 👍"), media] {
        let form = c.form(&outbound("+14155552345", content, 3_600_000, now), now).unwrap();
        for (name, value) in &form {
            let property = documented.get(*name).unwrap_or_else(|| panic!("{name} is not a documented field"));
            if let Some(pattern) = property["pattern"].as_str() {
                // The only patterns of the fields we send are SID patterns: ^XX[0-9a-fA-F]{32}$
                let prefix = &pattern[1..3];
                assert!(is_sid(value, prefix), "{name}={value} against {pattern}");
            }
            if property["type"] == "integer" {
                assert!(value.parse::<i64>().is_ok(), "{name}={value}");
            }
        }
        let names: Vec<&str> = form.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"To"));
        assert!(names.contains(&"StatusCallback"));
    }
}

#[test]
fn the_send_form_is_encoded_as_twilio_documents_it() {
    let c = connector();
    let now = Millis(1_700_000_000_000);
    let mut request = outbound("+14155552345", Content::text("Hello! 👍 a&b=c"), 90_500, now);
    request.attempt = 2;
    let form = c.form(&request, now).unwrap();
    assert_eq!(
        form,
        vec![
            ("To", "+14155552345".to_string()),
            ("From", "+15017122661".to_string()),
            ("Body", "Hello! 👍 a&b=c".to_string()),
            ("StatusCallback", HOOK.to_string()),
            ("ValidityPeriod", "91".to_string()),
            ("Attempt", "2".to_string()),
        ]
    );
    assert_eq!(
        encode_form(&form),
        "To=%2B14155552345&From=%2B15017122661&Body=Hello%21+%F0%9F%91%8D+a%26b%3Dc\
         &StatusCallback=https%3A%2F%2Fparley.example%2Fhooks%2Ftwilio%2Fcha_test&ValidityPeriod=91&Attempt=2"
    );
    // The body decodes back to the same pairs.
    let decoded = callbacks::decode_form(encode_form(&form).as_bytes()).unwrap();
    assert_eq!(decoded, form.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>());
}

#[test]
fn validity_period_is_sent_only_within_twilios_bounds() {
    let c = connector();
    let now = Millis(1_700_000_000_000);
    let validity = |left_ms: i64| {
        c.form(&outbound("+14155552345", Content::text("x"), left_ms, now), now)
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == "ValidityPeriod")
            .map(|(_, v)| v)
    };
    assert_eq!(validity(1), Some("1".into()));
    assert_eq!(validity(1000), Some("1".into()));
    assert_eq!(validity(36_000_000), Some("36000".into()));
    assert_eq!(validity(36_000_001), None, "beyond Twilio's maximum: Twilio's default (its maximum) applies");
    assert_eq!(validity(7 * 24 * 3_600_000), None);
    assert_eq!(validity(0), None);
    assert_eq!(validity(-5_000), None);
}

#[test]
fn messaging_service_whatsapp_and_from_overrides() {
    let c = connector_with(
        Channel::Whatsapp,
        json!({"account_sid": ACCOUNT, "messaging_service_sid": SERVICE}),
        json!({"auth_token": TOKEN}),
    );
    let now = Millis(0);
    let mut request = outbound("+14155552345", Content::text("hi"), 60_000, now);
    let form = c.form(&request, now).unwrap();
    assert_eq!(form[0], ("To", "whatsapp:+14155552345".to_string()));
    assert_eq!(form[1], ("MessagingServiceSid", SERVICE.to_string()));
    assert!(!form.iter().any(|(n, _)| *n == "From"));
    request.from = Some("+15017122661".into());
    let form = c.form(&request, now).unwrap();
    assert_eq!(form[1], ("From", "whatsapp:+15017122661".to_string()));
    assert_eq!(c.messages_url(), format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages.json"));
}

#[test]
fn unsupported_content_is_refused_before_sending() {
    let c = connector();
    let now = Millis(0);
    let template = Content::Template {
        name: "welcome".into(),
        language: "en".into(),
        variables: Default::default(),
        components: Vec::new(),
    };
    let no_url = Content::Media {
        url: None,
        media_id: Some("123".into()),
        kind: None,
        caption: None,
        mime_type: None,
        filename: None,
    };
    for content in [template, no_url] {
        match c.form(&outbound("+14155552345", content, 60_000, now), now) {
            Err(SendResult::Permanent { error }) => {
                assert_eq!(error.code, "unsupported_content");
                assert!(error.permanent);
            }
            other => panic!("{other:?}"),
        }
    }
    let long = "x".repeat(MAX_BODY_CHARS + 1);
    match c.form(&outbound("+14155552345", Content::text(long), 60_000, now), now) {
        Err(SendResult::Permanent { error }) => assert_eq!(error.code, "content_too_long"),
        other => panic!("{other:?}"),
    }
}

// ---- sending: answers -------------------------------------------------------------------------

#[test]
fn created_answers_give_the_sid() {
    let examples = fixture("twilio_examples.json");
    let body = serde_json::to_vec(&examples["message_create_response_201"]).unwrap();
    assert_eq!(TwilioConnector::answer(201, None, &body), SendResult::accepted("SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"));
    let spec = fixture("create_message_openapi.json");
    for (name, example) in spec["response_201_examples"].as_object().unwrap() {
        let body = serde_json::to_vec(example).unwrap();
        assert_eq!(
            TwilioConnector::answer(201, None, &body),
            SendResult::accepted(example["sid"].as_str().unwrap()),
            "{name}"
        );
    }
    match TwilioConnector::answer(201, None, b"{}") {
        SendResult::Permanent { error } => assert_eq!(error.code, "twilio:unexpected_response"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_fixture_error_envelope_is_a_permanent_21211() {
    let examples = fixture("twilio_examples.json");
    let body = serde_json::to_vec(&examples["error_400_legacy_envelope"]).unwrap();
    let parsed = TwilioError::parse(&body).unwrap();
    assert_eq!(parsed.code, Some(21211));
    assert_eq!(parsed.status, Some(400));
    match TwilioConnector::answer(400, None, &body) {
        SendResult::Permanent { error } => {
            assert_eq!(error.code, "twilio:21211");
            assert!(error.permanent);
            assert!(error.detail.contains("is not a valid phone number"), "{}", error.detail);
            assert!(error.detail.contains("https://www.twilio.com/docs/errors/21211"), "{}", error.detail);
        }
        other => panic!("{other:?}"),
    }
}

fn envelope(code: u32, status: u16) -> Vec<u8> {
    json!({"code": code, "message": format!("error {code}"), "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
        .to_string()
        .into_bytes()
}

#[test]
fn error_codes_map_by_the_table() {
    let permanent = [(21211, 400), (21610, 400), (21614, 400), (21408, 400), (20003, 401), (20404, 404), (30007, 400)];
    for (code, status) in permanent {
        match TwilioConnector::answer(status, Some("5"), &envelope(code, status)) {
            SendResult::Permanent { error } => assert_eq!(error.code, format!("twilio:{code}")),
            other => panic!("{code}: {other:?}"),
        }
    }
    let transient = [(20429, 429), (14107, 429), (30001, 400), (30003, 400), (21611, 400), (20500, 500), (20503, 503)];
    for (code, status) in transient {
        match TwilioConnector::answer(status, None, &envelope(code, status)) {
            SendResult::Transient { error, retry_after_ms } => {
                assert_eq!(error.code, format!("twilio:{code}"));
                assert!(!error.permanent);
                assert_eq!(retry_after_ms, None);
            }
            other => panic!("{code}: {other:?}"),
        }
    }
    // Retry-After (seconds) is honoured.
    match TwilioConnector::answer(429, Some("3"), &envelope(20429, 429)) {
        SendResult::Transient { retry_after_ms, .. } => assert_eq!(retry_after_ms, Some(3000)),
        other => panic!("{other:?}"),
    }
    // Unknown codes and bodies without one: by the HTTP status.
    for (status, body, transient, code) in [
        (429, &b""[..], true, "twilio:http_429"),
        (500, &b"<html>oops</html>"[..], true, "twilio:http_500"),
        (502, &b""[..], true, "twilio:http_502"),
        (400, &b"{\"code\": 99999, \"message\": \"new\"}"[..], false, "twilio:99999"),
        (503, &b"{\"code\": 99999, \"message\": \"new\"}"[..], true, "twilio:99999"),
        (404, &b"not found"[..], false, "twilio:http_404"),
    ] {
        let result = TwilioConnector::answer(status, Some("2"), body);
        let (error, is_transient) = match &result {
            SendResult::Transient { error, retry_after_ms } => {
                assert_eq!(*retry_after_ms, Some(2000));
                (error, true)
            }
            SendResult::Permanent { error } => (error, false),
            other => panic!("{other:?}"),
        };
        assert_eq!(is_transient, transient, "{status}");
        assert_eq!(error.code, code);
        assert!(!error.detail.is_empty());
    }
    // The RFC 9457 shape.
    let problem = br#"{"type":"https://www.twilio.com/docs/errors/21610","title":"Unsubscribed","status":400,"code":21610,"detail":"Attempt to send to unsubscribed recipient"}"#;
    match TwilioConnector::answer(400, None, problem) {
        SendResult::Permanent { error } => {
            assert_eq!(error.code, "twilio:21610");
            assert!(error.detail.contains("unsubscribed recipient"));
        }
        other => panic!("{other:?}"),
    }
    // Every row of the table is reachable.
    for (code, _, transient) in errors::TABLE {
        assert_eq!(errors::is_transient(Some(*code), 400), *transient);
    }
}

// ---- config and credentials -------------------------------------------------------------------

fn config_error(config: Value, credentials: Value) -> (String, String) {
    let spec = AccountSpec {
        id: ChannelAccountId::new(),
        channel: Channel::Sms,
        provider: PROVIDER,
        config: &config,
        credentials: &credentials,
        callback_url: HOOK,
    };
    match TwilioConnector::from_spec(spec, reqwest::Client::new()) {
        Err(ConfigError::InvalidField { provider, field, reason }) => {
            assert_eq!(provider, "twilio");
            (field, reason)
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("accepted {config} / credentials"),
    }
}

#[test]
fn bad_config_and_credentials_are_named_without_their_values() {
    let token = json!({"auth_token": TOKEN});
    let ok = json!({"account_sid": ACCOUNT, "from": "+15017122661"});
    assert_eq!(config_error(json!({"from": "+15017122661"}), token.clone()).0, "(config)");
    assert_eq!(config_error(json!({"account_sid": "AC1", "from": "+15017122661"}), token.clone()).0, "account_sid");
    assert_eq!(config_error(json!({"account_sid": ACCOUNT}), token.clone()).0, "from");
    assert_eq!(config_error(json!({"account_sid": ACCOUNT, "from": "555"}), token.clone()).0, "from");
    assert_eq!(
        config_error(json!({"account_sid": ACCOUNT, "messaging_service_sid": "MGxyz"}), token.clone()).0,
        "messaging_service_sid"
    );
    assert_eq!(
        config_error(json!({"account_sid": ACCOUNT, "from": "+15017122661", "base_url": "ftp://x"}), token.clone()).0,
        "base_url"
    );
    assert_eq!(
        config_error(json!({"account_sid": ACCOUNT, "from": "+15017122661", "auth_token": "x"}), token.clone()).0,
        "auth_token"
    );
    assert_eq!(
        config_error(json!({"account_sid": ACCOUNT, "from": "+15017122661", "timeout_ms": 0}), token.clone()).0,
        "timeout_ms"
    );
    assert_eq!(config_error(ok.clone(), Value::Null).0, "credentials");
    assert_eq!(config_error(ok.clone(), json!({})).0, "credentials.auth_token");
    let (field, reason) = config_error(ok.clone(), json!({"auth_token": 123456789}));
    assert_eq!(field, "credentials.auth_token");
    assert!(!reason.contains("123456789"), "{reason}");
    let (field, _) = config_error(ok.clone(), json!({"auth_token": "t", "password": "hunter2"}));
    assert_eq!(field, "credentials.password");
    let (field, reason) = config_error(ok.clone(), json!({"auth_token": "t", "api_key_sid": "SKsecretish"}));
    assert!(field.starts_with("credentials.api_key_s"), "{field}");
    assert!(!reason.contains("SKsecretish"));
    let (field, _) =
        config_error(ok.clone(), json!({"auth_token": "t", "api_key_sid": "SKsecretish", "api_key_secret": "s"}));
    assert_eq!(field, "credentials.api_key_sid");
    // Good ones, with a trailing slash on base_url.
    let c = connector_with(
        Channel::Sms,
        json!({"account_sid": ACCOUNT, "from": "+15017122661", "base_url": "http://127.0.0.1:9/"}),
        json!({"auth_token": "t", "api_key_sid": "SK0123456789abcdef0123456789abcdef", "api_key_secret": "s"}),
    );
    assert_eq!(c.config().base_url, "http://127.0.0.1:9");
    assert_eq!(c.basic_auth(), ("SK0123456789abcdef0123456789abcdef", "s"));
    assert_eq!(connector().basic_auth(), (ACCOUNT, TOKEN));
}

#[tokio::test]
async fn build_knows_twilio_and_refuses_other_channels() {
    let (events, _r, _i) = ProviderEvents::channel();
    let ctx =
        ConnectorContext { events, ledger: Arc::new(SubmissionLedger::in_memory()), http: reqwest::Client::new() };
    let config = json!({"account_sid": ACCOUNT, "from": "+15017122661"});
    let credentials = json!({"auth_token": TOKEN});
    let spec = |channel| AccountSpec {
        id: ChannelAccountId::new(),
        channel,
        provider: "twilio",
        config: &config,
        credentials: &credentials,
        callback_url: HOOK,
    };
    assert_eq!(crate::build(spec(Channel::Sms), &ctx).ok().map(|c| c.provider()), Some("twilio"));
    assert!(crate::build(spec(Channel::Whatsapp), &ctx).is_ok());
    assert!(crate::build(spec(Channel::Rcs), &ctx).is_err());
    assert!(crate::PROVIDERS.contains(&"twilio"));
}
