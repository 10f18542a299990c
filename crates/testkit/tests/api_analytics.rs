//! `GET /v1/analytics/messages` through the real server on both backends.
//!
//! The scenario is written straight into the store with chosen times (the engine's workers are
//! off, so nothing moves on its own), and every figure of the answer is worked out by hand below.

mod common;

use common::*;
use parley_domain::{
    Channel, ChannelAccountId, Content, Direction, ErrorInfo, EventId, EventKind, InboundMessage, Message,
    MessageEvent, MessageId, MessageState, Millis, Receipt, Scope, WorkspaceId,
};
use parley_store::{ChannelAccount, CreateMessages, CreateOutcome, DispatchOutcome, NewOutbound, OutcomeKind, Store};
use parley_testkit::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};
use std::collections::BTreeMap;

on_both_backends!(figures_of_a_scripted_window, bad_queries_are_422_naming_the_parameter);

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-27T00:00:00Z
const D: Millis = Millis(1_795_737_600_000);
const WINDOW: &str = "from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z";

async fn start(backend: Backend) -> Option<TestApp> {
    TestApp::start_with(backend, |c| c.run_workers = false).await
}

fn outbound(ws: WorkspaceId, account: ChannelAccountId, channel: Channel, to: &str, at: Millis) -> NewOutbound {
    let id = MessageId::new();
    let event = |sequence, kind| MessageEvent {
        id: EventId::new(),
        message_id: id,
        sequence,
        kind,
        occurred_at: at,
        recorded_at: at,
        applied: true,
        attempt: None,
        provider_message_id: None,
        error: None,
        retry_at: None,
        details: None,
    };
    NewOutbound {
        message: Message {
            id,
            workspace_id: ws,
            direction: Direction::Outbound,
            channel,
            channel_account_id: account,
            to: to.into(),
            from: None,
            status: MessageState::Queued,
            content: Content::text("hello"),
            send_at: None,
            expires_at: at.plus_millis(7 * DAY),
            validity_seconds: 7 * 86_400,
            metadata: BTreeMap::new(),
            client_reference: None,
            contact_id: None,
            conversation_id: None,
            purpose: None,
            provider_message_id: None,
            attempts: 0,
            error: None,
            sequence: 2,
            created_at: at,
            updated_at: at,
            route: None,
            events: None,
        },
        events: vec![event(1, EventKind::Accepted), event(2, EventKind::Queued)],
        due_at: at,
    }
}

fn template(mut new: NewOutbound, name: &str) -> NewOutbound {
    new.message.content =
        Content::Template { name: name.into(), language: "en".into(), variables: BTreeMap::new(), components: vec![] };
    new
}

async fn create(store: &dyn Store, new: NewOutbound) -> MessageId {
    let (id, ws, at) = (new.message.id, new.message.workspace_id, new.message.created_at);
    let request = CreateMessages { workspace_id: ws, messages: vec![new], idempotency: None, now: at };
    assert_eq!(store.create_messages(request).await.unwrap(), CreateOutcome::Created);
    id
}

fn error(code: &str) -> ErrorInfo {
    ErrorInfo { code: code.into(), detail: "scripted".into(), permanent: true }
}

fn receipt(account: ChannelAccountId, pid: &str, state: MessageState, at: Millis, error: Option<ErrorInfo>) -> Receipt {
    Receipt {
        channel_account_id: account,
        provider_message_id: pid.into(),
        state,
        occurred_at: at,
        error,
        details: None,
    }
}

fn inbound(account: ChannelAccountId, pid: &str, from: &str, at: Millis) -> InboundMessage {
    InboundMessage {
        channel_account_id: account,
        provider_message_id: pid.into(),
        from: from.into(),
        to: None,
        content: Content::text("ok"),
        received_at: at,
        contact_id: None,
    }
}

async fn account_of(store: &dyn Store, ws: WorkspaceId, channel: Channel) -> ChannelAccountId {
    let accounts = store.list_channel_accounts(ws).await.unwrap();
    accounts.iter().find(|a| a.channel == channel).expect("an account for the channel").id
}

/// The expected JSON of one group. `states`: delivered, read, failed, undelivered, rejected,
/// expired, canceled, in flight.
#[allow(clippy::too_many_arguments)]
fn group(
    key: Option<&str>,
    messages: u64,
    states: [u64; 8],
    replied: u64,
    read_receipt_deliveries: u64,
    rates: [Option<f64>; 3],
    failures: &[(&str, u64)],
    times: (u64, Option<i64>, Option<i64>),
) -> Value {
    let [delivered, read, failed, undelivered, rejected, expired, canceled, in_flight] = states;
    json!({
        "key": key,
        "messages": messages,
        "states": {"delivered": delivered, "read": read, "failed": failed, "undelivered": undelivered,
            "rejected": rejected, "expired": expired, "canceled": canceled, "in_flight": in_flight},
        "replied": replied,
        "read_receipt_deliveries": read_receipt_deliveries,
        "delivery_rate": rates[0],
        "read_rate": rates[1],
        "reply_rate": rates[2],
        "failure_reasons": failures.iter().map(|(code, count)| json!({"code": code, "count": count})).collect::<Vec<_>>(),
        "time_to_delivered_ms": {"count": times.0, "p50": times.1, "p95": times.2},
    })
}

fn r(n: u64, d: u64) -> Option<f64> {
    Some(n as f64 / d as f64)
}

/// The scripted window (2026-11-27 and 2026-11-28, UTC):
///
/// | msg | created (from D = 27th 00:00) | channel / account | content | end state | first delivered | reply |
/// |-----|------|------|------|------|------|------|
/// | a1  | +10 h            | SMS S      | text          | delivered  | +1,200 ms | at +2 h: replied |
/// | a2  | +11 h            | SMS S      | text          | delivered  | +3,400 ms | at +24 h exactly: too late |
/// | a3  | +12 h            | WhatsApp W | order_shipped | read       | +800 ms   | from another number: no |
/// | a4  | +24 h − 1 ms     | SMS S      | text          | failed (sandbox:permanent_failure) | – | at +24 h − 1 ms: replied |
/// | a5  | +24 h            | SMS S      | text          | undelivered (sandbox:undeliverable) | – | on account S2: no |
/// | a6  | +25 h            | WhatsApp W | order_shipped | delivered  | +2,000 ms | at +30 min: replied |
/// | a7  | +26 h            | WhatsApp W | appointment_reminder | failed (sandbox:permanent_failure) | – | – |
/// | a8  | +27 h            | SMS S2     | text          | expired (validity_expired) | – | – |
/// | a9  | +28 h            | SMS S      | text          | canceled   | – | – |
/// | a10 | +29 h            | SMS S      | text          | queued (in flight) | – | – |
/// | a11 | +30 h            | WhatsApp W | text          | sent (in flight)   | – | – |
///
/// Outside: one message 1 ms before the window (delivered, replied), one at its end (`to` is
/// exclusive), and another workspace's message inside it.
async fn figures_of_a_scripted_window(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let store = app.engine.store().as_ref();
    let ws = app.workspace_id;
    let s = account_of(store, ws, Channel::Sms).await;
    let w = account_of(store, ws, Channel::Whatsapp).await;
    let s2 = ChannelAccount {
        id: ChannelAccountId::new(),
        workspace_id: ws,
        channel: Channel::Sms,
        provider: "sandbox".into(),
        name: "Second SMS".into(),
        config: json!({}),
        rate_limit_per_second: 10,
        max_in_flight: 10,
        is_default: false,
        created_at: D,
        updated_at: D,
        credentials: None,
        credentials_hint: None,
        deleted_at: None,
    };
    store.create_channel_account(&s2).await.unwrap();
    let s2 = s2.id;
    let at = |ms: i64| D.plus_millis(ms);
    let num = |n: u32| format!("+120255501{n:02}");

    let a1 = create(store, outbound(ws, s, Channel::Sms, &num(1), at(10 * HOUR))).await;
    let a2 = create(store, outbound(ws, s, Channel::Sms, &num(2), at(11 * HOUR))).await;
    let a3 = create(store, template(outbound(ws, w, Channel::Whatsapp, &num(3), at(12 * HOUR)), "order_shipped")).await;
    let a4 = create(store, outbound(ws, s, Channel::Sms, &num(4), at(DAY - 1))).await;
    let a5 = create(store, outbound(ws, s, Channel::Sms, &num(5), at(DAY))).await;
    let a6 = create(store, template(outbound(ws, w, Channel::Whatsapp, &num(6), at(25 * HOUR)), "order_shipped")).await;
    let a7 =
        create(store, template(outbound(ws, w, Channel::Whatsapp, &num(7), at(26 * HOUR)), "appointment_reminder"))
            .await;
    let a8 = create(store, outbound(ws, s2, Channel::Sms, &num(8), at(27 * HOUR))).await;
    let a9 = create(store, outbound(ws, s, Channel::Sms, &num(9), at(28 * HOUR))).await;
    let a11 = create(store, outbound(ws, w, Channel::Whatsapp, &num(11), at(30 * HOUR))).await;
    let b1 = create(store, outbound(ws, s, Channel::Sms, &num(1), at(-1))).await;
    create(store, outbound(ws, s, Channel::Sms, &num(1), at(2 * DAY))).await;
    let (other, other_accounts) = app.engine.create_workspace("Other").await.unwrap();
    let other_sms = other_accounts.iter().find(|a| a.channel == Channel::Sms).unwrap().id;
    create(store, outbound(other.id, other_sms, Channel::Sms, &num(1), at(10 * HOUR))).await;

    assert!(matches!(
        store.cancel_message(ws, a9, at(28 * HOUR + 1)).await.unwrap(),
        parley_store::CancelOutcome::Canceled(_)
    ));
    let claim_at = at(31 * HOUR);
    let claimed = store.claim_jobs("script", claim_at, 60_000, 100).await.unwrap();
    assert_eq!(claimed.jobs.len(), 11, "a1–a8, a11, b1 and the other workspace's; not a9 nor the one at the end");
    // Created after the claim: stays queued.
    create(store, outbound(ws, s, Channel::Sms, &num(10), at(29 * HOUR))).await;

    let outcome =
        |id, kind| DispatchOutcome { message_id: id, lease_owner: "script".into(), attempt: 1, at: claim_at, kind };
    let sent = |pid: &str| OutcomeKind::Sent { provider_message_id: pid.into(), part_ids: Vec::new() };
    store
        .record_outcomes(vec![
            outcome(a1, sent("p1")),
            outcome(a2, sent("p2")),
            outcome(a3, sent("p3")),
            outcome(a4, OutcomeKind::Failed { error: error("sandbox:permanent_failure") }),
            outcome(a5, sent("p5")),
            outcome(a6, sent("p6")),
            outcome(a7, OutcomeKind::Failed { error: error("sandbox:permanent_failure") }),
            outcome(a8, OutcomeKind::Expired { error: error("validity_expired") }),
            outcome(a11, sent("p11")),
            outcome(b1, sent("pb1")),
        ])
        .await
        .unwrap();
    store
        .record_receipts(vec![
            receipt(s, "p1", MessageState::Delivered, at(10 * HOUR + 1_200), None),
            receipt(s, "p2", MessageState::Delivered, at(11 * HOUR + 3_400), None),
            receipt(w, "p3", MessageState::Delivered, at(12 * HOUR + 800), None),
            receipt(w, "p3", MessageState::Read, at(12 * HOUR + 60_000), None),
            receipt(s, "p5", MessageState::Undelivered, at(DAY + 5_000), Some(error("sandbox:undeliverable"))),
            receipt(w, "p6", MessageState::Delivered, at(25 * HOUR + 2_000), None),
            receipt(s, "pb1", MessageState::Delivered, at(10), None),
        ])
        .await
        .unwrap();
    store
        .record_inbound(vec![
            inbound(s, "i1", &num(1), at(12 * HOUR)),
            inbound(s, "i2", &num(2), at(11 * HOUR + DAY)),
            inbound(w, "i3", &num(99), at(13 * HOUR)),
            inbound(s, "i4", &num(4), at(DAY - 1 + DAY - 1)),
            inbound(s2, "i5", &num(5), at(DAY + HOUR)),
            inbound(w, "i6", &num(6), at(25 * HOUR + HOUR / 2)),
            inbound(other_sms, "o1", &num(1), at(10 * HOUR + 1)),
        ])
        .await
        .unwrap();

    // Everything in one group. Delivered a1 a2 a6, read a3; failed a4 a7, undelivered a5,
    // expired a8; canceled a9; in flight a10 a11. Delivery rate (3 + 1) / 8; read rate: of the
    // WhatsApp messages delivered or read (a3, a6), a3 was read; replied a1 a4 a6 of 11.
    // Times to delivered 800, 1200, 2000, 3400: p50 rank ⌈2⌉ = 1200, p95 rank ⌈3.8⌉ = 3400.
    let failures_all = [("sandbox:permanent_failure", 2), ("sandbox:undeliverable", 1), ("validity_expired", 1)];
    let all = app.get_json(&format!("/v1/analytics/messages?{WINDOW}")).await;
    assert_eq!(
        all,
        json!({
            "from": "2026-11-27T00:00:00.000Z",
            "to": "2026-11-29T00:00:00.000Z",
            "group_by": null,
            "groups": [group(None, 11, [3, 1, 2, 1, 0, 1, 1, 2], 3, 2, [r(4, 8), r(1, 2), r(3, 11)], &failures_all,
                (4, Some(1200), Some(3400)))],
        })
    );

    // By channel. SMS: a1 a2 a4 a5 a8 a9 a10; no read receipts, so no read rate; times 1200, 3400.
    // WhatsApp: a3 a6 a7 a11; times 800, 2000.
    let by_channel = app.get_json(&format!("/v1/analytics/messages?{WINDOW}&group_by=channel")).await;
    assert_eq!(by_channel["group_by"], "channel");
    assert_eq!(
        by_channel["groups"],
        json!([
            group(
                Some("sms"),
                7,
                [2, 0, 1, 1, 0, 1, 1, 1],
                2,
                0,
                [r(2, 5), None, r(2, 7)],
                &[("sandbox:permanent_failure", 1), ("sandbox:undeliverable", 1), ("validity_expired", 1)],
                (2, Some(1200), Some(3400))
            ),
            group(
                Some("whatsapp"),
                4,
                [1, 1, 1, 0, 0, 0, 0, 1],
                1,
                2,
                [r(2, 3), r(1, 2), r(1, 4)],
                &[("sandbox:permanent_failure", 1)],
                (2, Some(800), Some(2000))
            ),
        ])
    );

    // By UTC day: a4 (the last millisecond of the 27th) and a5 (the first of the 28th) fall on
    // either side of midnight. 27th: a1 a2 a3 a4, times 800 1200 3400 (p50 rank 2, p95 rank 3).
    let by_day = app.get_json(&format!("/v1/analytics/messages?{WINDOW}&group_by=day")).await;
    assert_eq!(
        by_day["groups"],
        json!([
            group(
                Some("2026-11-27"),
                4,
                [2, 1, 1, 0, 0, 0, 0, 0],
                2,
                1,
                [r(3, 4), r(1, 1), r(2, 4)],
                &[("sandbox:permanent_failure", 1)],
                (3, Some(1200), Some(3400))
            ),
            group(
                Some("2026-11-28"),
                7,
                [1, 0, 1, 1, 0, 1, 1, 2],
                1,
                1,
                [r(1, 4), r(0, 1), r(1, 7)],
                &[("sandbox:permanent_failure", 1), ("sandbox:undeliverable", 1), ("validity_expired", 1)],
                (1, Some(2000), Some(2000))
            ),
        ])
    );

    // By template: the messages without one first (key null): a1 a2 a4 a5 a8 a9 a10 a11.
    let by_template = app.get_json(&format!("/v1/analytics/messages?{WINDOW}&group_by=template")).await;
    assert_eq!(
        by_template["groups"],
        json!([
            group(
                None,
                8,
                [2, 0, 1, 1, 0, 1, 1, 2],
                2,
                0,
                [r(2, 5), None, r(2, 8)],
                &[("sandbox:permanent_failure", 1), ("sandbox:undeliverable", 1), ("validity_expired", 1)],
                (2, Some(1200), Some(3400))
            ),
            group(
                Some("appointment_reminder"),
                1,
                [0, 0, 1, 0, 0, 0, 0, 0],
                0,
                0,
                [r(0, 1), None, r(0, 1)],
                &[("sandbox:permanent_failure", 1)],
                (0, None, None)
            ),
            group(
                Some("order_shipped"),
                2,
                [1, 1, 0, 0, 0, 0, 0, 0],
                1,
                2,
                [r(2, 2), r(1, 2), r(1, 2)],
                &[],
                (2, Some(800), Some(2000))
            ),
        ])
    );

    // By channel account, ordered by id: S has a1 a2 a4 a5 a9 a10, S2 has a8, W has a3 a6 a7 a11.
    let by_account = app.get_json(&format!("/v1/analytics/messages?{WINDOW}&group_by=channel_account")).await;
    let mut expected = vec![
        (
            s.to_string(),
            group(
                Some(&s.to_string()),
                6,
                [2, 0, 1, 1, 0, 0, 1, 1],
                2,
                0,
                [r(2, 4), None, r(2, 6)],
                &[("sandbox:permanent_failure", 1), ("sandbox:undeliverable", 1)],
                (2, Some(1200), Some(3400)),
            ),
        ),
        (
            s2.to_string(),
            group(
                Some(&s2.to_string()),
                1,
                [0, 0, 0, 0, 0, 1, 0, 0],
                0,
                0,
                [r(0, 1), None, r(0, 1)],
                &[("validity_expired", 1)],
                (0, None, None),
            ),
        ),
        (
            w.to_string(),
            group(
                Some(&w.to_string()),
                4,
                [1, 1, 1, 0, 0, 0, 0, 1],
                1,
                2,
                [r(2, 3), r(1, 2), r(1, 4)],
                &[("sandbox:permanent_failure", 1)],
                (2, Some(800), Some(2000)),
            ),
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_account["groups"], Value::Array(expected.into_iter().map(|(_, g)| g).collect()));

    // Another workspace sees its one message (replied to within the minute), and a key that may
    // read messages is enough.
    let other_key = app.engine.create_api_key(other.id, "reader", vec![Scope::MessagesRead]).await.unwrap();
    let theirs = get_as(&app, &other_key.secret, &format!("/v1/analytics/messages?{WINDOW}")).await;
    assert_eq!(theirs.status, 200, "{theirs}");
    assert_eq!(
        theirs["groups"],
        json!([group(None, 1, [0, 0, 0, 0, 0, 0, 0, 1], 1, 0, [None, None, r(1, 1)], &[], (0, None, None))])
    );
    // A window without messages: one empty group when not grouped, no groups when grouped.
    let empty = "from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z";
    assert_eq!(
        app.get_json(&format!("/v1/analytics/messages?{empty}")).await["groups"],
        json!([group(None, 0, [0; 8], 0, 0, [None, None, None], &[], (0, None, None))])
    );
    assert_eq!(app.get_json(&format!("/v1/analytics/messages?{empty}&group_by=day")).await["groups"], json!([]));
    // Offsets other than Z name the same instants: 01:00+01:00 is midnight UTC.
    let shifted =
        app.get_json("/v1/analytics/messages?from=2026-11-27T01:00:00%2B01:00&to=2026-11-29T01:00:00%2B01:00").await;
    assert_eq!(shifted, all);
    app.finish().await;
}

async fn bad_queries_are_422_naming_the_parameter(backend: Backend) {
    let Some(app) = start(backend).await else { return };
    let path = |q: &str| format!("/v1/analytics/messages?{q}");
    for (query, param) in [
        ("to=2026-11-29T00:00:00Z", "from"),
        ("from=2026-11-27T00:00:00Z", "to"),
        ("from=yesterday&to=2026-11-29T00:00:00Z", "from"),
        ("from=2026-11-27T00:00:00&to=2026-11-29T00:00:00Z", "from"),
        ("from=2026-11-27T00:00:00Z&to=", "to"),
        ("from=2026-11-29T00:00:00Z&to=2026-11-27T00:00:00Z", "to"),
        ("from=2026-11-27T00:00:00Z&to=2026-11-27T00:00:00Z", "to"),
        ("from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:00.001Z", "to"),
        ("from=2025-01-01T00:00:00Z&to=2026-01-03T00:00:00Z", "to"),
        ("from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z&group_by=week", "group_by"),
        ("from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z&group_by=", "group_by"),
    ] {
        let a = get(&app, &path(query)).await;
        a.problem(422, "validation_failed").names(param);
        assert_eq!(a.param_names(), [param], "{query}: {a}");
    }
    // Everything wrong at once is named at once.
    let a = get(&app, &path("group_by=hour")).await;
    a.problem(422, "validation_failed");
    assert_eq!(a.param_names(), ["from", "to", "group_by"], "{a}");
    // Exactly 366 days is allowed (2025-01-01 to 2026-01-02).
    let a = get(&app, &path("from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:00Z")).await;
    assert_eq!(a.status, 200, "{a}");
    // A parameter the route does not know, as on every route.
    get(&app, &path("from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z&channel=sms"))
        .await
        .problem(400, "invalid_query")
        .names("channel");
    // The key needs messages:read.
    let writer = app.engine.create_api_key(app.workspace_id, "writer", vec![Scope::MessagesWrite]).await.unwrap();
    get_as(&app, &writer.secret, &path("from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z"))
        .await
        .problem(403, "forbidden");
    let a = Answer::read(app.http.get(app.url(&path(""))).send().await.unwrap()).await;
    a.problem(401, "unauthorized");
    app.finish().await;
}
