use super::errors::{Class, GraphError, classify};
use super::webhook::{SIGNATURE_HEADER, constant_time_eq, sign, verify_signature};
use super::*;
use crate::{IngressReply, IngressRequest};
use parley_domain::{
    Content, InteractiveAction, InteractiveHeader, ListRow, ListSection, MediaKind, MessageState, Millis, ReplyButton,
    TemplateComponent, TemplateComponentKind, TemplateParameter,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const REQUESTS: &str = include_str!("../../tests/fixtures/whatsapp/send_message_requests.json");
const RESPONSES: &str = include_str!("../../tests/fixtures/whatsapp/send_message_responses_200.json");
const GRAPH_ERRORS: &str = include_str!("../../tests/fixtures/whatsapp/graph_error_examples.json");
const INBOUND: &str = include_str!("../../tests/fixtures/whatsapp/webhook_inbound_examples.json");
const SIGNATURES: &str = include_str!("../../tests/fixtures/whatsapp/signature_vectors.json");
const PYWA_MESSAGE: &str = include_str!("../../tests/fixtures/whatsapp/pywa/message.json");
const PYWA_STATUS: &str = include_str!("../../tests/fixtures/whatsapp/pywa/message_status.json");
const PYWA_BUTTON: &str = include_str!("../../tests/fixtures/whatsapp/pywa/callback_button.json");
const PYWA_SELECTION: &str = include_str!("../../tests/fixtures/whatsapp/pywa/callback_selection.json");
const PYWA_SYSTEM: &str = include_str!("../../tests/fixtures/whatsapp/pywa/system.json");
const PYWA_ECHOES: &str = include_str!("../../tests/fixtures/whatsapp/pywa/outgoing_message.json");

const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const VERIFY_TOKEN: &str = "meatyhamhock";
const TO: &str = "+16505551234";

fn connector_for(phone_number_id: &str, base_url: &str) -> WhatsAppConnector {
    let spec_config = json!({"phone_number_id": phone_number_id, "base_url": base_url});
    let credentials = json!({"access_token": "EAAG-token", "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN});
    let spec = crate::AccountSpec {
        id: parley_domain::ChannelAccountId::new(),
        channel: Channel::Whatsapp,
        provider: PROVIDER,
        config: &spec_config,
        credentials: &credentials,
        callback_url: "http://127.0.0.1/hooks/whatsapp/cha_x",
    };
    WhatsAppConnector::from_spec(spec, reqwest::Client::new()).unwrap()
}

fn connector() -> WhatsAppConnector {
    connector_for("106540352242922", "http://127.0.0.1:9")
}

fn json_file(text: &str) -> serde_json::Map<String, Value> {
    serde_json::from_str::<Value>(text).unwrap().as_object().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// Golden tests: Meta's request examples.

fn media(
    kind: MediaKind,
    url: Option<&str>,
    id: Option<&str>,
    caption: Option<&str>,
    filename: Option<&str>,
) -> Content {
    Content::Media {
        url: url.map(String::from),
        media_id: id.map(String::from),
        kind: Some(kind),
        caption: caption.map(String::from),
        mime_type: None,
        filename: filename.map(String::from),
    }
}

fn text_param(t: &str) -> TemplateParameter {
    TemplateParameter::Text { text: t.into(), parameter_name: None }
}

fn template(name: &str, language: &str, components: Vec<TemplateComponent>) -> Content {
    Content::Template { name: name.into(), language: language.into(), variables: BTreeMap::new(), components }
}

fn component(kind: TemplateComponentKind, parameters: Vec<TemplateParameter>) -> TemplateComponent {
    TemplateComponent { kind, sub_type: None, index: None, parameters }
}

fn button(sub_type: &str, index: u32, parameters: Vec<TemplateParameter>) -> TemplateComponent {
    TemplateComponent {
        kind: TemplateComponentKind::Button,
        sub_type: Some(sub_type.into()),
        index: Some(index),
        parameters,
    }
}

/// The body parameters of Meta's "text-string / currency / date_time" examples.
fn sample_body() -> TemplateComponent {
    component(
        TemplateComponentKind::Body,
        vec![
            text_param("text-string"),
            TemplateParameter::Currency {
                fallback_value: "$100.99".into(),
                code: "USD".into(),
                amount_1000: 100990,
                parameter_name: None,
            },
            TemplateParameter::DateTime {
                fallback_value: "February 25, 1977".into(),
                calendar: Some("GREGORIAN".into()),
                year: Some(1977),
                month: Some(2),
                day_of_month: Some(25),
                day_of_week: Some(5),
                hour: Some(15),
                minute: Some(33),
                parameter_name: None,
            },
        ],
    )
}

fn image_header() -> TemplateComponent {
    component(
        TemplateComponentKind::Header,
        vec![TemplateParameter::Image { url: Some("http(s)://the-image-url".into()), media_id: None }],
    )
}

fn list_message() -> Content {
    let row = |s: u8, r: u8| ListRow {
        id: format!("<LIST_SECTION_{s}_ROW_{r}_ID>"),
        title: format!("<SECTION_{s}_ROW_{r}_TITLE>"),
        description: Some(format!("<SECTION_{s}_ROW_{r}_DESC>")),
    };
    Content::Interactive {
        header: Some(InteractiveHeader::Text { text: "<HEADER_TEXT>".into() }),
        body: "<BODY_TEXT>".into(),
        footer: Some("<FOOTER_TEXT>".into()),
        action: InteractiveAction::List {
            button: "<BUTTON_TEXT>".into(),
            sections: vec![
                ListSection { title: Some("<LIST_SECTION_1_TITLE>".into()), rows: vec![row(1, 1), row(1, 2)] },
                ListSection { title: Some("<LIST_SECTION_2_TITLE>".into()), rows: vec![row(2, 1), row(2, 2)] },
            ],
        },
    }
}

fn location() -> Content {
    Content::Location {
        latitude: 37.758056,
        longitude: -122.425332,
        name: Some("META HQ".into()),
        address: Some("1 Hacker Way, Menlo Park, CA 94025".into()),
    }
}

/// Examples Parley's content expresses exactly, with the content that must produce them.
fn covered() -> Vec<(&'static str, Content)> {
    use MediaKind::*;
    vec![
        ("Send Audio Message by ID", media(Audio, None, Some("<AUDIO_OBJECT_ID>"), None, None)),
        ("Send Audio Message by URL", media(Audio, Some("<http(s)://audio-url>"), None, None, None)),
        (
            "Send Document Message by ID",
            media(
                Document,
                None,
                Some("<DOCUMENT_OBJECT_ID>"),
                Some("<DOCUMENT_CAPTION_TO_SEND>"),
                Some("<DOCUMENT_FILENAME>"),
            ),
        ),
        (
            "Send Document Message by URL",
            media(Document, Some("<http(s)://document-url>"), None, Some("<DOCUMENT-CAPTION-TEXT>"), None),
        ),
        ("Send Image Message by ID", media(Image, None, Some("<IMAGE_OBJECT_ID>"), None, None)),
        ("Send Image Message by URL", media(Image, Some("http(s)://image-url"), None, None, None)),
        ("Send Sticker Message by ID", media(Sticker, None, Some("<MEDIA_OBJECT_ID>"), None, None)),
        ("Send Sticker Message by URL", media(Sticker, Some("<http(s)://sticker-url>"), None, None, None)),
        ("Send Video Message by ID", media(Video, None, Some("<VIDEO_OBJECT_ID>"), Some("<VIDEO_CAPTION_TEXT>"), None)),
        (
            "Send Video Message by URL",
            media(Video, Some("<http(s)://video-url>"), None, Some("<VIDEO_CAPTION_TEXT>"), None),
        ),
        ("Send Location Message", location()),
        ("Send Text Message", Content::text("text-message-content")),
        ("Send Text Message with Preview URL", Content::text("Please visit https://youtu.be/hpltvTEiRrY.")),
        (
            "Send Reply with Reaction Message",
            Content::Reaction { message_id: "wamid.HBgLM...".into(), emoji: "\u{1F600}".into() },
        ),
        (
            "Send Reply Button",
            Content::Interactive {
                header: None,
                body: "<BUTTON_TEXT>".into(),
                footer: None,
                action: InteractiveAction::Buttons {
                    buttons: vec![
                        ReplyButton { id: "<UNIQUE_BUTTON_ID_1>".into(), title: "<BUTTON_TITLE_1>".into() },
                        ReplyButton { id: "<UNIQUE_BUTTON_ID_2>".into(), title: "<BUTTON_TITLE_2>".into() },
                    ],
                },
            },
        ),
        ("Send List Message", list_message()),
        ("Send Test Message", template("hello_world", "en_US", vec![])),
        ("Send Message Template Text", template("template-name", "language-and-locale-code", vec![sample_body()])),
        ("Send Sample Text Message", template("template-name", "language-and-locale-code", vec![sample_body()])),
        (
            "Send Sample Shipping Confirmation Template",
            template("template-name", "language-and-locale-code", vec![sample_body()]),
        ),
        (
            "Send Message Template Media",
            template("template-name", "language-and-locale-code", vec![image_header(), sample_body()]),
        ),
        (
            "Send Message Template Interactive",
            template(
                "template-name",
                "language-and-locale-code",
                vec![
                    image_header(),
                    sample_body(),
                    button(
                        "quick_reply",
                        0,
                        vec![TemplateParameter::Payload { payload: "aGlzIHRoaXMgaXMgY29v".into() }],
                    ),
                    button(
                        "quick_reply",
                        1,
                        vec![TemplateParameter::Payload { payload: "9rwnB8RbYmPF5t2Mn09x4h".into() }],
                    ),
                ],
            ),
        ),
        (
            "Send Catalog Template Message",
            template(
                "intro_catalog_offer",
                "en_US",
                vec![
                    component(TemplateComponentKind::Body, vec![text_param("100"), text_param("400"), text_param("3")]),
                    button(
                        "CATALOG",
                        0,
                        vec![TemplateParameter::Action {
                            flow_token: None,
                            flow_action_data: None,
                            thumbnail_product_retailer_id: Some("2lc20305pt".into()),
                        }],
                    ),
                ],
            ),
        ),
        (
            "Send Flow Template Message",
            template(
                "<TEMPLATE_NAME>",
                "en_US",
                vec![button(
                    "flow",
                    0,
                    vec![TemplateParameter::Action {
                        flow_token: Some("<FLOW_TOKEN>".into()),
                        flow_action_data: Some(json!({"<CUSTOM_KEY>": "<CUSTOM_VALUE>"})),
                        thumbnail_product_retailer_id: None,
                    }],
                )],
            ),
        ),
    ]
}

/// Examples that are replies (`context.message_id`): Parley's outbound requests carry no
/// reply-to yet, so these are compared without `context`.
fn covered_but_context() -> Vec<(&'static str, Content)> {
    use MediaKind::*;
    vec![
        ("Send Reply to Audio Message by ID", media(Audio, None, Some("<AUDIO_OBJECT_ID>"), None, None)),
        ("Send Reply to Audio Message by URL", media(Audio, Some("http(s)://audio-url"), None, None, None)),
        (
            "Send Reply to Document Message by ID",
            media(
                Document,
                None,
                Some("<DOCUMENT_OBJECT_ID>"),
                Some("<DOCUMENT_CAPTION_TO_SEND>"),
                Some("<DOCUMENT_FILENAME>"),
            ),
        ),
        (
            "Send Reply to Document Message by URL",
            media(Document, Some("<http(s)://document-url>"), None, Some("<DOCUMENT_CAPTION_TEXT>"), None),
        ),
        ("Send Reply to Image Message by ID", media(Image, None, Some("<IMAGE_OBJECT_ID>"), None, None)),
        ("Send Reply to Image Message by URL", media(Image, Some("http(s)://image-url"), None, None, None)),
        ("Send Reply to Sticker Message by ID", media(Sticker, None, Some("<MEDIA_OBJECT_ID>"), None, None)),
        ("Send Reply to Sticker Message by URL", media(Sticker, Some("<http(s)://sticker-url>"), None, None, None)),
        (
            "Send Reply to Video Message by ID",
            media(Video, None, Some("<VIDEO_OBJECT_ID>"), Some("<VIDEO_CAPTION_TEXT>"), None),
        ),
        (
            "Send Reply to Video Message by URL",
            media(Video, Some("<http(s)://video-url>"), None, Some("<VIDEO_CAPTION_TEXT>"), None),
        ),
        ("Send Reply to Location Message", location()),
        ("Send Reply to Text Message", Content::text("<TEXT_MSG_CONTENT>")),
        ("Send Reply to List Message", list_message()),
    ]
}

/// Examples Parley's content cannot express, and why.
const NOT_COVERED: &[(&str, &str)] = &[
    ("Send Catalog Message", "interactive catalog_message: Parley has no catalog content"),
    ("Send Contact Message", "contacts: Parley has no contact-card content"),
    ("Send Reply to Contact Message", "contacts: Parley has no contact-card content"),
    ("Send Draft Flow by ID", "interactive flow: Parley has no WhatsApp Flows content"),
    ("Send Draft Flow by Name", "interactive flow: Parley has no WhatsApp Flows content"),
    ("Send Published Flow by ID", "interactive flow: Parley has no WhatsApp Flows content"),
    ("Send Published Flow by Name", "interactive flow: Parley has no WhatsApp Flows content"),
    ("Send Multi-Product Message", "interactive product_list: Parley has no catalog content"),
    ("Send Single Product Message", "interactive product: Parley has no catalog content"),
    ("Send Order Details Message", "interactive order_details: Parley has no payments content"),
    ("Send Order Status Message", "interactive order_status: Parley has no payments content"),
    (
        "Send Sample Issue Resolution Template",
        "its text parameters are JSON booleans (the schema says string) and language.policy 'deterministic' is deprecated",
    ),
    (
        "Send typing indicator and read receipt",
        "not a message: Connector::mark_read sends this body without typing_indicator (tested below)",
    ),
];

/// The documented defaults an example may leave out, filled in; `to` set to ours; a button's
/// `index` as a string (the schema takes both, Meta's examples use both).
fn normalise(example: &Value) -> Value {
    let mut e = example.clone();
    e["to"] = json!(TO.trim_start_matches('+'));
    if e.get("recipient_type").is_none() {
        e["recipient_type"] = json!("individual");
    }
    if e.get("type").is_none() {
        let kind = ["text", "template", "image", "audio", "video", "document", "sticker", "location", "interactive"]
            .into_iter()
            .find(|k| e.get(*k).is_some())
            .unwrap();
        e["type"] = json!(kind);
    }
    if let Some(components) = e.pointer_mut("/template/components").and_then(Value::as_array_mut) {
        for c in components {
            if let Some(Value::Number(n)) = c.get("index") {
                c["index"] = json!(n.to_string());
            }
        }
    }
    e
}

#[test]
fn every_request_example_is_accounted_for() {
    let examples = json_file(REQUESTS);
    let mut named: Vec<&str> = covered().iter().map(|(n, _)| *n).collect();
    named.extend(covered_but_context().iter().map(|(n, _)| *n));
    named.extend(NOT_COVERED.iter().map(|(n, _)| *n));
    let mut sorted = named.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), named.len(), "an example is listed twice");
    let mut keys: Vec<&str> = examples.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, sorted, "every example of the OpenAPI is covered or says why not");
    assert_eq!(examples.len(), 50);
}

#[test]
fn parley_builds_meta_s_request_examples() {
    let examples = json_file(REQUESTS);
    for (name, content) in covered() {
        let built = body::message(TO, &content).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(built, normalise(&examples[name]), "{name}");
    }
    for (name, content) in covered_but_context() {
        let built = body::message(TO, &content).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let mut expected = normalise(&examples[name]);
        assert!(expected.as_object_mut().unwrap().remove("context").is_some(), "{name} has a context");
        assert_eq!(built, expected, "{name}");
    }
}

#[test]
fn mark_read_is_meta_s_read_receipt_without_the_typing_indicator() {
    let examples = json_file(REQUESTS);
    let mut expected = examples["Send typing indicator and read receipt"].clone();
    expected.as_object_mut().unwrap().remove("typing_indicator");
    assert_eq!(body::mark_read("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA="), expected);
}

#[test]
fn other_bodies() {
    // Variables are the simple form of a body component, in numeric order.
    let mut variables = BTreeMap::new();
    variables.insert("10".to_string(), "ten".to_string());
    variables.insert("2".to_string(), "two".to_string());
    let t = Content::Template { name: "t".into(), language: "en".into(), variables, components: vec![image_header()] };
    let b = body::message(TO, &t).unwrap();
    assert_eq!(b["template"]["components"][1]["type"], "body");
    assert_eq!(
        b["template"]["components"][1]["parameters"],
        json!([{"type": "text", "text": "two"}, {"type": "text", "text": "ten"}])
    );
    // Named variables carry their names.
    let mut named = BTreeMap::new();
    named.insert("first_name".to_string(), "Ann".to_string());
    let t = Content::Template { name: "t".into(), language: "en".into(), variables: named, components: vec![] };
    assert_eq!(
        body::message(TO, &t).unwrap()["template"]["components"],
        json!([{"type": "body", "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ann"}]}])
    );
    // Every parameter type.
    let every = template(
        "t",
        "en",
        vec![
            component(
                TemplateComponentKind::Header,
                vec![TemplateParameter::Location {
                    latitude: 1.0,
                    longitude: 2.0,
                    name: Some("n".into()),
                    address: None,
                }],
            ),
            component(
                TemplateComponentKind::Header,
                vec![TemplateParameter::Document {
                    url: None,
                    media_id: Some("9".into()),
                    filename: Some("a.pdf".into()),
                }],
            ),
            component(
                TemplateComponentKind::Header,
                vec![TemplateParameter::Video { url: Some("https://v".into()), media_id: None }],
            ),
            button("copy_code", 2, vec![TemplateParameter::CouponCode { coupon_code: "SAVE".into() }]),
            button("url", 3, vec![text_param("path/1")]),
        ],
    );
    let b = body::message(TO, &every).unwrap();
    let c = &b["template"]["components"];
    assert_eq!(
        c[0]["parameters"][0],
        json!({"type": "location", "location": {"latitude": 1.0, "longitude": 2.0, "name": "n"}})
    );
    assert_eq!(c[1]["parameters"][0], json!({"type": "document", "document": {"id": "9", "filename": "a.pdf"}}));
    assert_eq!(c[2]["parameters"][0], json!({"type": "video", "video": {"link": "https://v"}}));
    assert_eq!(
        c[3],
        json!({"type": "button", "sub_type": "copy_code", "index": "2", "parameters": [{"type": "coupon_code", "coupon_code": "SAVE"}]})
    );
    assert_eq!(c[4]["parameters"][0], json!({"type": "text", "text": "path/1"}));
    // cta_url, with an image header.
    let cta = Content::Interactive {
        header: Some(InteractiveHeader::Image { url: Some("https://x.example/a.png".into()), media_id: None }),
        body: "See".into(),
        footer: None,
        action: InteractiveAction::CtaUrl { display_text: "Open".into(), url: "https://x.example".into() },
    };
    assert_eq!(
        body::message(TO, &cta).unwrap()["interactive"],
        json!({"type": "cta_url", "header": {"type": "image", "image": {"link": "https://x.example/a.png"}},
               "body": {"text": "See"}, "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://x.example"}}})
    );
    // The kind is guessed when left out.
    let guessed = Content::Media {
        url: Some("https://x.example/clip.mp4".into()),
        media_id: None,
        kind: None,
        caption: Some("c".into()),
        mime_type: None,
        filename: None,
    };
    assert_eq!(body::message(TO, &guessed).unwrap()["type"], "video");
    // What WhatsApp cannot show is refused before calling Meta.
    assert!(body::message(TO, &media(MediaKind::Audio, Some("https://a"), None, Some("c"), None)).is_err());
    assert!(body::message(TO, &media(MediaKind::Image, Some("https://a"), None, None, Some("f"))).is_err());
    assert!(body::message(TO, &Content::Reply { text: "x".into(), payload: None }).is_err());
    let chips = Content::Text {
        text: "t".into(),
        suggestions: vec![parley_domain::Suggestion::Reply { text: "y".into(), postback_data: "y".into() }],
    };
    assert!(body::message(TO, &chips).is_err());
}

// ---------------------------------------------------------------------------------------------
// Answers and errors.

#[test]
fn every_success_response_gives_the_message_id() {
    let c = connector();
    let mut checked = 0;
    for (name, response) in json_file(RESPONSES) {
        let Some(id) = response.pointer("/messages/0/id").and_then(Value::as_str) else {
            // The read receipt's answer.
            assert_eq!(
                (name.as_str(), &response),
                ("Send typing indicator and read receipt", &json!({"success": true}))
            );
            continue;
        };
        let body = serde_json::to_vec(&response).unwrap();
        assert_eq!(c.answer("1", 200, None, &body), SendResult::accepted(id), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 43);
    let r = c.answer("1", 200, None, br#"{"messaging_product":"whatsapp","messages":[]}"#);
    assert!(matches!(r, SendResult::Permanent { error } if error.code == "whatsapp:unexpected_response"));
}

#[test]
fn graph_error_examples_are_classified() {
    let examples = json_file(GRAPH_ERRORS);
    for (code, envelope) in examples["by_code"].as_object().unwrap() {
        let graph = GraphError::parse(&serde_json::to_vec(envelope).unwrap()).unwrap();
        assert_eq!(graph.code.map(|c| c.to_string()).as_deref(), Some(code.as_str()));
        let c = connector();
        let result = c.answer("16505551234", 400, None, &serde_json::to_vec(envelope).unwrap());
        let expected_code = format!("whatsapp:{code}");
        match (code.as_str(), result) {
            ("1" | "2", SendResult::Transient { error, retry_after_ms: None }) => assert_eq!(error.code, expected_code),
            ("4" | "17" | "613" | "80007", SendResult::Transient { error, retry_after_ms: Some(60_000) }) => {
                assert_eq!(error.code, expected_code)
            }
            (_, SendResult::Permanent { error }) => {
                assert_eq!(error.code, expected_code);
                assert!(error.permanent);
                assert!(!error.detail.is_empty());
            }
            (code, other) => panic!("{code}: {other:?}"),
        }
    }
}

#[test]
fn every_code_of_the_protocol_table_has_its_class() {
    let expect = [
        (4, Class::PauseNumber(60)),
        (80007, Class::PauseNumber(60)),
        (130429, Class::PauseNumber(1)),
        (131056, Class::PauseRecipient),
        (131048, Class::PauseNumber(60)),
        (131047, Class::NeedsTemplate),
        (131026, Class::Permanent),
        (131049, Class::Permanent),
        (131050, Class::Permanent),
        (131000, Class::Retry),
        (131016, Class::Retry),
        (135000, Class::Retry),
        (131008, Class::Permanent),
        (131009, Class::Permanent),
        (100, Class::Permanent),
        (132000, Class::Permanent),
        (132001, Class::Permanent),
        (132005, Class::Permanent),
        (132007, Class::Permanent),
        (132012, Class::Permanent),
        (132015, Class::Permanent),
        (132016, Class::Permanent),
        (131051, Class::Permanent),
        (131057, Class::Later(60)),
        (131042, Class::Permanent),
        (131031, Class::Permanent),
        (368, Class::Permanent),
        (130497, Class::Permanent),
        (190, Class::Permanent),
        (10, Class::Permanent),
        (200, Class::Permanent),
    ];
    for (code, class) in expect {
        assert_eq!(classify(Some(code), false, 400), class, "{code}");
    }
    // 200-299 are permissions; unknown codes go by is_transient and the HTTP status.
    for code in 201..=299 {
        assert_eq!(classify(Some(code), false, 403), Class::Permanent, "{code}");
    }
    assert_eq!(classify(Some(999_999), true, 400), Class::Retry);
    assert_eq!(classify(Some(999_999), false, 503), Class::Retry);
    assert_eq!(classify(None, false, 429), Class::Retry);
    assert_eq!(classify(None, false, 400), Class::Permanent);
}

fn graph_error(code: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"error": {"message": format!("(#{code}) some title"), "type": "OAuthException",
        "code": code, "error_data": {"messaging_product": "whatsapp", "details": "some details"}, "fbtrace_id": "Atrace"}}))
    .unwrap()
}

#[test]
fn outside_the_window_is_final_with_its_own_code() {
    let c = connector();
    match c.answer("16505551234", 400, None, &graph_error(131047)) {
        SendResult::Permanent { error } => {
            assert_eq!(error.code, "whatsapp:131047");
            assert!(error.detail.contains("template"), "{}", error.detail);
            assert!(error.detail.contains("some details") && error.detail.contains("Atrace"), "{}", error.detail);
        }
        other => panic!("{other:?}"),
    }
    match c.answer("16505551234", 400, None, &graph_error(131026)) {
        SendResult::Permanent { error } => assert_eq!(error.code, "whatsapp:131026"),
        other => panic!("{other:?}"),
    }
    // Not Graph JSON at all.
    match c.answer("1", 502, None, b"<html>bad gateway</html>") {
        SendResult::Transient { error, .. } => {
            assert_eq!(error.code, "whatsapp:http_502");
            assert!(error.detail.contains("bad gateway"));
        }
        other => panic!("{other:?}"),
    }
}

fn pause_of(r: &SendResult) -> (String, i64) {
    match r {
        SendResult::Transient { error, retry_after_ms: Some(ms) } => (error.code.clone(), *ms),
        other => panic!("{other:?}"),
    }
}

fn request(to: &str) -> OutboundRequest {
    OutboundRequest {
        message_id: parley_domain::MessageId::new(),
        channel_account_id: parley_domain::ChannelAccountId::new(),
        attempt: 1,
        channel: Channel::Whatsapp,
        to: to.into(),
        from: None,
        content: Content::text("hi"),
        expires_at: Millis(i64::MAX),
    }
}

#[tokio::test(start_paused = true)]
async fn throughput_errors_pause_the_whole_number_without_calling_meta() {
    // Port 9 (discard) is closed: a call to Meta would be a network error, not a pause.
    let c = connector();
    assert_eq!(pause_of(&c.answer("16505551234", 400, None, &graph_error(130429))), ("whatsapp:130429".into(), 1000));
    // Any recipient waits, with what is left of the pause.
    tokio::time::advance(Duration::from_millis(400)).await;
    let (code, left) = pause_of(&c.send(&request("+16505550000")).await);
    assert_eq!((code.as_str(), left), ("whatsapp:130429", 600));
    // Again right after: the pause doubles.
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(pause_of(&c.answer("16505551234", 429, None, &graph_error(130429))).1, 2000);
    // Retry-After is a floor.
    tokio::time::advance(Duration::from_millis(2000)).await;
    assert_eq!(pause_of(&c.answer("16505551234", 429, Some("30"), &graph_error(130429))).1, 30_000);
    tokio::time::advance(Duration::from_millis(30_000)).await;
    // Paused no more: the send reaches the (closed) network.
    match c.send(&request("+16505550000")).await {
        SendResult::Transient { error, .. } => assert_eq!(error.code, "whatsapp:network"),
        other => panic!("{other:?}"),
    }
    // A success resets the growth.
    let ok = br#"{"messages":[{"id":"wamid.1"}]}"#;
    assert!(matches!(c.answer("16505550000", 200, None, ok), SendResult::Accepted { .. }));
    assert_eq!(pause_of(&c.answer("16505551234", 400, None, &graph_error(130429))).1, 1000);
}

#[tokio::test(start_paused = true)]
async fn pair_rate_limits_pause_only_that_recipient() {
    let c = connector();
    assert_eq!(pause_of(&c.answer("16505551234", 400, None, &graph_error(131056))), ("whatsapp:131056".into(), 4000));
    let (code, left) = pause_of(&c.send(&request("+16505551234")).await);
    assert_eq!((code.as_str(), left), ("whatsapp:131056", 4000));
    // Someone else is not paused (the call reaches the closed network).
    match c.send(&request("+16505550000")).await {
        SendResult::Transient { error, .. } => assert_eq!(error.code, "whatsapp:network"),
        other => panic!("{other:?}"),
    }
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(pause_of(&c.answer("16505551234", 400, None, &graph_error(131056))).1, 16_000);
    tokio::time::advance(Duration::from_secs(16)).await;
    assert_eq!(pause_of(&c.answer("16505551234", 400, None, &graph_error(131056))).1, 64_000);
}

#[tokio::test]
async fn unsupported_content_is_refused_before_calling_meta() {
    let c = connector();
    let mut r = request("+16505551234");
    r.content = Content::Other { kind: "contacts".into(), raw: json!({}) };
    match c.send(&r).await {
        SendResult::Permanent { error } => assert_eq!(error.code, "unsupported_content"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Config and credentials.

fn build_error(config: Value, credentials: Value, channel: Channel) -> (String, String) {
    let spec = crate::AccountSpec {
        id: parley_domain::ChannelAccountId::new(),
        channel,
        provider: PROVIDER,
        config: &config,
        credentials: &credentials,
        callback_url: "",
    };
    match WhatsAppConnector::from_spec(spec, reqwest::Client::new()) {
        Err(ConfigError::InvalidField { field, reason, .. }) => (field, reason),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("built"),
    }
}

#[test]
fn config_and_credentials_are_checked_and_named() {
    let creds = json!({"access_token": "t", "app_secret": "s", "verify_token": "v"});
    let ok = json!({"phone_number_id": "106540352242922"});
    let c = connector_for("106540352242922", "https://graph.facebook.com/");
    assert_eq!(c.messages_url(), "https://graph.facebook.com/v23.0/106540352242922/messages");
    assert_eq!(c.number_url(), "https://graph.facebook.com/v23.0/106540352242922");
    let cases = [
        (json!({}), "phone_number_id"),
        (json!({"phone_number_id": "abc"}), "phone_number_id"),
        (json!({"phone_number_id": "1", "api_version": "23"}), "api_version"),
        (json!({"phone_number_id": "1", "base_url": "ftp://x"}), "base_url"),
        (json!({"phone_number_id": "1", "waba_id": "x"}), "waba_id"),
        (json!({"phone_number_id": "1", "timeout_ms": 0}), "timeout_ms"),
        (json!({"phone_number_id": "1", "verify_token": "v"}), "verify_token"),
    ];
    for (config, field) in cases {
        assert_eq!(build_error(config.clone(), creds.clone(), Channel::Whatsapp).0, field, "{config}");
    }
    assert_eq!(build_error(ok.clone(), creds.clone(), Channel::Sms).0, "(config)");
    for (credentials, field) in [
        (json!(null), "credentials"),
        (json!({"app_secret": "s", "verify_token": "v"}), "credentials.access_token"),
        (json!({"access_token": "t", "verify_token": "v"}), "credentials.app_secret"),
        (json!({"access_token": "t", "app_secret": "s"}), "credentials.verify_token"),
        (json!({"access_token": 1, "app_secret": "s", "verify_token": "v"}), "credentials.access_token"),
    ] {
        assert_eq!(build_error(ok.clone(), credentials.clone(), Channel::Whatsapp).0, field, "{credentials}");
    }
    // A credential's value never appears in an error.
    let (_, reason) = build_error(
        ok,
        json!({"access_token": "SECRET-VALUE", "app_secret": 5, "verify_token": "v"}),
        Channel::Whatsapp,
    );
    assert!(!reason.contains("SECRET-VALUE"), "{reason}");
}

#[test]
fn the_default_throughput_is_meta_s_and_the_engine_s() {
    assert_eq!(DEFAULT_RATE_PER_SECOND, 80);
    assert_eq!(crate::default_limits(PROVIDER).0, DEFAULT_RATE_PER_SECOND);
    assert_eq!(crate::serves(PROVIDER, Channel::Whatsapp), Some(true));
    assert!(crate::PROVIDERS.contains(&PROVIDER));
}

// ---------------------------------------------------------------------------------------------
// Webhooks.

fn post<'a>(body: &'a [u8], headers: &'a [(String, String)]) -> IngressRequest<'a> {
    IngressRequest {
        method: "POST",
        url: "http://127.0.0.1/hooks/whatsapp/cha_x",
        query: "",
        headers,
        body,
        received_at: Millis(1_000),
    }
}

fn signed(body: &[u8]) -> Vec<(String, String)> {
    vec![(SIGNATURE_HEADER.to_string(), sign(APP_SECRET, body))]
}

#[test]
fn signature_vectors_pass() {
    let v: Value = serde_json::from_str(SIGNATURES).unwrap();
    let secret = v["app_secret"].as_str().unwrap();
    let raw = v["raw_body"].as_str().unwrap().as_bytes();
    let header = v["X-Hub-Signature-256"].as_str().unwrap();
    assert_eq!(sign(secret, raw), header);
    assert!(verify_signature(secret, Some(header), raw).is_ok());
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", header.trim_start_matches("sha256=").to_uppercase());
    assert!(verify_signature(secret, Some(&upper), raw).is_ok());
    // The public vector.
    assert_eq!(sign("secret", b"test"), "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914");
    // The escaped-unicode body is verified as sent, not re-serialised.
    let reserialised = serde_json::to_vec(&serde_json::from_slice::<Value>(raw).unwrap()).unwrap();
    assert!(verify_signature(secret, Some(header), &reserialised).is_err());
    // And the connector reads it: "Café ☕".
    let c = connector_for("106540352242922", "http://127.0.0.1:9");
    let headers = vec![(SIGNATURE_HEADER.to_string(), header.to_string())];
    let out = c.ingress(&post(raw, &headers)).unwrap();
    assert_eq!(out.inbound[0].content, Content::text("Caf\u{e9} \u{2615}"));
    assert_eq!(out.reply, IngressReply::ok());
}

#[test]
fn a_wrong_or_missing_signature_is_refused_before_parsing() {
    let c = connector();
    let body = br#"{"entry": "not even the right shape"}"#;
    for headers in [
        vec![],
        vec![(SIGNATURE_HEADER.to_string(), "sha256=00".to_string())],
        vec![(SIGNATURE_HEADER.to_string(), sign("another secret", body))],
        vec![(SIGNATURE_HEADER.to_string(), sign(APP_SECRET, body).replace("sha256=", "sha1="))],
        vec![(SIGNATURE_HEADER.to_string(), "sha256=zz".to_string())],
    ] {
        assert!(matches!(c.ingress(&post(body, &headers)), Err(IngressError::BadSignature(_))), "{headers:?}");
    }
    // Signed correctly but not a webhook.
    assert!(matches!(c.ingress(&post(body, &signed(body))), Err(IngressError::Malformed(_))));
    assert!(matches!(c.ingress(&post(b"{", &signed(b"{"))), Err(IngressError::Malformed(_))));
}

fn get(query: &str) -> IngressRequest<'_> {
    IngressRequest {
        method: "GET",
        url: "http://127.0.0.1/hooks/whatsapp/cha_x",
        query,
        headers: &[],
        body: b"",
        received_at: Millis(0),
    }
}

#[test]
fn the_handshake_echoes_the_challenge_for_the_right_token_only() {
    let c = connector();
    let out = c.ingress(&get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock")).unwrap();
    assert_eq!(out.reply, IngressReply::text("1158201444"));
    assert!(out.receipts.is_empty() && out.inbound.is_empty());
    for query in [
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong",
        "hub.mode=subscribe&hub.challenge=1158201444",
        "hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
        "hub.challenge=1158201444&hub.verify_token=meatyhamhock",
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=meatyhamhoc",
    ] {
        assert!(matches!(c.ingress(&get(query)), Err(IngressError::Forbidden(_))), "{query}");
    }
    assert!(constant_time_eq("a", "a") && !constant_time_eq("a", "b") && !constant_time_eq("a", "ab"));
    let put = IngressRequest { method: "PUT", ..get("") };
    assert_eq!(c.ingress(&put).err(), Some(IngressError::NotSupported));
}

/// Run a fixture payload through a connector for its phone number id.
fn run(payload: &Value) -> IngressOutcome {
    let mut payload = payload.clone();
    let id = match payload.pointer_mut("/entry/0/changes/0/value/metadata/phone_number_id") {
        Some(Value::String(id)) if id.bytes().all(|b| b.is_ascii_digit()) => id.clone(),
        // A placeholder (`<BUSINESS_PHONE_NUMBER_ID>`): an id a config can hold.
        Some(id) => {
            *id = json!("1");
            "1".to_string()
        }
        None => "1".to_string(),
    };
    let c = connector_for(&id, "http://127.0.0.1:9");
    let body = serde_json::to_vec(&payload).unwrap();
    c.ingress(&post(&body, &signed(&body))).unwrap()
}

fn only_inbound(payload: &Value) -> parley_domain::InboundMessage {
    let out = run(payload);
    assert!(out.receipts.is_empty());
    assert_eq!(out.inbound.len(), 1, "{payload}");
    out.inbound.into_iter().next().unwrap()
}

#[test]
fn every_meta_webhook_example_is_read() {
    let examples = json_file(INBOUND);
    assert_eq!(examples.len(), 16);
    for (name, payload) in &examples {
        let out = run(payload);
        assert_eq!(out.reply, IngressReply::ok());
        if name.starts_with("Group ") {
            // Group lifecycle events are neither messages nor statuses.
            assert!(out.inbound.is_empty() && out.receipts.is_empty(), "{name}");
            continue;
        }
        let m = only_inbound(payload);
        let raw = payload.pointer("/entry/0/changes/0/value/messages/0").unwrap();
        assert_eq!(m.provider_message_id, raw["id"].as_str().unwrap(), "{name}");
        assert_eq!(m.from, format!("+{}", raw["from"].as_str().unwrap()), "{name}");
        assert_eq!(m.to.as_deref(), Some("+15550783881"), "{name}");
        let ts: i64 = raw["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(m.received_at, Millis(ts * 1000), "{name}");
        let expected = match name.as_str() {
            "Text Message" => Content::text("Does it come in another color?"),
            "Text Message with Context (Product Inquiry)" => Content::text("Is this still available?"),
            "Text Message from Click to WhatsApp Ad" => Content::text(raw["text"]["body"].as_str().unwrap()),
            "Reaction Message" => Content::Reaction {
                message_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0RTJEOTc2ODVERUY5RDlGNkYA".into(),
                emoji: "\u{1F44D}".into(),
            },
            "Image Message" => Content::Media {
                url: None,
                media_id: Some("1003383421387256".into()),
                kind: Some(MediaKind::Image),
                caption: Some("Taj Mahal".into()),
                mime_type: Some("image/jpeg".into()),
                filename: None,
            },
            "Location Message" => Content::Location {
                latitude: 37.44221496582,
                longitude: -122.16165924072,
                name: Some("Philz Coffee".into()),
                address: Some("101 Forest Ave, Palo Alto, CA 94301".into()),
            },
            "Button Message" => Content::Reply { text: "Unsubscribe".into(), payload: Some("Unsubscribe".into()) },
            "Interactive List Reply Message" => {
                Content::Reply { text: "Priority Mail Express".into(), payload: Some("priority_express".into()) }
            }
            "Interactive Button Reply Message" => {
                Content::Reply { text: "Cancel".into(), payload: Some("cancel-button".into()) }
            }
            "Contact Sharing Message" | "Unsupported Message" | "Order Message" | "System Message" => {
                let kind = raw["type"].as_str().unwrap();
                Content::Other { kind: kind.into(), raw: raw.clone() }
            }
            other => panic!("an example without an expectation: {other}"),
        };
        assert_eq!(m.content, expected, "{name}");
    }
}

#[test]
fn every_pywa_message_is_read_and_none_is_dropped() {
    for (name, payload) in json_file(PYWA_MESSAGE) {
        let m = only_inbound(&payload);
        let raw = payload.pointer("/entry/0/changes/0/value/messages/0").unwrap();
        assert_eq!(m.provider_message_id, raw["id"].as_str().unwrap(), "{name}");
        assert_eq!(m.from, "+972987654321", "{name}");
        assert_eq!(m.to.as_deref(), Some("+972123456789"), "{name}");
        match (name.as_str(), &m.content) {
            ("text" | "reply" | "forwarded" | "forwarded_many_times" | "referral", Content::Text { text, .. }) => {
                assert_eq!(text, raw["text"]["body"].as_str().unwrap(), "{name}")
            }
            (
                "image" | "media_with_url" | "video" | "document" | "audio" | "voice" | "static_sticker"
                | "animated_sticker",
                Content::Media { media_id, kind, mime_type, url, .. },
            ) => {
                let kind = kind.unwrap();
                let object = &raw[kind.as_str()];
                assert_eq!(raw["type"], kind.as_str(), "{name}");
                assert_eq!(media_id.as_deref(), object["id"].as_str(), "{name}");
                assert_eq!(mime_type.as_deref(), object["mime_type"].as_str(), "{name}");
                assert!(url.is_none());
            }
            ("reaction", Content::Reaction { emoji, message_id }) => {
                assert!(!emoji.is_empty());
                assert_eq!(message_id, raw["reaction"]["message_id"].as_str().unwrap());
            }
            ("unreaction_empty" | "unreaction_no_emoji", Content::Reaction { emoji, .. }) => assert_eq!(emoji, ""),
            ("current_location" | "chosen_location", Content::Location { latitude, longitude, .. }) => {
                assert_eq!(Some(*latitude), raw["location"]["latitude"].as_f64());
                assert_eq!(Some(*longitude), raw["location"]["longitude"].as_f64());
            }
            (
                "contacts" | "order" | "unsupported" | "unsupported_with_type" | "interactive_message_with_err",
                Content::Other { kind, raw: kept },
            ) => {
                assert_eq!(kind, raw["type"].as_str().unwrap(), "{name}");
                assert_eq!(kept, raw, "{name}: kept as received");
            }
            (name, content) => panic!("{name}: {content:?}"),
        }
    }
}

#[test]
fn pywa_replies_system_messages_and_echoes() {
    for (name, payload) in json_file(PYWA_BUTTON).into_iter().chain(json_file(PYWA_SELECTION)) {
        let m = only_inbound(&payload);
        match &m.content {
            Content::Reply { text, payload } => {
                assert_eq!(text, "title", "{name}");
                assert_eq!(payload.as_deref(), Some("callback_data"), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    for (name, payload) in json_file(PYWA_SYSTEM) {
        let m = only_inbound(&payload);
        assert!(matches!(&m.content, Content::Other { kind, .. } if kind == "system"), "{name}");
    }
    // Echoes of what the business sent from its app are not inbound messages.
    for (name, payload) in json_file(PYWA_ECHOES) {
        let out = run(&payload);
        assert!(out.inbound.is_empty() && out.receipts.is_empty(), "{name}");
    }
}

#[test]
fn every_pywa_status_becomes_a_receipt() {
    for (name, payload) in json_file(PYWA_STATUS) {
        let out = run(&payload);
        assert!(out.inbound.is_empty());
        assert_eq!(out.receipts.len(), 1, "{name}");
        let r = &out.receipts[0];
        let raw = payload.pointer("/entry/0/changes/0/value/statuses/0").unwrap();
        assert_eq!(r.provider_message_id, raw["id"].as_str().unwrap());
        let ts: i64 = raw["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(r.occurred_at, Millis(ts * 1000));
        let details = r.details.as_ref().unwrap();
        match name.as_str() {
            "sent" | "with_tracker" => assert_eq!(r.state, MessageState::Sent),
            "delivered" => assert_eq!(r.state, MessageState::Delivered),
            "read" | "played" | "group" => assert_eq!(r.state, MessageState::Read),
            "failed" => {
                assert_eq!(r.state, MessageState::Failed);
                let error = r.error.as_ref().unwrap();
                assert_eq!(error.code, "whatsapp:130472");
                assert!(error.detail.contains("experiment"));
                assert!(error.permanent);
                assert_eq!(details["errors"], raw["errors"]);
            }
            other => panic!("{other}"),
        }
        if r.state != MessageState::Failed {
            assert!(r.error.is_none());
        }
        for key in ["pricing", "conversation", "biz_opaque_callback_data", "errors", "recipient_id"] {
            assert_eq!(details.get(key), raw.get(key), "{name}: {key}");
        }
        assert_eq!(details["status"], raw["status"]);
    }
}

#[test]
fn one_post_may_carry_several_entries_changes_messages_and_statuses() {
    let value = |statuses: Value, messages: Value| {
        json!({"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
               "statuses": statuses, "messages": messages})
    };
    let status =
        |id: &str, s: &str| json!({"id": id, "status": s, "timestamp": "1700000000", "recipient_id": "16505551234"});
    let text = |id: &str| json!({"from": "16505551234", "id": id, "timestamp": "1700000001", "type": "text", "text": {"body": id}});
    let payload = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "w", "changes": [
            {"field": "messages", "value": value(json!([status("a", "sent"), status("a", "delivered")]), json!([text("m1"), text("m2")]))},
            {"field": "messages", "value": value(json!([status("b", "read"), status("c", "deleted")]), json!([]))}
        ]},
        {"id": "w", "changes": [
            {"field": "messages", "value": value(json!([]), json!([text("m3")]))},
            // Another number of the same business: not this account's.
            {"field": "messages", "value": {"metadata": {"phone_number_id": "2"}, "messages": [text("m4")]}}
        ]}
    ]});
    let out = run(&payload);
    let states: Vec<(String, MessageState)> =
        out.receipts.iter().map(|r| (r.provider_message_id.clone(), r.state)).collect();
    assert_eq!(
        states,
        vec![("a".into(), MessageState::Sent), ("a".into(), MessageState::Delivered), ("b".into(), MessageState::Read)]
    );
    let ids: Vec<&str> = out.inbound.iter().map(|m| m.provider_message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    // A future message type is kept, not dropped.
    let future = json!({"entry": [{"changes": [{"field": "messages", "value": {"messages": [
        {"from": "16505551234", "id": "x", "timestamp": "1", "type": "hologram", "hologram": {"depth": 3}}]}}]}]});
    let m = only_inbound(&future);
    assert!(
        matches!(m.content, Content::Other { ref kind, ref raw } if kind == "hologram" && raw["hologram"]["depth"] == 3)
    );
}
