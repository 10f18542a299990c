//! The messaging policy through the real server, on both backends: keywords (STOP in any case
//! and punctuation, STOPALL, START, HELP) recorded in the consent ledger and answered once;
//! sends refused before any provider sees them (`recipient_opted_out`, `consent_required`,
//! `frequency_cap_exceeded`, `whatsapp_window_closed`) and recorded as `rejected`; quiet hours
//! in the contact's zone; frequency caps that defer; the opt-out API; sends addressed to a
//! contact; and the policy settings.

mod common;

use common::*;
use parley_domain::{Identity, Millis, Scope};
use parley_store::{ContactChange, ContactTarget, ContactWrite, ContactWriteOutcome};
use parley_testkit::fake_graph::{self, FakeGraph};
use parley_testkit::receiver::Receiver;
use parley_testkit::{Backend, TestApp, on_both_backends, webhook_test_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    stop_in_any_case_refuses_marketing_until_start,
    stopall_opts_out_of_every_channel_and_help_only_answers,
    marketing_needs_an_opt_in_and_refusals_are_recorded,
    quiet_hours_hold_marketing_in_the_contacts_zone,
    the_whatsapp_window_closes_exactly_24_hours_after_the_last_message,
    frequency_caps_reject_or_defer,
    the_opt_out_api_lists_adds_and_lifts_opt_outs,
    a_send_may_name_a_contact_instead_of_an_address,
    the_policy_is_validated_and_merge_patched,
    consent_changes_reach_webhooks_as_contact_events,
    an_opt_out_stops_messages_already_waiting,
);

const WAIT: Duration = Duration::from_secs(15);

/// A WhatsApp account on the fake Graph API, default for WhatsApp, its webhooks pointed here.
async fn whatsapp_account(app: &TestApp, fake: &FakeGraph) -> String {
    let a = post(
        app,
        "/v1/channel-accounts",
        &json!({"channel": "whatsapp", "provider": "whatsapp", "name": "WhatsApp (fake)",
                "config": fake.config(), "credentials": fake.credentials(), "is_default": true}),
    )
    .await;
    assert_eq!(a.status, 201, "{a}");
    let id = a["id"].as_str().expect("id").to_string();
    fake.set_webhook_url(&app.url(&format!("/hooks/whatsapp/{id}")));
    id
}

/// A customer's inbound WhatsApp text sent at `at_secs` (Unix seconds); its wamid.
async fn inbound_at(fake: &FakeGraph, from: &str, text: &str, at_secs: i64, wamid: &str) {
    let message = json!({"from": from.trim_start_matches('+'), "id": wamid, "timestamp": at_secs.to_string(),
                         "type": "text", "text": {"body": text}});
    let response = fake.send_inbound(from, message).await;
    assert_eq!(response.status(), 200);
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn encoded(address: &str) -> String {
    address.replace('+', "%2B")
}

/// The outbound messages to `to`, oldest first.
async fn outbound_to(app: &TestApp, to: &str) -> Vec<Value> {
    let mut all: Vec<Value> = all_messages(app, &format!("&to={}", encoded(to)))
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .collect();
    all.reverse();
    all
}

/// Wait until `count` outbound messages went to `to`; them, oldest first.
async fn wait_for_outbound(app: &TestApp, to: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = outbound_to(app, to).await;
        if got.len() >= count || tokio::time::Instant::now() > deadline {
            assert_eq!(got.len(), count, "outbound messages to {to}: {got:#?}");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the contact owning (channel, address) exists and has `count` ledger records.
async fn wait_for_ledger(app: &TestApp, contact: &str, count: usize) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = get(app, &format!("/v1/contacts/{contact}/consents")).await;
        let n = a["data"].as_array().map_or(0, Vec::len);
        if n >= count || tokio::time::Instant::now() > deadline {
            assert_eq!((a.status, n), (200, count), "ledger of {contact}: {a}");
            return a.json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The contact owning `identity` (`whatsapp:+1…`), waiting for it to be created.
async fn contact_of(app: &TestApp, identity: &str) -> String {
    let identity = Identity::parse(identity).expect("identity");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = app.engine.contact_by_identity(app.workspace_id, identity.channel, &identity.address).await;
        if let Some(contact) = found.expect("lookup") {
            return contact.id.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no contact for {identity}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A contact with these identities (`sms:+1…`) and time zone (the contacts API is tested on its
/// own; here it is set-up).
async fn create_contact(app: &TestApp, identities: &[&str], time_zone: Option<&str>) -> String {
    let change = ContactChange {
        identities: Some(identities.iter().map(|i| Identity::parse(i).expect("identity")).collect()),
        time_zone: time_zone.map(|z| Some(z.to_string())),
        ..Default::default()
    };
    let write = ContactWrite { target: ContactTarget::Create, change };
    match app.engine.store().write_contact(app.workspace_id, write, Millis::now()).await.expect("write") {
        ContactWriteOutcome::Created(c) => c.id.to_string(),
        other => panic!("contact not created: {other:?}"),
    }
}

/// Record the contact's opt-in to `purpose` (or `*`) on SMS through the API.
async fn opt_in_on_sms(app: &TestApp, contact: &str, purpose: &str) {
    let body = json!({"channel": "sms", "purpose": purpose, "status": "opted_in"});
    let r = post(app, &format!("/v1/contacts/{contact}/consents"), &body).await;
    assert_eq!(r.status, 201, "{r}");
}

async fn patch_policy(app: &TestApp, patch: Value) -> Answer {
    call(app, Method::PATCH, "/v1/messaging-policy", Some(&patch)).await
}

fn marketing(channel: &str, to: &str, text: &str) -> Value {
    json!({"to": to, "channel": channel, "purpose": "marketing", "respect_quiet_hours": false,
           "content": {"type": "text", "text": text}})
}

fn template(to: &str) -> Value {
    json!({"to": to, "channel": "whatsapp", "purpose": "marketing", "respect_quiet_hours": false,
           "content": {"type": "template", "name": "winter_sale", "language": "en"}})
}

/// The refused send's problem names the message it was recorded as: `rejected`, with the code on
/// its `rejected` event, and nothing handed to a provider.
async fn assert_recorded_rejected(app: &TestApp, a: &Answer, code: &str) -> Value {
    a.problem(422, code);
    let id = a["message_id"].as_str().unwrap_or_else(|| panic!("message_id in {a}"));
    let m = message(app, id).await;
    assert_eq!(m["status"], "rejected", "{m}");
    assert_eq!(kinds(&m), ["accepted", "rejected"], "{m}");
    assert_eq!(event(&m, "rejected", 0)["error"]["code"], code);
    assert_eq!(event(&m, "rejected", 0)["error"]["permanent"], true);
    assert_eq!(m["error"]["code"], code);
    m
}

async fn stop_in_any_case_refuses_marketing_until_start(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    let opt_out_reply =
        app.get_json("/v1/messaging-policy").await["opt_out_reply"].as_str().expect("reply").to_string();
    let customers = ["+12025550161", "+12025550162", "+12025550163", "+12025550164", "+12025550165"];
    let texts = ["STOP", "stop", "Stop!", "  sToP... ", "Arrêt."];
    for (i, (customer, text)) in customers.iter().zip(texts).enumerate() {
        inbound_at(&fake, customer, text, now_secs(), &format!("wamid.stop{i}")).await;
    }
    for (customer, text) in customers.iter().zip(texts) {
        let replies = wait_for_outbound(&app, customer, 1).await;
        assert_eq!(replies[0]["content"]["text"], opt_out_reply.as_str(), "the confirmation of {text:?}");
        let reply = replies[0]["id"].as_str().expect("id");
        app.wait_for_status(reply, &["sent", "delivered", "read"], WAIT).await;
        assert_eq!(replies[0]["purpose"], "transactional");
        let contact = contact_of(&app, &format!("whatsapp:{customer}")).await;
        assert_eq!(replies[0]["contact_id"], contact.as_str());
        let ledger = wait_for_ledger(&app, &contact, 1).await;
        let r = &ledger["data"][0];
        assert_eq!(
            (&r["channel"], &r["purpose"], &r["status"], &r["source"], &r["address"]),
            (&json!("whatsapp"), &json!("*"), &json!("opted_out"), &json!("keyword"), &json!(customer)),
            "{ledger}"
        );
        assert_eq!(r["evidence"]["text"], text);
        assert!(r["evidence"]["message_id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{r}");
        assert_eq!(
            ledger["current"],
            json!([{"channel": "whatsapp", "purpose": "*", "status": "opted_out", "source": "keyword",
                    "since": r["recorded_at"], "consent_id": r["id"]}])
        );
    }
    // Meta delivers the same webhook again: stored once, answered once.
    let again = fake.webhooks()[0].body.clone();
    let url = fake.webhooks()[0].url.clone();
    let repeat =
        fake_graph::post_raw(&reqwest::Client::new(), &url, &fake_graph::sign(fake_graph::APP_SECRET, &again), again)
            .await;
    assert_eq!(repeat.status(), 200);

    // Marketing (a template, so that the window does not matter) and transactional sends are refused.
    let customer = customers[0];
    let a = post(&app, "/v1/messages", &template(customer)).await;
    assert_recorded_rejected(&app, &a, "recipient_opted_out").await;
    let a = post(&app, "/v1/messages", &text_to("whatsapp", customer, "Your order shipped")).await;
    assert_recorded_rejected(&app, &a, "recipient_opted_out").await;
    let handed: Vec<_> = fake.requests_to(customer);
    assert_eq!(handed.len(), 1, "only the confirmation reached Meta: {handed:#?}");

    // START opts back in (for every purpose on the channel): the marketing send goes.
    inbound_at(&fake, customer, "Start.", now_secs(), "wamid.start").await;
    let contact = contact_of(&app, &format!("whatsapp:{customer}")).await;
    let ledger = wait_for_ledger(&app, &contact, 2).await;
    assert_eq!((&ledger["data"][0]["status"], &ledger["data"][0]["source"]), (&json!("opted_in"), &json!("keyword")));
    let all = wait_for_outbound(&app, customer, 4).await;
    let opt_in_reply = app.get_json("/v1/messaging-policy").await["opt_in_reply"].clone();
    assert_eq!(all[3]["content"]["text"], opt_in_reply);
    let m = send(&app, &template(customer)).await;
    assert_eq!(m["status"], "queued", "{m}");
    assert_eq!(m["contact_id"], contact.as_str());
    // The repeated STOP webhook never got a second reply.
    assert_eq!(outbound_to(&app, customers[0]).await.len(), 5);
    app.finish().await;
}

async fn stopall_opts_out_of_every_channel_and_help_only_answers(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    let customer = "+12025550171";
    let contact = create_contact(&app, &[&format!("sms:{customer}"), &format!("whatsapp:{customer}")], None).await;
    inbound_at(&fake, customer, "help?", now_secs(), "wamid.help").await;
    let help = app.get_json("/v1/messaging-policy").await["help_text"].clone();
    let replies = wait_for_outbound(&app, customer, 1).await;
    assert_eq!(replies[0]["content"]["text"], help);
    assert_eq!(wait_for_ledger(&app, &contact, 0).await["current"], json!([]), "HELP records nothing");
    // STOPALL: every channel, even one the customer did not write on.
    inbound_at(&fake, customer, "STOPALL", now_secs(), "wamid.stopall").await;
    let ledger = wait_for_ledger(&app, &contact, 1).await;
    assert_eq!((&ledger["data"][0]["channel"], &ledger["data"][0]["purpose"]), (&json!("*"), &json!("*")));
    wait_for_outbound(&app, customer, 2).await;
    let a = post(&app, "/v1/messages", &text_to("sms", customer, "Your code is 1234")).await;
    let m = assert_recorded_rejected(&app, &a, "recipient_opted_out").await;
    assert_eq!(m["contact_id"], contact.as_str());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ledger_count(&app, m["id"].as_str().expect("id")), 0, "never handed to the sandbox");
    app.finish().await;
}

async fn marketing_needs_an_opt_in_and_refusals_are_recorded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let customer = "+12025550180";
    let a = post(&app, "/v1/messages", &marketing("sms", customer, "Winter sale!")).await;
    let m = assert_recorded_rejected(&app, &a, "consent_required").await;
    assert_eq!(m["purpose"], "marketing");
    // With an idempotency key, the refusal is replayed as it was (same rejected message).
    let keyed = |key: &str| {
        app.request(Method::POST, "/v1/messages").header("idempotency-key", key).json(&marketing("sms", customer, "x"))
    };
    let first = Answer::read(keyed("k-1").send().await.expect("send")).await;
    let replay = Answer::read(keyed("k-1").send().await.expect("send")).await;
    first.problem(422, "consent_required");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay["message_id"], first["message_id"]);
    // In a batch, the refused item names its message too.
    let batch = post(
        &app,
        "/v1/messages/batch",
        &json!({"messages": [marketing("sms", customer, "a"), text_to("sms", customer, "Your code is 1")]}),
    )
    .await;
    assert_eq!(batch.status, 202, "{batch}");
    assert_eq!((batch["accepted"].as_u64(), batch["rejected"].as_u64()), (Some(1), Some(1)));
    let item = &batch["data"][0];
    assert_eq!((item["status"].as_u64(), &item["error"]["code"]), (Some(422), &json!("consent_required")));
    let rejected = message(&app, item["error"]["message_id"].as_str().expect("message_id")).await;
    assert_eq!(rejected["status"], "rejected");
    // Transactional messages need no opt-in.
    assert_eq!(batch["data"][1]["message"]["status"], "queued");
    // A batch whose every item is refused names each one, with the message it was recorded as.
    let none = post(&app, "/v1/messages/batch", &json!({"messages": [marketing("sms", customer, "b")]})).await;
    none.problem(422, "validation_failed").names("messages[0]");
    let reason = none["invalid_params"][0]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("consent_required: ") && reason.contains("msg_"), "{none}");

    // An opt-in through the API, for marketing on sms.
    let contact = create_contact(&app, &[&format!("sms:{customer}")], None).await;
    let r = post(
        &app,
        &format!("/v1/contacts/{contact}/consents"),
        &json!({"channel": "sms", "purpose": "marketing", "status": "opted_in", "evidence": {"form": "checkout"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(
        (&r["source"], &r["status"], &r["evidence"]["given"]["form"]),
        (&json!("api"), &json!("opted_in"), &json!("checkout"))
    );
    assert!(r["evidence"]["api_key_id"].as_str().is_some_and(|k| k.starts_with("key_")), "{r}");
    let m = send(&app, &marketing("sms", customer, "Winter sale!")).await;
    assert_eq!((&m["status"], &m["contact_id"]), (&json!("queued"), &json!(contact)));
    // Not on WhatsApp: the opt-in was for sms.
    let a = post(&app, "/v1/messages", &template(customer)).await;
    a.problem(422, "consent_required");
    // Bad consent requests name the field; unknown contacts are 404.
    let bad = post(
        &app,
        &format!("/v1/contacts/{contact}/consents"),
        &json!({"channel": "fax", "purpose": "Marketing", "status": "opted_in", "evidence": [1]}),
    )
    .await;
    bad.problem(422, "validation_failed").names("channel").names("purpose").names("evidence");
    let body = json!({"channel": "sms", "purpose": "*", "status": "opted_out"});
    post(&app, "/v1/contacts/ctc_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b/consents", &body).await.problem(404, "not_found");
    // Reading needs messages:read, writing messages:write.
    let reader = app.engine.create_api_key(app.workspace_id, "reader", vec![Scope::MessagesRead]).await.expect("key");
    assert_eq!(get_as(&app, &reader.secret, &format!("/v1/contacts/{contact}/consents")).await.status, 200);
    post_as(&app, &reader.secret, &format!("/v1/contacts/{contact}/consents"), &body).await.problem(403, "forbidden");
    app.finish().await;
}

/// Quiet hours 21:00–08:00 in `zone`: a marketing message due at 23:00 local goes at 08:00 the
/// next local morning; when the zone changes its offset within the next 80 days, the night before
/// the change is tried too (the opening is after the change).
async fn quiet_hours_hold_marketing_in_the_contacts_zone(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let zones = [
        ("America/New_York", "+12025550191"),
        ("Asia/Kolkata", "+12025550192"),
        ("Australia/Lord_Howe", "+12025550193"),
    ];
    for (zone, number) in zones {
        let contact = create_contact(&app, &[&format!("sms:{number}")], Some(zone)).await;
        opt_in_on_sms(&app, &contact, "*").await;
        let tz = jiff::tz::TimeZone::get(zone).expect("zone");
        let today = jiff::Timestamp::now().to_zoned(tz.clone()).date();
        let mut evenings = vec![today.tomorrow().expect("date")];
        let horizon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(80 * 24);
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
        let next_change = tz.following(soon).next().filter(|t| t.timestamp() < horizon);
        if let Some(change) = next_change {
            // The change happens in the small hours: the evening before it.
            evenings.push(change.timestamp().to_zoned(tz.clone()).date().yesterday().expect("date"));
        }
        for evening in evenings {
            let at = evening.at(23, 0, 0, 0).to_zoned(tz.clone()).expect("local time").timestamp();
            let opening = evening.tomorrow().expect("date").at(8, 0, 0, 0).to_zoned(tz.clone()).expect("local");
            let body = json!({"to": number, "channel": "sms", "purpose": "marketing", "send_at": at.to_string(),
                              "content": {"type": "text", "text": "Sale"}});
            let m = send(&app, &body).await;
            assert_eq!(m["status"], "scheduled", "{zone}: {m}");
            let expected = Millis::from_timestamp(opening.timestamp()).to_string();
            assert_eq!(m["send_at"], expected.as_str(), "{zone} on {evening}: {m}");
            assert_eq!(kinds(&m_events(&app, &m).await), ["accepted", "scheduled"]);
            // Transactional messages go when asked, unless told to respect quiet hours.
            let tx = send(
                &app,
                &json!({"to": number, "channel": "sms", "send_at": at.to_string(),
                                        "content": {"type": "text", "text": "Code"}}),
            )
            .await;
            assert_eq!(tx["send_at"], Millis::from_timestamp(at).to_string().as_str());
            let held = send(
                &app,
                &json!({"to": number, "channel": "sms", "send_at": at.to_string(),
                                          "respect_quiet_hours": true, "content": {"type": "text", "text": "Code"}}),
            )
            .await;
            assert_eq!(held["send_at"], expected.as_str());
        }
    }
    // Quiet hours switched off: marketing goes when asked.
    assert_eq!(patch_policy(&app, json!({"quiet_hours": {"enabled": false}})).await.status, 200);
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(30)).to_string();
    let m = send(
        &app,
        &json!({"to": "+12025550191", "channel": "sms", "purpose": "marketing", "send_at": at,
                               "content": {"type": "text", "text": "Sale"}}),
    )
    .await;
    assert_eq!(m["send_at"], Millis::parse_rfc3339(&at).expect("time").to_string().as_str());
    app.finish().await;
}

async fn m_events(app: &TestApp, m: &Value) -> Value {
    message(app, m["id"].as_str().expect("id")).await
}

async fn the_whatsapp_window_closes_exactly_24_hours_after_the_last_message(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let fake = FakeGraph::start().await;
    whatsapp_account(&app, &fake).await;
    let customer = "+12025550181";
    // The customer wrote an hour ago.
    let wrote = now_secs() - 3600;
    inbound_at(&fake, customer, "Is my order on its way?", wrote, "wamid.q").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while inbound_messages(&app).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the inbound message is stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    contact_of(&app, &format!("whatsapp:{customer}")).await;
    let at = |ms: i64| parley_domain::Millis(wrote * 1000 + ms).to_string();
    let text = |send_at: String| json!({"to": customer, "channel": "whatsapp", "send_at": send_at, "content": {"type": "text", "text": "Yes"}});
    // Free-form now, and up to the last millisecond of the 24 hours.
    assert_eq!(send(&app, &text_to("whatsapp", customer, "Yes, tomorrow")).await["status"], "queued");
    assert_eq!(send(&app, &text(at(24 * 3600 * 1000 - 1))).await["status"], "scheduled");
    // At exactly 24 hours: refused before sending.
    let a = post(&app, "/v1/messages", &text(at(24 * 3600 * 1000))).await;
    assert_recorded_rejected(&app, &a, "whatsapp_window_closed").await;
    // A template may go any time.
    let t = json!({"to": customer, "channel": "whatsapp", "send_at": at(24 * 3600 * 1000),
                   "content": {"type": "template", "name": "order_update", "language": "en"}});
    assert_eq!(send(&app, &t).await["status"], "scheduled");
    // A known contact who never wrote: refused.
    let silent = "+12025550182";
    create_contact(&app, &[&format!("whatsapp:{silent}")], None).await;
    let a = post(&app, "/v1/messages", &text_to("whatsapp", silent, "Hello")).await;
    assert_recorded_rejected(&app, &a, "whatsapp_window_closed").await;
    // A number Parley has never seen: refused all the same.
    let stranger = "+12025550184";
    let a = post(&app, "/v1/messages", &text_to("whatsapp", stranger, "Hello")).await;
    assert_recorded_rejected(&app, &a, "whatsapp_window_closed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests_to(silent).is_empty(), "nothing reached Meta");
    assert!(fake.requests_to(stranger).is_empty(), "nothing reached Meta");
    app.finish().await;
}

async fn frequency_caps_reject_or_defer(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let customer = "+12025550183";
    let contact = create_contact(&app, &[&format!("sms:{customer}")], None).await;
    opt_in_on_sms(&app, &contact, "marketing").await;
    let p = patch_policy(&app, json!({"frequency_caps": [{"purpose": "marketing", "max": 2, "period_seconds": 3600}]}))
        .await;
    assert_eq!(p.status, 200, "{p}");
    assert_eq!(p["cap_action"], "reject");
    let first = send(&app, &marketing("sms", customer, "1")).await;
    send(&app, &marketing("sms", customer, "2")).await;
    let a = post(&app, "/v1/messages", &marketing("sms", customer, "3")).await;
    assert_recorded_rejected(&app, &a, "frequency_cap_exceeded").await;
    // Other purposes are not capped; the rejected one does not count.
    assert_eq!(send(&app, &text_to("sms", customer, "Your code")).await["status"], "queued");
    // Deferred: until the oldest counted message is an hour old.
    let p = patch_policy(&app, json!({"cap_action": "defer"})).await;
    assert_eq!(p.status, 200, "{p}");
    let m = send(&app, &marketing("sms", customer, "3")).await;
    assert_eq!(m["status"], "scheduled", "{m}");
    let oldest = Millis::parse_rfc3339(first["created_at"].as_str().expect("time")).expect("time");
    assert_eq!(m["send_at"], oldest.plus_seconds(3600).to_string().as_str());
    app.finish().await;
}

async fn the_opt_out_api_lists_adds_and_lifts_opt_outs(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    assert_eq!(app.get_json("/v1/opt-outs").await, json!({"data": [], "next_cursor": null}));
    let a = post(&app, "/v1/opt-outs", &json!({"channel": "sms", "address": "+1 202-555-0184"})).await;
    assert_eq!(a.status, 201, "{a}");
    assert_eq!(
        (&a["channel"], &a["purpose"], &a["address"], &a["source"]),
        (&json!("sms"), &json!("*"), &json!("+12025550184"), &json!("opt_out_api"))
    );
    let contact = a["contact_id"].as_str().expect("contact").to_string();
    assert_eq!(contact_of(&app, "sms:+12025550184").await, contact, "the contact was created");
    let b =
        post(&app, "/v1/opt-outs", &json!({"channel": "whatsapp", "address": "+12025550185", "purpose": "marketing"}))
            .await;
    assert_eq!(b.status, 201, "{b}");
    let list = app.get_json("/v1/opt-outs").await;
    let ids: Vec<_> = list["data"].as_array().expect("data").iter().map(|o| o["consent_id"].clone()).collect();
    assert_eq!(ids, [b["consent_id"].clone(), a["consent_id"].clone()], "newest first: {list}");
    let sms_only = app.get_json("/v1/opt-outs?channel=sms").await;
    assert_eq!(sms_only["data"].as_array().map(Vec::len), Some(1));
    let page = app.get_json("/v1/opt-outs?limit=1").await;
    let next = page["next_cursor"].as_str().expect("cursor");
    assert_eq!(
        app.get_json(&format!("/v1/opt-outs?limit=1&cursor={next}")).await["data"][0]["consent_id"],
        a["consent_id"]
    );

    let a = post(&app, "/v1/messages", &text_to("sms", "+12025550184", "Your code")).await;
    assert_recorded_rejected(&app, &a, "recipient_opted_out").await;
    // Lifted: an opt-in is appended, the list is empty for sms, the send goes.
    let d = call(&app, Method::DELETE, "/v1/opt-outs/sms/%2B12025550184", None).await;
    assert_eq!(d.status, 204, "{d}");
    assert_eq!(app.get_json("/v1/opt-outs?channel=sms").await["data"], json!([]));
    assert_eq!(send(&app, &text_to("sms", "+12025550184", "Your code")).await["status"], "queued");
    let ledger = wait_for_ledger(&app, &contact, 2).await;
    assert_eq!((&ledger["data"][0]["status"], &ledger["data"][0]["source"]), (&json!("opted_in"), &json!("api")));
    // Nothing left to lift; an unknown address.
    call(&app, Method::DELETE, "/v1/opt-outs/sms/%2B12025550184", None).await.problem(404, "not_found");
    call(&app, Method::DELETE, "/v1/opt-outs/sms/%2B12025550199", None).await.problem(404, "not_found");
    post(&app, "/v1/opt-outs", &json!({"channel": "sms", "address": "12"})).await.problem(422, "invalid_phone_number");
    let reader = app.engine.create_api_key(app.workspace_id, "reader", vec![Scope::MessagesRead]).await.expect("key");
    assert_eq!(get_as(&app, &reader.secret, "/v1/opt-outs").await.status, 200);
    post_as(&app, &reader.secret, "/v1/opt-outs", &json!({"channel": "sms", "address": "+12025550186"}))
        .await
        .problem(403, "forbidden");
    app.finish().await;
}

async fn a_send_may_name_a_contact_instead_of_an_address(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let contact = create_contact(&app, &["sms:+12025550187"], None).await;
    let m =
        send(&app, &json!({"contact_id": contact, "channel": "sms", "content": {"type": "text", "text": "Hi"}})).await;
    assert_eq!((&m["to"], &m["contact_id"], &m["status"]), (&json!("+12025550187"), &json!(contact), &json!("queued")));
    app.wait_for_status(m["id"].as_str().expect("id"), &["delivered", "read"], WAIT).await;
    let a = post(
        &app,
        "/v1/messages",
        &json!({"contact_id": contact, "channel": "whatsapp",
                                                "content": {"type": "text", "text": "Hi"}}),
    )
    .await;
    a.problem(422, "no_identity_for_channel").names("channel");
    let unknown = "ctc_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b";
    let a = post(
        &app,
        "/v1/messages",
        &json!({"contact_id": unknown, "channel": "sms",
                                                "content": {"type": "text", "text": "Hi"}}),
    )
    .await;
    a.problem(422, "contact_not_found").names("contact_id");
    let both = json!({"to": "+12025550187", "contact_id": contact, "channel": "sms",
                      "content": {"type": "text", "text": "Hi"}});
    post(&app, "/v1/messages", &both).await.problem(422, "validation_failed").names("contact_id");
    let neither = json!({"channel": "sms", "content": {"type": "text", "text": "Hi"}});
    post(&app, "/v1/messages", &neither).await.problem(422, "validation_failed").names("to");
    // A send to an address a contact owns is linked to that contact.
    let m = send(&app, &text_to("sms", "+1 202 555 0187", "Hi")).await;
    assert_eq!(m["contact_id"], contact.as_str());
    app.finish().await;
}

async fn the_policy_is_validated_and_merge_patched(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let defaults = app.get_json("/v1/messaging-policy").await;
    assert_eq!(
        defaults["quiet_hours"],
        json!({"enabled": true, "start": "21:00", "end": "08:00", "default_time_zone": "UTC"})
    );
    assert_eq!(defaults["frequency_caps"], json!([]));
    assert_eq!(defaults["cap_action"], "reject");
    assert!(defaults["keywords"]["en"]["opt_out"].as_array().expect("list").contains(&json!("STOP")));
    assert!(defaults["keywords"]["fr"]["opt_out"].as_array().expect("list").contains(&json!("ARRÊT")));
    let changed = patch_policy(
        &app,
        json!({"quiet_hours": {"start": "22:30", "default_time_zone": "Europe/Paris"}, "help_text": "Call 555-0100",
               "keywords": {"de": {"opt_out": ["STOPP"]}}}),
    )
    .await;
    assert_eq!(changed.status, 200, "{changed}");
    assert_eq!(
        changed["quiet_hours"],
        json!({"enabled": true, "start": "22:30", "end": "08:00", "default_time_zone": "Europe/Paris"})
    );
    assert_eq!(changed["help_text"], "Call 555-0100");
    assert_eq!(changed["keywords"]["en"], defaults["keywords"]["en"], "other languages are kept");
    assert_eq!(changed["keywords"]["de"]["opt_out"], json!(["STOPP"]));
    assert_eq!(app.get_json("/v1/messaging-policy").await, changed.json);
    // Bad values are named and change nothing.
    let cases = [
        (json!({"quiet_hours": {"start": "25:00"}}), "quiet_hours.start"),
        (json!({"quiet_hours": {"default_time_zone": "Mars/Olympus"}}), "quiet_hours.default_time_zone"),
        (
            json!({"frequency_caps": [{"purpose": "marketing", "max": 0, "period_seconds": 3600}]}),
            "frequency_caps[0].max",
        ),
        (
            json!({"frequency_caps": [{"purpose": "marketing", "max": 1, "period_seconds": 30}]}),
            "frequency_caps[0].period_seconds",
        ),
        (json!({"help_text": ""}), "help_text"),
        (json!({"cap_action": "ignore"}), "cap_action"),
        (json!({"quiet_hours": {"begin": "21:00"}}), "quiet_hours.begin"),
    ];
    for (patch, field) in cases {
        let a = patch_policy(&app, patch.clone()).await;
        assert_eq!(a.status, 422, "{patch}: {a}");
        a.names(field);
    }
    assert_eq!(app.get_json("/v1/messaging-policy").await, changed.json);
    // Changing it needs admin; reading it messages:read.
    let writer = app.engine.create_api_key(app.workspace_id, "writer", vec![Scope::MessagesWrite]).await.expect("key");
    let a = Answer::read(
        app.http
            .patch(app.url("/v1/messaging-policy"))
            .bearer_auth(&writer.secret)
            .json(&json!({"help_text": "x"}))
            .send()
            .await
            .expect("PATCH"),
    )
    .await;
    a.problem(403, "forbidden");
    app.finish().await;
}

async fn consent_changes_reach_webhooks_as_contact_events(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, webhook_test_config).await else { return };
    let receiver = Receiver::start().await;
    // The sender's contact is created too (`contact.created`): this test is about consent.
    let types = json!(["contact.opted_out", "contact.opted_in"]);
    let endpoint = post(&app, "/v1/webhook-endpoints", &json!({"url": receiver.url("/c"), "event_types": types})).await;
    assert_eq!(endpoint.status, 201, "{endpoint}");
    let sms = default_account(&app, "sms").await;
    let stop = post(
        &app,
        &format!("/v1/channel-accounts/{sms}/simulate-inbound"),
        &json!({"from": "+12025550171", "content": {"type": "text", "text": "Stop."}}),
    )
    .await;
    assert_eq!(stop.status, 201, "{stop}");
    let contact = stop.json["contact_id"].as_str().expect("the sender's contact").to_string();
    let opted_out = receiver.wait_until(WAIT, "contact.opted_out", |r| !r.is_empty()).await;
    let event = opted_out[0].json();
    assert_eq!(event["type"], "contact.opted_out", "{event}");
    assert_eq!(event["data"]["contact_id"], contact.as_str());
    let consent = &event["data"]["consent"];
    assert_eq!(
        (
            consent["status"].as_str(),
            consent["source"].as_str(),
            consent["channel"].as_str(),
            consent["purpose"].as_str()
        ),
        (Some("opted_out"), Some("keyword"), Some("sms"), Some("*")),
        "{consent}"
    );
    assert_eq!(consent["evidence"]["message_id"], stop.json["id"]);

    let body = json!({"channel": "sms", "purpose": "marketing", "status": "opted_in"});
    let added = post(&app, &format!("/v1/contacts/{contact}/consents"), &body).await;
    assert_eq!(added.status, 201, "{added}");
    let both = receiver.wait_until(WAIT, "contact.opted_in", |r| r.len() >= 2).await;
    let event = both.iter().map(|r| r.json()).find(|e| e["type"] == "contact.opted_in").expect("contact.opted_in");
    assert_eq!(
        (event["data"]["consent"]["source"].as_str(), event["data"]["consent"]["purpose"].as_str()),
        (Some("api"), Some("marketing"))
    );
    app.finish().await;
}

async fn an_opt_out_stops_messages_already_waiting(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let customer = "+12025550176";
    let bystander = "+12025550177";
    let contact = create_contact(&app, &[&format!("sms:{customer}"), &format!("rcs:{customer}")], None).await;
    create_contact(&app, &[&format!("sms:{bystander}")], None).await;
    opt_in_on_sms(&app, &contact, "marketing").await;
    // Three messages wait for an hour from now: a marketing SMS, a transactional SMS with an RCS
    // step after it, and one to somebody else.
    let in_an_hour = Millis(Millis::now().0 + 3_600_000).to_string();
    let waiting = |to: &str, purpose: &str| {
        json!({"to": to, "channel": "sms", "purpose": purpose, "send_at": in_an_hour,
               "respect_quiet_hours": false, "content": {"type": "text", "text": "Your order"}})
    };
    let marketing = id_of(&send(&app, &waiting(customer, "marketing")).await);
    let routed = json!({"to": customer, "purpose": "transactional", "send_at": in_an_hour,
                        "content": {"type": "text", "text": "Your parcel is here"},
                        "route": [{"channel": "sms"}, {"channel": "rcs"}]});
    let routed = id_of(&send(&app, &routed).await);
    let other = id_of(&send(&app, &waiting(bystander, "transactional")).await);
    for id in [&marketing, &routed, &other] {
        assert_eq!(message(&app, id).await["status"], "scheduled");
    }
    // The customer writes STOP on SMS meanwhile; the confirmation still goes.
    let sms = default_account(&app, "sms").await;
    let stop = post(
        &app,
        &format!("/v1/channel-accounts/{sms}/simulate-inbound"),
        &json!({"from": customer, "content": {"type": "text", "text": "stop!"}}),
    )
    .await;
    assert_eq!(stop.status, 201, "{stop}");
    wait_for_ledger(&app, &contact, 2).await;
    let reply = wait_for_outbound(&app, customer, 3).await;
    let reply = reply.iter().find(|m| ![&marketing, &routed].contains(&&id_of(m))).expect("the confirmation");
    app.wait_for_status(&id_of(reply), &["delivered"], WAIT).await;
    // The hour passes.
    app.engine.config().clock.advance(Duration::from_secs(3601));
    let m = app.wait_for_status(&marketing, &["rejected"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "scheduled", "queued", "sending", "rejected"], "{m:#}");
    assert_eq!(m["error"]["code"], "recipient_opted_out");
    assert_eq!(m["error"]["permanent"], true);
    assert_eq!(ledger_count(&app, &marketing), 0, "never handed to a provider");
    // The routed message leaves its SMS step refused and goes on RCS, which STOP on SMS does not
    // cover.
    let m = app.wait_for_status(&routed, &["delivered", "read"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(m["channel"], "rcs");
    let refused = event(&m, "rejected", 0);
    assert_eq!((refused["applied"].as_bool(), refused["details"]["falls_back"].as_bool()), (Some(false), Some(true)));
    assert_eq!(refused["error"]["code"], "recipient_opted_out");
    assert_eq!(m["route"]["steps"][0]["error"]["code"], "recipient_opted_out", "{m:#}");
    assert_eq!(ledger_count(&app, &routed), 1, "only the RCS step was handed over");
    // Somebody else's message goes as planned.
    app.wait_for_status(&other, &["delivered"], WAIT).await;
    app.finish().await;
}
