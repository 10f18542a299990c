//! Conversations through the real server, on both backends: one customer writing on WhatsApp,
//! SMS and RCS is one contact with one conversation whose timeline is in order; replies go back on
//! the channel the customer last wrote from; assignment, hand-over and closing; idle conversations
//! close and the next message opens a new one; bad input.

mod common;

use common::*;
use parley_testkit::receiver::Receiver;
use parley_testkit::{Backend, TestApp, on_both_backends, webhook_test_config};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    one_customer_on_three_channels_is_one_contact_with_one_conversation,
    replies_go_to_the_channel_the_customer_last_wrote_from,
    assignment_hand_over_and_closing,
    idle_conversations_close_and_the_next_message_opens_another,
    conversation_requests_with_bad_input_are_refused,
    a_simulated_message_needs_a_sandbox_account_and_a_valid_sender,
    conversation_events_reach_webhooks_in_order_with_the_conversation,
    merging_contacts_with_open_conversations_keeps_both_histories,
);

const CUSTOMER: &str = "+4915123456789";

/// The customer writes `text` on `channel` (to the channel's default sandbox account).
async fn receive(app: &TestApp, channel: &str, from: &str, text: &str) -> Value {
    let account = default_account(app, channel).await;
    let body = json!({"from": from, "content": {"type": "text", "text": text}});
    let answer = post(app, &format!("/v1/channel-accounts/{account}/simulate-inbound"), &body).await;
    assert_eq!(answer.status, 201, "simulate an inbound {channel} message: {answer}");
    answer.json
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

async fn one_customer_on_three_channels_is_one_contact_with_one_conversation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let on_whatsapp = receive(&app, "whatsapp", CUSTOMER, "Hi, where is my order?").await;
    let on_sms = receive(&app, "sms", CUSTOMER, "Order 1234").await;
    let on_rcs = receive(&app, "rcs", CUSTOMER, "Any news?").await;

    let contact = str_of(&on_whatsapp, "contact_id");
    assert!(contact.starts_with("ctc_"), "{on_whatsapp}");
    let conversation = str_of(&on_whatsapp, "conversation_id");
    assert!(conversation.starts_with("cnv_"), "{on_whatsapp}");
    for m in [&on_sms, &on_rcs] {
        assert_eq!(str_of(m, "contact_id"), contact, "one person whatever the channel: {m}");
        assert_eq!(str_of(m, "conversation_id"), conversation, "one conversation across channels: {m}");
    }

    // The contact has the three identities.
    let c = get(&app, &format!("/v1/contacts/{contact}")).await;
    assert_eq!(c.status, 200, "{c}");
    let mut identities: Vec<String> =
        c.json["identities"].as_array().unwrap().iter().map(|i| str_of(i, "identity").to_string()).collect();
    identities.sort();
    assert_eq!(identities, [format!("rcs:{CUSTOMER}"), format!("sms:{CUSTOMER}"), format!("whatsapp:{CUSTOMER}")]);

    let got = get(&app, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(got.status, 200, "{got}");
    let cv = &got.json;
    assert_eq!((cv["status"].as_str(), cv["contact_id"].as_str()), (Some("open"), Some(contact)));
    assert_eq!(cv["message_count"], 3);
    assert_eq!((cv["last_channel"].as_str(), cv["last_inbound_channel"].as_str()), (Some("rcs"), Some("rcs")));
    let timeline = cv["timeline"].as_array().unwrap();
    let shape: Vec<String> = timeline
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "message" => format!("message:{}", e["message"]["channel"].as_str().unwrap()),
            _ => format!("activity:{}", e["activity"]["type"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(shape, ["activity:opened", "message:whatsapp", "message:sms", "message:rcs"], "{cv}");
    let ids: Vec<&str> = timeline[1..].iter().map(|e| e["message"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [str_of(&on_whatsapp, "id"), str_of(&on_sms, "id"), str_of(&on_rcs, "id")]);

    // Listed once, filterable by channel and contact.
    for query in ["", "?status=open", "?channel=sms", &format!("?contact_id={contact}")] {
        let list = get(&app, &format!("/v1/conversations{query}")).await;
        assert_eq!(list.status, 200, "{query}: {list}");
        let ids: Vec<&str> = list.json["data"].as_array().unwrap().iter().map(|c| str_of(c, "id")).collect();
        assert_eq!(ids, [conversation], "{query}");
    }
    let none = get(&app, "/v1/conversations?channel=webchat").await;
    assert_eq!(none.json["data"], json!([]), "{none}");
    app.finish().await;
}

async fn replies_go_to_the_channel_the_customer_last_wrote_from(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    receive(&app, "sms", CUSTOMER, "hello").await;
    let last = receive(&app, "whatsapp", CUSTOMER, "hello again").await;
    let conversation = str_of(&last, "conversation_id").to_string();

    let reply = post(
        &app,
        &format!("/v1/conversations/{conversation}/messages"),
        &json!({"content": {"type": "text", "text": "How can we help?"}}),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply}");
    let m = &reply.json;
    assert_eq!((m["channel"].as_str(), m["to"].as_str()), (Some("whatsapp"), Some(CUSTOMER)), "{m}");
    assert_eq!(m["conversation_id"].as_str(), Some(conversation.as_str()));
    assert_eq!(m["contact_id"], last["contact_id"]);
    assert_eq!(m["channel_account_id"], last["channel_account_id"], "the number the customer wrote to");
    let delivered = app.wait_for_status(str_of(m, "id"), &["delivered", "read"], Duration::from_secs(10)).await;
    assert_eq!(delivered["conversation_id"].as_str(), Some(conversation.as_str()));

    // On another channel when asked; the conversation follows the newest message.
    let on_sms = post(
        &app,
        &format!("/v1/conversations/{conversation}/messages"),
        &json!({"channel": "sms", "content": {"type": "text", "text": "Also by SMS"}}),
    )
    .await;
    assert_eq!(on_sms.status, 202, "{on_sms}");
    assert_eq!(on_sms.json["channel"], "sms");
    let cv = get(&app, &format!("/v1/conversations/{conversation}")).await.json;
    assert_eq!(cv["message_count"], 4, "{cv}");
    assert_eq!((cv["last_channel"].as_str(), cv["last_inbound_channel"].as_str()), (Some("sms"), Some("whatsapp")));

    // A channel the contact has no address on.
    post(
        &app,
        &format!("/v1/conversations/{conversation}/messages"),
        &json!({"channel": "webchat", "content": {"type": "text", "text": "?"}}),
    )
    .await
    .problem(422, "no_identity_for_channel");

    // Idempotent like any send.
    let keyed = |key: &'static str| {
        app.request(reqwest::Method::POST, &format!("/v1/conversations/{conversation}/messages"))
            .header("Idempotency-Key", key)
            .json(&json!({"content": {"type": "text", "text": "once"}}))
            .send()
    };
    let first = Answer::read(keyed("reply-1").await.unwrap()).await;
    let again = Answer::read(keyed("reply-1").await.unwrap()).await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(first.json["id"], again.json["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.finish().await;
}

async fn assignment_hand_over_and_closing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let first = receive(&app, "sms", CUSTOMER, "I need help").await;
    let conversation = str_of(&first, "conversation_id").to_string();
    let path = |action: &str| format!("/v1/conversations/{conversation}/{action}");

    let assigned = post(&app, &path("assign"), &json!({"assignee": {"kind": "bot", "id": "helper-bot"}})).await;
    assert_eq!(assigned.status, 200, "{assigned}");
    assert_eq!(assigned.json["assignee"], json!({"kind": "bot", "id": "helper-bot"}));
    let handed = post(
        &app,
        &path("handoff"),
        &json!({"to": {"kind": "agent", "id": "alice"}, "note": "Customer asks for a refund of order 1234"}),
    )
    .await;
    assert_eq!(handed.status, 200, "{handed}");
    assert_eq!(handed.json["assignee"], json!({"kind": "agent", "id": "alice"}));

    for (query, found) in
        [("agent:alice", true), ("agent", true), ("bot", false), ("none", false), ("agent:bob", false)]
    {
        let list = get(&app, &format!("/v1/conversations?assignee={query}")).await;
        assert_eq!(list.status, 200, "{list}");
        assert_eq!(list.json["data"].as_array().unwrap().len(), usize::from(found), "assignee={query}: {list}");
    }

    let closed = post(&app, &path("close"), &json!({})).await;
    assert_eq!(closed.status, 200, "{closed}");
    assert_eq!(
        (closed.json["status"].as_str(), closed.json["close_reason"].as_str()),
        (Some("closed"), Some("closed"))
    );
    let again = post(&app, &path("close"), &json!({})).await;
    assert_eq!(
        (again.status, &again.json["closed_at"]),
        (200, &closed.json["closed_at"]),
        "closing twice changes nothing"
    );
    post(&app, &path("assign"), &json!({"assignee": null})).await.problem(409, "conversation_closed");

    let activities: Vec<Value> = get(&app, &format!("/v1/conversations/{conversation}")).await.json["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "activity")
        .map(|e| e["activity"].clone())
        .collect();
    let kinds: Vec<&str> = activities.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["opened", "assigned", "handed_off", "closed"]);
    assert_eq!(activities[2]["note"], "Customer asks for a refund of order 1234");
    assert_eq!(activities[3]["reason"], "closed");

    // The next message opens a new conversation; the contact's are listed newest first.
    let next = receive(&app, "sms", CUSTOMER, "Hello?").await;
    let second = str_of(&next, "conversation_id");
    assert_ne!(second, conversation);
    let list = get(&app, &format!("/v1/conversations?contact_id={}", str_of(&first, "contact_id"))).await;
    let ids: Vec<&str> = list.json["data"].as_array().unwrap().iter().map(|c| str_of(c, "id")).collect();
    assert_eq!(ids, [second, conversation.as_str()]);
    let open = get(&app, "/v1/conversations?status=closed").await;
    assert_eq!(open.json["data"].as_array().unwrap().len(), 1, "{open}");
    app.finish().await;
}

async fn idle_conversations_close_and_the_next_message_opens_another(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.conversation_idle_seconds = 1).await else { return };
    let first = receive(&app, "sms", CUSTOMER, "one").await;
    let conversation = str_of(&first, "conversation_id").to_string();
    // Within the idle time: the same conversation.
    let second = receive(&app, "sms", CUSTOMER, "two").await;
    assert_eq!(str_of(&second, "conversation_id"), conversation);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let third = receive(&app, "sms", CUSTOMER, "three").await;
    let reopened = str_of(&third, "conversation_id").to_string();
    assert_ne!(reopened, conversation, "after the idle time a new conversation opens");
    let old = get(&app, &format!("/v1/conversations/{conversation}")).await.json;
    assert_eq!((old["status"].as_str(), old["close_reason"].as_str()), (Some("closed"), Some("idle")), "{old}");
    assert_eq!(millis(&old["closed_at"]), millis(&old["last_message_at"]) + 1000, "closed when it became idle");
    assert_eq!(old["message_count"], 2);

    // The idle closer ends the new one without another message.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = get(&app, &format!("/v1/conversations/{reopened}")).await.json;
        if now["status"] == "closed" {
            assert_eq!(now["close_reason"], "idle");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the idle closer did not close it: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.finish().await;
}

async fn conversation_requests_with_bad_input_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let m = receive(&app, "sms", CUSTOMER, "hi").await;
    let conversation = str_of(&m, "conversation_id").to_string();
    get(&app, "/v1/conversations/cnv_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b").await.problem(404, "not_found");
    get(&app, "/v1/conversations/not-an-id").await.problem(404, "not_found");
    post(&app, "/v1/conversations/cnv_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b/close", &json!({}))
        .await
        .problem(404, "not_found");
    let assign = format!("/v1/conversations/{conversation}/assign");
    let a = post(&app, &assign, &json!({"assignee": {"kind": "robot", "id": "x"}})).await;
    assert_eq!(a.status, 422, "{a}");
    post(&app, &assign, &json!({"assignee": {"kind": "agent", "id": ""}})).await.problem(422, "validation_failed");
    let handoff = format!("/v1/conversations/{conversation}/handoff");
    post(&app, &handoff, &json!({"to": {"kind": "agent", "id": "alice"}, "note": "  "}))
        .await
        .problem(422, "validation_failed")
        .names("note");
    let r =
        post(&app, &format!("/v1/conversations/{conversation}/messages"), &json!({"content": {"type": "text"}})).await;
    assert_eq!(r.status, 422, "{r}");
    get(&app, "/v1/conversations?assignee=robot").await.problem(400, "invalid_query");
    get(&app, "/v1/conversations?contact_id=nope").await.problem(400, "invalid_query");
    get(&app, "/v1/conversations?status=pending").await.problem(400, "invalid_query");
    app.finish().await;
}

async fn a_simulated_message_needs_a_sandbox_account_and_a_valid_sender(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let sms = default_account(&app, "sms").await;
    let path = format!("/v1/channel-accounts/{sms}/simulate-inbound");
    post(&app, &path, &json!({"from": "12", "content": {"type": "text", "text": "x"}}))
        .await
        .problem(422, "invalid_phone_number");
    post(
        &app,
        "/v1/channel-accounts/cha_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b/simulate-inbound",
        &json!({"from": CUSTOMER, "content": {"type": "text", "text": "x"}}),
    )
    .await
    .problem(404, "not_found");
    // A real provider's account receives from its provider only.
    let twilio = post(
        &app,
        "/v1/channel-accounts",
        &json!({"channel": "sms", "provider": "twilio", "name": "Twilio",
                "config": {"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006",
                           "base_url": "http://127.0.0.1:9"},
                "credentials": {"auth_token": "secret-token-0000"}}),
    )
    .await;
    assert_eq!(twilio.status, 201, "{twilio}");
    let twilio = str_of(&twilio.json, "id");
    post(
        &app,
        &format!("/v1/channel-accounts/{twilio}/simulate-inbound"),
        &json!({"from": CUSTOMER, "content": {"type": "text", "text": "x"}}),
    )
    .await
    .problem(422, "not_sandbox_account");
    app.finish().await;
}

async fn conversation_events_reach_webhooks_in_order_with_the_conversation(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, webhook_test_config).await else { return };
    let receiver = Receiver::start().await;
    let endpoint = post(
        &app,
        "/v1/webhook-endpoints",
        &json!({"url": receiver.url("/hooks"), "event_types": ["conversation.*", "message.received"]}),
    )
    .await;
    assert_eq!(endpoint.status, 201, "{endpoint}");
    let secret = str_of(&endpoint.json, "secret").to_string();

    let m = receive(&app, "whatsapp", CUSTOMER, "Hello").await;
    let conversation = str_of(&m, "conversation_id").to_string();
    let path = |action: &str| format!("/v1/conversations/{conversation}/{action}");
    let handoff = json!({"to": {"kind": "agent", "id": "alice"}, "note": "VIP"});
    assert_eq!(post(&app, &path("handoff"), &handoff).await.status, 200);
    assert_eq!(post(&app, &path("close"), &json!({})).await.status, 200);

    let mut received = receiver.wait_until(Duration::from_secs(10), "4 events", |r| r.len() >= 4).await;
    // Deliveries may overlap; event ids grow with time, so they give the order of the changes.
    received.sort_by_key(|r| r.webhook_id.clone());
    let types: Vec<String> = received.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["conversation.opened", "message.received", "conversation.assigned", "conversation.closed"]);
    for r in &received {
        assert!(r.signed_with(&secret));
        let body = r.json();
        assert_eq!(body["workspace_id"], app.workspace_id.to_string());
        if body["type"] != "message.received" {
            assert_eq!(body["data"]["conversation"]["id"], conversation.as_str(), "{body}");
        }
    }
    let assigned = received[2].json();
    assert_eq!(assigned["data"]["conversation"]["assignee"], json!({"kind": "agent", "id": "alice"}));
    assert_eq!(assigned["data"]["note"], "VIP");
    assert_eq!(received[3].json()["data"]["conversation"]["status"], "closed");
    app.finish().await;
}

async fn merging_contacts_with_open_conversations_keeps_both_histories(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    const OTHER: &str = "+4915198765432";
    let a1 = receive(&app, "sms", CUSTOMER, "from my first phone").await;
    let b1 = receive(&app, "whatsapp", OTHER, "from my second phone").await;
    receive(&app, "sms", CUSTOMER, "first phone again").await;
    let (survivor, absorbed) = (str_of(&a1, "contact_id").to_string(), str_of(&b1, "contact_id").to_string());
    assert_ne!(survivor, absorbed);
    let (kept, merged_away) = (str_of(&a1, "conversation_id").to_string(), str_of(&b1, "conversation_id").to_string());

    let merged = post(&app, &format!("/v1/contacts/{survivor}/merge"), &json!({"contact_id": absorbed})).await;
    assert_eq!(merged.status, 200, "{merged}");

    // Both conversations are the survivor's now; only one stays open.
    let list = get(&app, &format!("/v1/conversations?contact_id={survivor}")).await;
    let mut ids: Vec<&str> = list.json["data"].as_array().unwrap().iter().map(|c| str_of(c, "id")).collect();
    ids.sort();
    let mut expected = [kept.as_str(), merged_away.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "{list}");
    let closed = get(&app, &format!("/v1/conversations/{merged_away}")).await.json;
    assert_eq!((closed["status"].as_str(), closed["close_reason"].as_str()), (Some("closed"), Some("merged")));
    assert_eq!(closed["contact_id"].as_str(), Some(survivor.as_str()));
    let history: Vec<&str> = closed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["message"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(history, [str_of(&b1, "id")], "the absorbed contact's history is kept");
    let open = get(&app, &format!("/v1/conversations/{kept}")).await.json;
    assert_eq!((open["status"].as_str(), open["message_count"].as_i64()), (Some("open"), Some(2)));
    let old_message = message(&app, str_of(&b1, "id")).await;
    assert_eq!(old_message["contact_id"].as_str(), Some(survivor.as_str()), "messages follow the merge");

    // The absorbed number now writes into the survivor's open conversation.
    let b2 = receive(&app, "whatsapp", OTHER, "second phone again").await;
    assert_eq!((str_of(&b2, "contact_id"), str_of(&b2, "conversation_id")), (survivor.as_str(), kept.as_str()));
    app.finish().await;
}
