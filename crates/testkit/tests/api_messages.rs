//! Sending messages through the real HTTP API: normalisation, delivery timelines, content, batches
//! and idempotency, on both backends. Listing and canceling are in `api_list_cancel.rs`.

mod common;

use common::*;
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

on_both_backends!(
    send_normalises_the_number_and_the_message_is_delivered,
    every_channel_reaches_its_last_receipt,
    metadata_and_client_reference_round_trip,
    template_and_media_content_are_accepted,
    content_without_its_type_is_read_from_its_fields,
    batch_answers_per_item,
    batch_limits,
    idempotent_replay_returns_the_original_answer,
    idempotent_replay_points_at_the_original_message,
    idempotency_keys_are_per_workspace,
    concurrent_requests_with_one_key_create_one_message,
    content_a_channel_cannot_carry_is_refused,
    a_reaction_to_a_parley_message_names_its_provider_id,
    sms_show_their_segments_and_encoding,
);

const WAIT: Duration = Duration::from_secs(10);

async fn send_normalises_the_number_and_the_message_is_delivered(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = post(&app, "/v1/messages", &text_to("sms", "+49 151 23456789", "Your code is 123456")).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.header("idempotent-replayed").is_none(), "a first answer is not a replay");
    let m = &a.json;
    let id = id_of(m);
    assert!(id.starts_with("msg_"), "{id}");
    assert_eq!(a.header("location"), Some(format!("/v1/messages/{id}").as_str()));
    assert_eq!(m["to"], "+4915123456789");
    assert_eq!(m["channel"], "sms");
    assert_eq!(m["direction"], "outbound");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["content"], json!({"type": "text", "text": "Your code is 123456"}));
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["sequence"], 2);
    assert_eq!(m["validity_seconds"], 172_800, "default validity is 48 h");
    assert!(m["workspace_id"].as_str().is_some_and(|w| w.starts_with("wsp_")), "{m}");
    assert!(m["channel_account_id"].as_str().is_some_and(|c| c.starts_with("cha_")), "{m}");
    let created = millis(&m["created_at"]);
    assert_eq!(millis(&m["expires_at"]) - created, 172_800_000);
    assert!(m.get("events").is_none(), "the 202 carries no timeline");

    // The same number written nationally with a default region.
    let national = send(
        &app,
        &json!({"to": "0151 23456789", "default_region": "DE", "channel": "sms", "content": {"type": "text", "text": "hi"}}),
    )
    .await;
    assert_eq!(national["to"], "+4915123456789");
    // Lower-case regions are fine too.
    let lower = send(
        &app,
        &json!({"to": "(0151) 2345-6789", "default_region": "de", "channel": "sms", "content": {"type": "text", "text": "hi"}}),
    )
    .await;
    assert_eq!(lower["to"], "+4915123456789");

    let done = app.wait_for_status(&id, &["delivered"], WAIT).await;
    assert_timeline_contiguous(&done);
    assert_eq!(kinds(&done), ["accepted", "queued", "sending", "sent", "delivered"]);
    assert!(events(&done).iter().all(|e| e["applied"] == true), "every event moved the state: {done:#}");
    assert_eq!(done["attempts"], 1);
    let provider_id = done["provider_message_id"].as_str().expect("provider id after sending");
    assert!(provider_id.starts_with("sbx_"), "{provider_id}");
    let sent = &events(&done)[3];
    assert_eq!(sent["attempt"], 1);
    assert_eq!(sent["provider_message_id"], provider_id);
    assert!(done.get("error").is_none(), "{done}");
    // Timestamps are ordered along the timeline.
    let times: Vec<i64> = events(&done).iter().map(|e| millis(&e["recorded_at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn every_channel_reaches_its_last_receipt(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let mut sent = Vec::new();
    for (channel, to) in
        [("whatsapp", "+12025550150"), ("rcs", "+1 202-555-0151"), ("webchat", "visitor-42"), ("sms", "+12025550152")]
    {
        let m = send(&app, &text_to(channel, to, "hello")).await;
        sent.push((channel, id_of(&m)));
    }
    for (channel, id) in sent {
        let last = if channel == "sms" { "delivered" } else { "read" };
        let m = app.wait_for_status(&id, &[last], WAIT).await;
        assert_eq!(m["channel"], channel);
        assert_timeline_contiguous(&m);
        let mut expected = vec!["accepted", "queued", "sending", "sent", "delivered"];
        if channel != "sms" {
            expected.push("read");
        }
        assert_eq!(kinds(&m), expected, "{channel}");
        assert_eq!(ledger_count(&app, &id), 1, "{channel} handed over once");
    }
    // SMS has no read receipts: it stays delivered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sms = all_messages(&app, "&channel=sms").await;
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0]["status"], "delivered");
    app.finish().await;
}

async fn metadata_and_client_reference_round_trip(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let metadata = json!({"order": "A-17", "ünïcødé": "✓ 日本語", "empty_value": ""});
    let body = json!({
        "to": "+12025550150", "channel": "whatsapp", "content": {"type": "text", "text": "Shipped 📦"},
        "metadata": metadata, "client_reference": "crm-4711", "validity_seconds": 600,
    });
    let m = send(&app, &body).await;
    assert_eq!(m["metadata"], metadata);
    assert_eq!(m["client_reference"], "crm-4711");
    assert_eq!(m["validity_seconds"], 600);
    assert_eq!(m["content"]["text"], "Shipped 📦");
    let id = id_of(&m);
    let read = app.wait_for_status(&id, &["read"], WAIT).await;
    assert_eq!(read["metadata"], metadata);
    assert_eq!(read["client_reference"], "crm-4711");
    assert_eq!(read["content"], m["content"]);
    let listed = all_messages(&app, "").await;
    assert_eq!(listed[0]["metadata"], metadata);
    assert_eq!(listed[0]["client_reference"], "crm-4711");

    // Unset optional fields are omitted, never empty strings.
    let plain = send(&app, &text_to("sms", "+12025550150", "x")).await;
    assert!(plain.get("client_reference").is_none(), "{plain}");
    assert_eq!(plain["metadata"], json!({}));
    app.finish().await;
}

async fn template_and_media_content_are_accepted(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let template = json!({"type": "template", "name": "order_shipped", "language": "en_US", "variables": {"1": "A-17", "name": "Ada"}});
    let m = send(&app, &json!({"to": "+12025550150", "channel": "whatsapp", "content": template})).await;
    assert_eq!(m["content"], template);
    let media = json!({"type": "media", "url": "https://cdn.example.com/a.jpg", "caption": "Your receipt", "mime_type": "image/jpeg"});
    let m2 = send(&app, &json!({"to": "+12025550150", "channel": "rcs", "content": media})).await;
    assert_eq!(m2["content"], media);
    for id in [id_of(&m), id_of(&m2)] {
        let done = app.wait_for_status(&id, &["read"], WAIT).await;
        assert_timeline_contiguous(&done);
    }

    let a = post(
        &app,
        "/v1/messages",
        &json!({"to": "+12025550150", "channel": "whatsapp", "content": {"type": "media", "url": "http://cdn.example.com/a.jpg"}}),
    )
    .await;
    a.problem(422, "validation_failed").names("content.url");
    let a = post(
        &app,
        "/v1/messages",
        &json!({"to": "+12025550150", "channel": "whatsapp", "content": {"type": "template", "name": "Bad Name", "language": "en"}}),
    )
    .await;
    a.problem(422, "validation_failed").names("content.name");
    let a = post(
        &app,
        "/v1/messages",
        &json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "  "}}),
    )
    .await;
    a.problem(422, "validation_failed").names("content.text");
    assert_eq!(all_messages(&app, "").await.len(), 2, "refused sends store nothing");
    app.finish().await;
}

async fn batch_answers_per_item(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let body = json!({"messages": [
        text_to("sms", "+12025550150", "zero"),
        text_to("sms", "12345", "one"),
        text_to("whatsapp", "+12025550151", "two"),
        {"to": "+12025550152", "channel": "sms", "content": {"type": "text", "text": "three"}, "colour": "red"},
        text_to("webchat", "visitor-4", "four"),
    ]});
    let a = post(&app, "/v1/messages/batch", &body).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.json["accepted"], 3);
    assert_eq!(a.json["rejected"], 2);
    let items = a.json["data"].as_array().expect("data");
    assert_eq!(items.len(), 5);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
    }
    let statuses: Vec<_> = items.iter().map(|i| i["status"].as_u64().unwrap_or(0)).collect();
    assert_eq!(statuses, [202, 422, 202, 422, 202]);
    assert_eq!(items[1]["error"]["code"], "invalid_phone_number");
    assert_eq!(items[1]["error"]["invalid_params"][0]["name"], "messages[1].to");
    assert!(items[1].get("message").is_none());
    assert_eq!(items[3]["error"]["code"], "unknown_field");
    assert_eq!(items[3]["error"]["invalid_params"][0]["name"], "messages[3].colour");
    let texts = ["zero", "two", "four"];
    for (item, text) in [&items[0], &items[2], &items[4]].into_iter().zip(texts) {
        let m = &item["message"];
        assert_eq!(m["content"]["text"], text);
        assert_eq!(m["status"], "queued");
        assert!(item.get("error").is_none());
        let stored = message(&app, m["id"].as_str().expect("id")).await;
        assert_eq!(stored["content"]["text"], text);
    }
    assert_eq!(all_messages(&app, "").await.len(), 3);
    for item in [&items[0], &items[2], &items[4]] {
        let id = item["message"]["id"].as_str().expect("id");
        let last = if item["message"]["channel"] == "sms" { "delivered" } else { "read" };
        app.wait_for_status(id, &[last], WAIT).await;
    }

    // Nothing valid: one problem naming every item's fault, and nothing stored.
    let a = post(
        &app,
        "/v1/messages/batch",
        &json!({"messages": [text_to("sms", "12345", "a"), {"to": "+12025550150", "channel": "fax", "content": {"type": "text", "text": "b"}}]}),
    )
    .await;
    a.problem(422, "validation_failed").names("messages[0].to").names("messages[1].channel");
    assert_eq!(all_messages(&app, "").await.len(), 3);
    app.finish().await;
}

async fn batch_limits(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let many: Vec<Value> = (0..1001).map(|i| text_to("sms", "+12025550150", &format!("n{i}"))).collect();
    let a = post(&app, "/v1/messages/batch", &json!({"messages": many})).await;
    a.problem(422, "too_many_messages").names("messages");
    let a = post(&app, "/v1/messages/batch", &json!({"messages": []})).await;
    a.problem(422, "validation_failed").names("messages");
    let a = post(&app, "/v1/messages/batch", &json!({})).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_problem_shape(&a);
    let a = post(&app, "/v1/messages/batch", &json!({"messages": "all of them"})).await;
    a.problem(422, "validation_failed").names("messages");
    assert!(all_messages(&app, "").await.is_empty());

    // Exactly 1,000 is fine.
    let thousand: Vec<Value> = (0..1000).map(|i| text_to("sms", "+12025550150", &format!("n{i}"))).collect();
    let a = post(&app, "/v1/messages/batch", &json!({"messages": thousand})).await;
    assert_eq!(a.status, 202, "{}", a.text.chars().take(500).collect::<String>());
    assert_eq!(a.json["accepted"], 1000);
    assert_eq!(all_messages(&app, "").await.len(), 1000);
    app.finish().await;
}

async fn post_with_key(app: &TestApp, auth: &str, path: &str, key: &str, body: &str) -> Answer {
    let response = app
        .http
        .post(app.url(path))
        .bearer_auth(auth)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    Answer::read(response).await
}

async fn idempotent_replay_returns_the_original_answer(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let key = &app.admin_key;
    let body = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "once"}}"#;
    let first = post_with_key(&app, key, "/v1/messages", "order-17-shipped", body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let id = id_of(&first.json);

    // The same request again, formatted differently: the very same answer, marked as a replay.
    let reformatted = r#"{"content":{"text":"once","type":"text"},"channel":"sms","to":"+12025550150"}"#;
    for body in [body, reformatted] {
        let again = post_with_key(&app, key, "/v1/messages", "order-17-shipped", body).await;
        assert_eq!(again.status, 202, "{}", again.text);
        assert_eq!(again.text, first.text, "the replay is byte-identical");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    // Even after the message moved on, the replay is the original 202 body.
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    let late = post_with_key(&app, key, "/v1/messages", "order-17-shipped", body).await;
    assert_eq!(late.text, first.text);
    assert_eq!(all_messages(&app, "").await.len(), 1, "replays create nothing");

    // Same key, different request.
    let other = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "twice"}}"#;
    let reused = post_with_key(&app, key, "/v1/messages", "order-17-shipped", other).await;
    reused.problem(422, "idempotency_key_reused").names("Idempotency-Key");
    // The same body on the batch route is a different request too.
    let batch = format!(r#"{{"messages": [{body}]}}"#);
    let reused = post_with_key(&app, key, "/v1/messages/batch", "order-17-shipped", &batch).await;
    reused.problem(422, "idempotency_key_reused");
    assert_eq!(all_messages(&app, "").await.len(), 1);

    // A batch replays as a whole.
    let b1 = post_with_key(&app, key, "/v1/messages/batch", "batch-1", &batch).await;
    assert_eq!(b1.status, 202, "{}", b1.text);
    let b2 = post_with_key(&app, key, "/v1/messages/batch", "batch-1", &batch).await;
    assert_eq!(b2.status, 202);
    assert_eq!(b2.text, b1.text);
    assert_eq!(b2.header("idempotent-replayed"), Some("true"));
    assert_eq!(all_messages(&app, "").await.len(), 2);

    // A refused request is not remembered: the key can be used once the request is fixed.
    let bad = r#"{"to": "12345", "channel": "sms", "content": {"type": "text", "text": "x"}}"#;
    let refused = post_with_key(&app, key, "/v1/messages", "fix-me", bad).await;
    refused.problem(422, "invalid_phone_number");
    let fixed = post_with_key(&app, key, "/v1/messages", "fix-me", body).await;
    assert_eq!(fixed.status, 202, "{}", fixed.text);
    assert!(fixed.header("idempotent-replayed").is_none());

    // Keys must be 1 to 255 visible ASCII characters.
    let long = "k".repeat(256);
    let a = post_with_key(&app, key, "/v1/messages", &long, body).await;
    a.problem(400, "invalid_header").names("Idempotency-Key");
    let a = post_with_key(&app, key, "/v1/messages", "has space", body).await;
    a.problem(400, "invalid_header");
    assert_eq!(all_messages(&app, "").await.len(), 3);
    app.finish().await;
}

async fn idempotent_replay_points_at_the_original_message(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let body = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "once"}}"#;
    let first = post_with_key(&app, &app.admin_key, "/v1/messages", "k-location", body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let location = format!("/v1/messages/{}", id_of(&first.json));
    assert_eq!(first.header("location"), Some(location.as_str()));
    let again = post_with_key(&app, &app.admin_key, "/v1/messages", "k-location", body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text);
    let replayed_location = again.header("location").map(str::to_string);
    // Following the replay's Location must find the message.
    if let Some(l) = &replayed_location {
        let followed = get(&app, l).await;
        assert_eq!(followed.status, 200, "the replay's Location {l} leads nowhere: {followed}");
    }
    assert_eq!(replayed_location.as_deref(), Some(location.as_str()), "the replay points at the original message");
    app.finish().await;
}

async fn idempotency_keys_are_per_workspace(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let (b, _) = app.engine.create_workspace("B").await.expect("workspace B");
    let b_key = app.engine.create_api_key(b.id, "b", vec![parley_domain::Scope::Admin]).await.expect("key").secret;
    let body = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "same"}}"#;
    let a1 = post_with_key(&app, &app.admin_key, "/v1/messages", "shared-key", body).await;
    let b1 = post_with_key(&app, &b_key, "/v1/messages", "shared-key", body).await;
    assert_eq!(a1.status, 202, "{}", a1.text);
    assert_eq!(b1.status, 202, "{}", b1.text);
    assert!(b1.header("idempotent-replayed").is_none(), "B never used this key");
    assert_ne!(a1.json["id"], b1.json["id"]);
    assert_eq!(b1.json["workspace_id"], b.id.to_string());
    // And a different body under the same key in B is B's own business.
    let b2 = post_with_key(&app, &b_key, "/v1/messages", "shared-key", body).await;
    assert_eq!(b2.text, b1.text);
    assert_eq!(b2.header("idempotent-replayed"), Some("true"));
    assert_eq!(all_messages(&app, "").await.len(), 1);
    app.finish().await;
}

async fn concurrent_requests_with_one_key_create_one_message(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let body = r#"{"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "race"}}"#;
    let requests = (0..50).map(|_| {
        let request = app
            .http
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .header("idempotency-key", "the-race")
            .body(body);
        tokio::spawn(async move { Answer::read(request.send().await.expect("POST")).await })
    });
    let answers: Vec<Answer> =
        futures::future::join_all(requests).await.into_iter().map(|r| r.expect("request task")).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(statuses.iter().all(|s| *s == 202), "every racer gets 202: {statuses:?} {}", answers[0].text);
    let ids: HashSet<String> = answers.iter().map(|a| id_of(&a.json)).collect();
    assert_eq!(ids.len(), 1, "one message id for all: {ids:?}");
    let replays = answers.iter().filter(|a| a.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replays, 49, "all but the first are replays");
    let listed = all_messages(&app, "").await;
    assert_eq!(listed.len(), 1, "exactly one message exists");
    let id = id_of(&listed[0]);
    assert!(ids.contains(&id));
    app.wait_for_status(&id, &["delivered"], WAIT).await;
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn content_without_its_type_is_read_from_its_fields(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    // The body a plain client (and the shared HTTP benchmark) sends: no `type` in `content`.
    let m = send(
        &app,
        &json!({"to": "+14155550123", "channel": "sms", "content": {"text": "Your order #1234 has shipped."}}),
    )
    .await;
    assert_eq!(m["content"], json!({"type": "text", "text": "Your order #1234 has shipped."}));
    let m = send(
        &app,
        &json!({"to": "+14155550123", "channel": "whatsapp", "content": {"url": "https://cdn.example/a.jpg"}}),
    )
    .await;
    assert_eq!(m["content"]["type"], "media");
    let a = post(
        &app,
        "/v1/messages",
        &json!({"to": "+14155550123", "channel": "sms", "content": {"text": "x", "url": "https://cdn.example/a.jpg"}}),
    )
    .await;
    a.problem(422, "unknown_field").names("content.text");
    app.finish().await;
}

async fn content_a_channel_cannot_carry_is_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let refused = [
        ("sms", json!({"type": "template", "name": "order_shipped", "language": "en"})),
        ("sms", json!({"type": "location", "latitude": 52.52, "longitude": 13.40})),
        ("rcs", json!({"type": "template", "name": "order_shipped", "language": "en"})),
        (
            "whatsapp",
            json!({"type": "text", "text": "pick one", "suggestions": [{"type": "reply", "text": "Yes", "postback_data": "yes"}]}),
        ),
    ];
    for (channel, content) in refused {
        let a =
            post(&app, "/v1/messages", &json!({"to": "+12025550150", "channel": channel, "content": content})).await;
        a.problem(422, "content_not_supported").names("content");
    }
    // Inbound-only content is refused on every channel.
    let reply = json!({"to": "+12025550150", "channel": "webchat", "content": {"type": "reply", "text": "Yes"}});
    assert_eq!(post(&app, "/v1/messages", &reply).await.status, 422);
    assert!(all_messages(&app, "").await.is_empty());
    let location = json!({"type": "location", "latitude": 52.52, "longitude": 13.40, "name": "Office"});
    let m = send(&app, &json!({"to": "+12025550150", "channel": "whatsapp", "content": location})).await;
    assert_eq!(m["content"]["type"], "location");
    app.finish().await;
}

async fn a_reaction_to_a_parley_message_names_its_provider_id(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let first = id_of(&send(&app, &text_to("whatsapp", "+12025550150", "Your order shipped")).await);
    let sent = app.wait_for_status(&first, &["delivered", "read"], WAIT).await;
    let provider_id = sent["provider_message_id"].as_str().expect("provider id").to_string();
    let reaction = json!({"to": "+12025550150", "channel": "whatsapp",
        "content": {"type": "reaction", "message_id": first, "emoji": "👍"}});
    let m = send(&app, &reaction).await;
    assert_eq!(m["content"]["message_id"], provider_id.as_str(), "{m}");
    // A provider id is taken as it is.
    let m = send(
        &app,
        &json!({"to": "+12025550150", "channel": "whatsapp",
        "content": {"type": "reaction", "message_id": "wamid.HBgL", "emoji": "👍"}}),
    )
    .await;
    assert_eq!(m["content"]["message_id"], "wamid.HBgL");
    let unknown = json!({"to": "+12025550150", "channel": "whatsapp",
        "content": {"type": "reaction", "message_id": parley_domain::MessageId::new().to_string(), "emoji": "👍"}});
    post(&app, "/v1/messages", &unknown).await.problem(422, "reaction_target_not_found").names("content.message_id");
    app.finish().await;
}

async fn sms_show_their_segments_and_encoding(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let cases = [
        ("Your code is 123456", 1, "gsm7"),
        (&"a".repeat(160)[..], 1, "gsm7"),
        (&"a".repeat(161)[..], 2, "gsm7"),
        // `€` is in the extension table: two septets each.
        (&"€".repeat(80)[..], 1, "gsm7"),
        (&"€".repeat(81)[..], 2, "gsm7"),
        ("Ihr Code: 123 ✓", 1, "ucs2"),
        (&"ü✓".repeat(36)[..], 2, "ucs2"),
    ];
    for (text, segments, encoding) in cases {
        let m = send(&app, &text_to("sms", "+12025550150", text)).await;
        assert_eq!(m["segments"], segments, "{text}: {m}");
        assert_eq!(m["encoding"], encoding, "{text}");
        let fetched = message(&app, &id_of(&m)).await;
        assert_eq!(fetched["segments"], segments);
    }
    // Other channels have no segments.
    let w = send(&app, &text_to("whatsapp", "+12025550150", "hi")).await;
    assert!(w.get("segments").is_none() && w.get("encoding").is_none(), "{w}");
    app.finish().await;
}
