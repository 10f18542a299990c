//! Honest message state through the dispatcher and the sandbox's magic recipients: permanent and
//! transient failures, Retry-After, undeliverable, out-of-order receipts, validity, and
//! exactly-once hand-off, on both backends.

mod common;

use common::*;
use parley_domain::ChannelAccountId;
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    permanent_failure_fails_the_message,
    transient_failures_are_retried_with_backoff,
    retry_after_is_honoured,
    undeliverable_ends_undelivered,
    out_of_order_receipts_never_move_the_state_back,
    no_receipt_stays_sent,
    scheduled_messages_wait_for_send_at,
    retries_that_would_outlive_the_validity_expire,
    every_message_is_handed_over_at_most_once,
);

const WAIT: Duration = Duration::from_secs(15);

async fn permanent_failure_fails_the_message(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let sms = id_of(&send(&app, &text_to("sms", "+1 202 555 0101", "never")).await);
    let web = id_of(&send(&app, &text_to("webchat", "sandbox-fail", "never")).await);
    for id in [&sms, &web] {
        let m = app.wait_for_status(id, &["failed"], WAIT).await;
        assert_timeline_contiguous(&m);
        assert_eq!(kinds(&m), ["accepted", "queued", "sending", "failed"]);
        assert_eq!(m["error"]["code"], "sandbox:permanent_failure");
        assert_eq!(m["error"]["permanent"], true);
        assert!(m["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(m["attempts"], 1, "a permanent error is not retried");
        let failed = event(&m, "failed", 0);
        assert_eq!(failed["error"]["code"], "sandbox:permanent_failure");
        assert_eq!(failed["attempt"], 1);
        assert_eq!(failed["applied"], true);
        assert!(m.get("provider_message_id").is_none(), "{m}");
    }
    // It stays failed: no retry comes later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = message(&app, &sms).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["sequence"], 4);
    assert_eq!(ledger_count(&app, &sms), 0);
    assert_eq!(ledger_count(&app, &web), 0);
    app.finish().await;
}

async fn transient_failures_are_retried_with_backoff(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let id = id_of(&send(&app, &text_to("sms", "+12025550112", "flaky")).await);
    let web = id_of(&send(&app, &text_to("webchat", "sandbox-flaky-1", "flaky")).await);
    let m = app.wait_for_status(&id, &["delivered"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "attempt_failed", "attempt_failed", "sent", "delivered"]);
    assert_eq!(m["attempts"], 3);
    assert!(m.get("error").is_none(), "a delivered message shows no error: {m}");
    let mut previous_retry_at = 0;
    for (n, attempt) in [(0, 1), (1, 2)] {
        let failed = event(&m, "attempt_failed", n);
        assert_eq!(failed["attempt"], attempt);
        assert_eq!(failed["applied"], false, "a transient error does not change the state");
        assert_eq!(failed["error"]["code"], "sandbox:temporary_failure");
        assert_eq!(failed["error"]["permanent"], false);
        let at = millis(&failed["occurred_at"]);
        let retry_at = millis(&failed["retry_at"]);
        // Exponential backoff with jitter: base 1 s, between half the ceiling and the ceiling.
        let ceiling = 1000 << (attempt - 1);
        assert!(
            (ceiling / 2 - 5..=ceiling + 50).contains(&(retry_at - at)),
            "attempt {attempt}: retry after {} ms",
            retry_at - at
        );
        assert!(at >= previous_retry_at, "attempt {attempt} was not tried before its retry time");
        previous_retry_at = retry_at;
    }
    let sent = event(&m, "sent", 0);
    assert_eq!(sent["attempt"], 3);
    assert!(millis(&sent["occurred_at"]) >= previous_retry_at, "the third attempt waited for its retry time");

    let w = app.wait_for_status(&web, &["read"], WAIT).await;
    assert_eq!(kinds(&w), ["accepted", "queued", "sending", "attempt_failed", "sent", "delivered", "read"]);
    assert_eq!(w["attempts"], 2);
    assert_eq!(ledger_count(&app, &id), 1);
    assert_eq!(ledger_count(&app, &web), 1);
    app.finish().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let id = id_of(&send(&app, &text_to("whatsapp", "+12025550103", "slow down")).await);
    let m = app.wait_for_status(&id, &["read"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "attempt_failed", "sent", "delivered", "read"]);
    let failed = event(&m, "attempt_failed", 0);
    assert_eq!(failed["error"]["code"], "sandbox:rate_limited");
    let first_try = millis(&event(&m, "sending", 0)["occurred_at"]);
    let refused = millis(&failed["occurred_at"]);
    let retry_at = millis(&failed["retry_at"]);
    assert!((1990..=2050).contains(&(retry_at - refused)), "Retry-After of 2 s, not {} ms", retry_at - refused);
    let second_try = millis(&event(&m, "sent", 0)["occurred_at"]);
    assert!(second_try - first_try >= 1990, "the second attempt came {} ms after the first", second_try - first_try);
    assert!(second_try - first_try < 4000, "and not much later: {} ms", second_try - first_try);
    assert_eq!(m["attempts"], 2);
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn undeliverable_ends_undelivered(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let id = id_of(&send(&app, &text_to("rcs", "+12025550104", "lost")).await);
    let m = app.wait_for_status(&id, &["undelivered"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "sent", "undelivered"]);
    assert_eq!(m["error"]["code"], "sandbox:undeliverable");
    assert_eq!(m["error"]["permanent"], true);
    assert_eq!(event(&m, "undelivered", 0)["applied"], true);
    assert!(m["provider_message_id"].as_str().is_some_and(|p| p.starts_with("sbx_")));
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn out_of_order_receipts_never_move_the_state_back(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let wa = id_of(&send(&app, &text_to("whatsapp", "+12025550105", "ooo")).await);
    let sms = id_of(&send(&app, &text_to("sms", "+12025550105", "ooo")).await);
    let web = id_of(&send(&app, &text_to("webchat", "sandbox-out-of-order", "ooo")).await);

    // WhatsApp: read, then a delivered, then a late sent; the state stays read.
    for id in [&wa, &web] {
        let m = wait_for_events(&app, id, "sent", 2, WAIT).await;
        assert_timeline_contiguous(&m);
        assert_eq!(m["status"], "read");
        let k = kinds(&m);
        assert_eq!(k[..4], ["accepted", "queued", "sending", "sent"]);
        let mut receipts = k[4..].to_vec();
        receipts.sort();
        assert_eq!(receipts, ["delivered", "read", "sent"], "every receipt is recorded: {k:?}");
        assert_eq!(event(&m, "read", 0)["applied"], true);
        assert_eq!(event(&m, "delivered", 0)["applied"], false, "delivered after read does not move the state");
        let late = event(&m, "sent", 1);
        assert_eq!(late["applied"], false, "a late sent is recorded but not applied");
        assert!(millis(&late["occurred_at"]) < millis(&late["recorded_at"]), "it says it happened earlier");
        assert!(millis(&late["occurred_at"]) <= millis(&event(&m, "read", 0)["occurred_at"]));
    }
    // SMS: delivered, then a late sent; the state stays delivered.
    let m = wait_for_events(&app, &sms, "sent", 2, WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(m["status"], "delivered");
    let k = kinds(&m);
    assert_eq!(k[..4], ["accepted", "queued", "sending", "sent"]);
    let mut receipts = k[4..].to_vec();
    receipts.sort();
    assert_eq!(receipts, ["delivered", "sent"], "{k:?}");
    assert_eq!(event(&m, "delivered", 0)["applied"], true);
    assert_eq!(event(&m, "sent", 1)["applied"], false);
    // Nothing changes afterwards.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(message(&app, &wa).await["status"], "read");
    assert_eq!(message(&app, &sms).await["status"], "delivered");
    for id in [&wa, &sms, &web] {
        assert_eq!(ledger_count(&app, id), 1);
    }
    app.finish().await;
}

async fn no_receipt_stays_sent(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let id = id_of(&send(&app, &text_to("sms", "+12025550102", "silence")).await);
    app.wait_for_status(&id, &["sent"], WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = message(&app, &id).await;
    assert_eq!(m["status"], "sent");
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "sent"]);
    assert_eq!(ledger_count(&app, &id), 1);
    app.finish().await;
}

async fn scheduled_messages_wait_for_send_at(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    let send_at = rfc3339::format(rfc3339::now() + 1_500);
    let body = json!({"to": "+12025550150", "channel": "whatsapp", "content": {"type": "text", "text": "soon"},
        "send_at": send_at});
    let m = send(&app, &body).await;
    assert_eq!(m["status"], "scheduled");
    let id = id_of(&m);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(message(&app, &id).await["status"], "scheduled", "not sent before its time");
    assert_eq!(ledger_count(&app, &id), 0);
    let done = app.wait_for_status(&id, &["read"], WAIT).await;
    assert_timeline_contiguous(&done);
    assert_eq!(kinds(&done), ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "read"]);
    let sending = millis(&event(&done, "sending", 0)["occurred_at"]);
    assert!(sending >= millis(&json!(send_at)), "sent at {sending}, before send_at {send_at}");
    assert!(sending < millis(&json!(send_at)) + 1_000, "and soon after it");
    // A send_at in the past means now.
    let past = json!({"to": "+12025550150", "channel": "sms", "content": {"type": "text", "text": "late"},
        "send_at": "2020-01-01T00:00:00Z"});
    let m = send(&app, &past).await;
    assert_eq!(m["status"], "queued");
    app.wait_for_status(&id_of(&m), &["delivered"], WAIT).await;
    app.finish().await;
}

async fn retries_that_would_outlive_the_validity_expire(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    // Each attempt takes 1 s; the waits after attempts 1, 2, 3 are 0.5-1, 1-2 and 2-4 s. So the
    // retry after attempt 2 is due by about 1+1+1+2 = 5 s (inside a 6 s validity) and the one
    // after attempt 3 at 1+0.5+1+1+1+2 = 6.5 s at the earliest (outside it): attempt 3 is the
    // last, whatever the jitter. (On the default account, with a 5 s validity, whether a 4th
    // attempt still fits depends on the jitter.)
    let account = slow_sms_account(&app, 1000).await;
    let listed = app.get_json("/v1/channel-accounts").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(5));
    let body = json!({"to": "+12025550113", "channel": "sms", "channel_account_id": account,
        "content": {"type": "text", "text": "too late"}, "validity_seconds": 6});
    let sent = send(&app, &body).await;
    assert_eq!(sent["channel_account_id"], account);
    let id = id_of(&sent);
    let m = app.wait_for_status(&id, &["expired"], WAIT).await;
    assert_timeline_contiguous(&m);
    assert_eq!(kinds(&m), ["accepted", "queued", "sending", "attempt_failed", "attempt_failed", "expired"]);
    assert_eq!(m["error"]["code"], "validity_expired");
    assert_eq!(m["error"]["permanent"], true);
    assert_eq!(m["attempts"], 3);
    let expired = event(&m, "expired", 0);
    assert_eq!(expired["error"]["code"], "validity_expired");
    assert_eq!(expired["attempt"], 3);
    assert!(
        expired["error"]["detail"].as_str().is_some_and(|d| d.contains("sandbox:temporary_failure")),
        "the expiry names the last error: {expired}"
    );
    // It expires as soon as the next retry would be too late, not once the validity has run out.
    assert!(millis(&expired["occurred_at"]) < millis(&m["expires_at"]) + 1_000, "{m:#}");
    assert_eq!(ledger_count(&app, &id), 0, "the sandbox never accepted it");
    // It is final.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(message(&app, &id).await["status"], "expired");

    // The account only serves its own workspace and channel.
    let wrong = json!({"to": "+12025550150", "channel": "whatsapp", "channel_account_id": account,
        "content": {"type": "text", "text": "x"}});
    post(&app, "/v1/messages", &wrong).await.problem(422, "channel_account_not_found").names("channel_account_id");
    let (b, _) = app.engine.create_workspace("B").await.expect("workspace B");
    let b_key = app.engine.create_api_key(b.id, "b", vec![parley_domain::Scope::Admin]).await.expect("key").secret;
    let other = json!({"to": "+12025550150", "channel": "sms", "channel_account_id": account,
        "content": {"type": "text", "text": "x"}});
    post_as(&app, &b_key, "/v1/messages", &other).await.problem(422, "channel_account_not_found");
    let unknown = json!({"to": "+12025550150", "channel": "sms", "channel_account_id": ChannelAccountId::new().to_string(),
        "content": {"type": "text", "text": "x"}});
    post(&app, "/v1/messages", &unknown).await.problem(422, "channel_account_not_found");
    let malformed = json!({"to": "+12025550150", "channel": "sms", "channel_account_id": "cha_nope",
        "content": {"type": "text", "text": "x"}});
    post(&app, "/v1/messages", &malformed).await.problem(422, "validation_failed").names("channel_account_id");
    app.finish().await;
}

async fn every_message_is_handed_over_at_most_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    leave_whatsapp_window_to_meta(&app).await;
    // (recipient, web chat visitor, accepted by the sandbox in the end, final state off SMS)
    let cases: [(&str, &str, bool, &[&str]); 9] = [
        ("+12025550150", "visitor-1", true, &["read"]),
        ("+12025550101", "sandbox-fail", false, &["failed"]),
        ("+12025550102", "sandbox-no-receipt", true, &["sent"]),
        ("+12025550103", "sandbox-rate-limited", true, &["read"]),
        ("+12025550104", "sandbox-undeliverable", true, &["undelivered"]),
        ("+12025550105", "sandbox-out-of-order", true, &["read"]),
        ("+12025550111", "sandbox-flaky-1", true, &["read"]),
        ("+12025550112", "sandbox-flaky-2", true, &["read"]),
        ("+12025550113", "sandbox-flaky-3", true, &["read"]),
    ];
    let mut sent = Vec::new();
    for (phone, visitor, accepted, finals) in cases {
        for channel in ["sms", "whatsapp", "rcs", "webchat"] {
            let to = if channel == "webchat" { visitor } else { phone };
            let finals: Vec<&str> =
                finals.iter().map(|s| if channel == "sms" && *s == "read" { "delivered" } else { *s }).collect();
            let m = send(&app, &text_to(channel, to, "mix")).await;
            sent.push((id_of(&m), accepted, finals));
        }
    }
    // And a batch on top, answered at once.
    let batch: Vec<Value> = (0..20).map(|i| text_to("sms", "+12025550150", &format!("b{i}"))).collect();
    let a = post(&app, "/v1/messages/batch", &json!({"messages": batch})).await;
    assert_eq!(a.status, 202, "{}", a.text);
    for item in a.json["data"].as_array().expect("data") {
        sent.push((item["message"]["id"].as_str().expect("id").to_string(), true, vec!["delivered"]));
    }
    for (id, accepted, finals) in &sent {
        let m = app.wait_for_status(id, finals, WAIT).await;
        assert_timeline_contiguous(&m);
        let count = ledger_count(&app, id);
        assert!(count <= 1, "message {id} was handed to the sandbox {count} times");
        let expect = usize::from(*accepted && m["status"] != "expired");
        assert_eq!(count, expect, "{id} ({}) hand-offs", m["to"]);
    }
    let ledger = app.engine.sandbox_ledger();
    assert_eq!(ledger.accepted_count(), ledger.accepted_ids().len(), "no id was accepted twice");
    let duplicates =
        ledger.submissions().iter().filter(|s| s.outcome == parley_channels::SubmissionOutcome::Duplicate).count();
    assert_eq!(duplicates, 0, "no message was even offered twice after acceptance");
    app.finish().await;
}
