//! `channel: "auto"` through the real server, on both backends: the contact's preference first,
//! then WhatsApp while its window is open (or for a template), else the next channel the contact
//! can be reached on; the `accepted` event says which and why; no channel left is a clear 422.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    auto_uses_whatsapp_while_the_window_is_open_and_sms_after,
    the_contacts_preference_and_the_content_decide,
    no_reachable_channel_is_a_clear_refusal,
);

const NUMBER: &str = "+4915123456789";

async fn contact_with(app: &TestApp, body: Value) -> String {
    let c = post(app, "/v1/contacts", &body).await;
    assert_eq!(c.status, 201, "{c}");
    c.json["id"].as_str().unwrap().to_string()
}

async fn send_auto(app: &TestApp, contact: &str, content: Value) -> Answer {
    post(app, "/v1/messages", &json!({"contact_id": contact, "channel": "auto", "content": content})).await
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// The routing the message's `accepted` event records.
async fn routing_of(app: &TestApp, id: &str) -> Value {
    let m = message(app, id).await;
    event(&m, "accepted", 0)["details"]["routing"].clone()
}

async fn auto_uses_whatsapp_while_the_window_is_open_and_sms_after(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact =
        contact_with(&app, json!({"identities": [format!("whatsapp:{NUMBER}"), format!("sms:{NUMBER}")]})).await;

    // Nobody wrote on WhatsApp yet: free-form text goes by SMS, and the event says why.
    let first = send_auto(&app, &contact, text("Your parcel is on its way")).await;
    assert_eq!(first.status, 202, "{first}");
    assert_eq!((first.json["channel"].as_str(), first.json["to"].as_str()), (Some("sms"), Some(NUMBER)));
    let routing = routing_of(&app, first.json["id"].as_str().unwrap()).await;
    assert_eq!(
        routing,
        json!({"mode": "auto", "channel": "sms", "passed_over": {"whatsapp": "whatsapp_window_closed", "rcs": "no_identity"}})
    );
    // A template needs no window.
    let template =
        send_auto(&app, &contact, json!({"type": "template", "name": "order_update", "language": "en"})).await;
    assert_eq!((template.status, template.json["channel"].as_str()), (202, Some("whatsapp")), "{template}");

    // The customer writes on WhatsApp: the window opens.
    let whatsapp = default_account(&app, "whatsapp").await;
    let hello = post(
        &app,
        &format!("/v1/channel-accounts/{whatsapp}/simulate-inbound"),
        &json!({"from": NUMBER, "content": text("hello")}),
    )
    .await;
    assert_eq!(hello.status, 201, "{hello}");
    assert_eq!(hello.json["contact_id"].as_str(), Some(contact.as_str()));
    let second = send_auto(&app, &contact, text("Thanks for writing")).await;
    assert_eq!(second.status, 202, "{second}");
    assert_eq!(second.json["channel"], "whatsapp");
    assert_eq!(routing_of(&app, second.json["id"].as_str().unwrap()).await["passed_over"], json!({}));
    let delivered = app.wait_for_status(second.json["id"].as_str().unwrap(), &["delivered", "read"], WAIT).await;
    assert_eq!(delivered["contact_id"].as_str(), Some(contact.as_str()));
    app.finish().await;
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn the_contacts_preference_and_the_content_decide(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact = contact_with(
        &app,
        json!({"identities": [format!("whatsapp:{NUMBER}"), format!("sms:{NUMBER}"), "webchat:visitor-42"],
               "preferred_channels": ["webchat", "sms"]}),
    )
    .await;
    let first = send_auto(&app, &contact, text("Hi")).await;
    assert_eq!((first.status, first.json["channel"].as_str()), (202, Some("webchat")), "{first}");
    assert_eq!(first.json["to"], "visitor-42");
    // Content SMS cannot carry skips it.
    let buttons = json!({"type": "interactive", "body": "Pick one",
        "action": {"type": "buttons", "buttons": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}});
    let only_rich = contact_with(
        &app,
        json!({"identities": ["sms:+4915199990000", "webchat:visitor-43"], "preferred_channels": ["sms"]}),
    )
    .await;
    let routed = send_auto(&app, &only_rich, buttons).await;
    assert_eq!((routed.status, routed.json["channel"].as_str()), (202, Some("webchat")), "{routed}");
    let routing = routing_of(&app, routed.json["id"].as_str().unwrap()).await;
    // Its preference (SMS) first, then the default order up to web chat.
    let passed_over = json!({"sms": "content_not_supported", "whatsapp": "no_identity", "rcs": "no_identity"});
    assert_eq!(routing["passed_over"], passed_over, "{routing}");
    app.finish().await;
}

async fn no_reachable_channel_is_a_clear_refusal(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact = contact_with(&app, json!({"identities": [format!("whatsapp:{NUMBER}")]})).await;
    let refused = send_auto(&app, &contact, text("Anyone there?")).await;
    refused.problem(422, "no_route");
    let mut names = refused.param_names();
    names.sort();
    assert_eq!(names, ["channel.rcs", "channel.sms", "channel.webchat", "channel.whatsapp"], "{refused}");
    assert!(refused.to_string().contains("whatsapp_window_closed"), "{refused}");
    assert_eq!(all_messages(&app, "").await.len(), 0, "nothing stored");

    // auto needs a contact, and picks the accounts itself.
    post(&app, "/v1/messages", &json!({"to": NUMBER, "channel": "auto", "content": text("x")}))
        .await
        .problem(422, "validation_failed")
        .names("channel");
    let with_account = json!({"contact_id": contact, "channel": "auto", "content": text("x"),
                              "channel_account_id": "cha_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b"});
    post(&app, "/v1/messages", &with_account).await.problem(422, "validation_failed").names("channel");
    send_auto(&app, "ctc_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b", text("x")).await.problem(422, "contact_not_found");
    app.finish().await;
}
