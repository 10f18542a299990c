//! Receipt details, and messages the provider split into parts (each with a provider id of its
//! own): a part's receipt is recorded without moving the message; the last part to be final
//! resolves it.

use crate::support::*;
use serde_json::json;

/// A message claimed and sent as `ids.len()` parts (the first id is the message's).
async fn sent_in_parts(f: &Fixture, to: &str, ids: &[&str]) -> MessageId {
    let id = f.send(to, T0).await;
    f.claim("w", T0).await;
    f.outcome(id, "w", 1, T0.plus_millis(10), sent(ids)).await;
    id
}

fn sent(ids: &[&str]) -> OutcomeKind {
    OutcomeKind::Sent {
        provider_message_id: ids[0].to_string(),
        part_ids: if ids.len() > 1 { ids.iter().map(|s| s.to_string()).collect() } else { Vec::new() },
    }
}

fn undeliverable() -> ErrorInfo {
    ErrorInfo { code: "smpp:UNDELIV".into(), detail: "err:001".into(), permanent: true }
}

/// (kind, applied, provider id, details) of the events after the first four (accepted, queued,
/// sending, sent).
fn after_sent(m: &Message) -> Vec<(EventKind, bool, Option<String>, Option<serde_json::Value>)> {
    m.events
        .iter()
        .flatten()
        .skip(4)
        .map(|e| (e.kind, e.applied, e.provider_message_id.clone(), e.details.clone()))
        .collect()
}

pub async fn receipt_details_are_kept_on_the_event(f: Fixture) {
    let pricing = json!({"pricing": {"billable": true, "category": "utility"}, "conversation": {"id": "c-1"}});
    let id = f.send("+4915111111111", T0).await;
    f.claim("w", T0).await;
    f.outcome(id, "w", 1, T0.plus_millis(10), sent(&["w-1"])).await;
    let mut receipt = f.receipt("w-1", MessageState::Delivered, T0.plus_millis(20));
    receipt.details = Some(pricing.clone());
    f.store.record_receipts(vec![receipt]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!(after_sent(&m), [(EventKind::Delivered, true, Some("w-1".into()), Some(pricing.clone()))]);
    assert_eq!(m.events.as_ref().unwrap()[3].details, None, "the sent outcome has none");

    // Kept while the receipt waits for its message, and restored when the outcome lands.
    let early = f.send("+4915122222222", T0).await;
    f.claim("w", T0).await;
    let mut receipt = f.receipt("w-2", MessageState::Undelivered, T0.plus_millis(20));
    receipt.details = Some(json!({"text": "id:w-2 stat:UNDELIV err:001"}));
    f.store.record_receipts(vec![receipt]).await.unwrap();
    assert_eq!(f.db.count("pending_receipts").await, 1);
    f.outcome(early, "w", 1, T0.plus_millis(30), sent(&["w-2"])).await;
    let m = f.get(early).await;
    assert_eq!(m.status, MessageState::Undelivered);
    assert_eq!(
        after_sent(&m),
        [(EventKind::Undelivered, true, Some("w-2".into()), Some(json!({"text": "id:w-2 stat:UNDELIV err:001"})))]
    );

    // The feed gives them too.
    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    let said: Vec<_> = feed.iter().filter_map(|e| e.message_event()?.details.clone()).collect();
    assert_eq!(said, [pricing, json!({"text": "id:w-2 stat:UNDELIV err:001"})]);
    let last = feed.last().unwrap();
    let by_id = f.store.feed_events_by_id(f.ws, &[last.id()]).await.unwrap();
    assert_eq!(by_id[0], *last);
}

pub async fn parts_delivered_in_any_order_deliver_the_message_once(f: Fixture) {
    let id = sent_in_parts(&f, "+4915111111111", &["s-1", "s-2", "s-3"]).await;
    assert_eq!(f.db.count("message_parts").await, 3);
    let at = |ms| T0.plus_millis(ms);
    // Part 3 first, a non-final receipt for part 1, then parts 1 and 2.
    f.store.record_receipts(vec![f.receipt("s-3", MessageState::Delivered, at(100))]).await.unwrap();
    f.store.record_receipts(vec![f.receipt("s-1", MessageState::Sent, at(110))]).await.unwrap();
    f.store.record_receipts(vec![f.receipt("s-1", MessageState::Delivered, at(120))]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!(m.status, MessageState::Sent, "parts never move the message on their own");
    f.store.record_receipts(vec![f.receipt("s-2", MessageState::Delivered, at(130))]).await.unwrap();

    let m = f.get(id).await;
    assert_eq!(
        (m.status, m.error.clone(), m.provider_message_id.as_deref()),
        (MessageState::Delivered, None, Some("s-1"))
    );
    let part = |n| Some(json!({"part": n, "parts": 3}));
    assert_eq!(
        after_sent(&m),
        [
            (EventKind::Delivered, false, Some("s-3".into()), part(3)),
            (EventKind::Sent, false, Some("s-1".into()), part(1)),
            (EventKind::Delivered, false, Some("s-1".into()), part(1)),
            (EventKind::Delivered, false, Some("s-2".into()), part(2)),
            (EventKind::Delivered, true, Some("s-1".into()), Some(json!({"parts": 3}))),
        ]
    );
    let resolving = m.events.as_ref().unwrap().last().unwrap().clone();
    assert_eq!(resolving.occurred_at, at(130), "when the last part was delivered");
    assert_eq!(m.sequence, 9);
    // Analytics time the message's delivery, not its first part's.
    let rows = f.store.outbound_analytics(f.ws, T0.plus_seconds(-3600), T0.plus_seconds(3600)).await.unwrap();
    let row = rows.iter().find(|r| r.id == id).expect("the message's analytics row");
    assert_eq!(row.first_delivered_at, Some(at(130)));
}

pub async fn a_part_undelivered_fails_the_message_once_all_parts_are_final(f: Fixture) {
    let id = sent_in_parts(&f, "+4915111111111", &["u-1", "u-2", "u-3"]).await;
    let mut failed = f.receipt("u-2", MessageState::Undelivered, T0.plus_millis(100));
    failed.error = Some(undeliverable());
    failed.details = Some(json!({"text": "stat:UNDELIV"}));
    f.store
        .record_receipts(vec![failed, f.receipt("u-1", MessageState::Delivered, T0.plus_millis(101))])
        .await
        .unwrap();
    let m = f.get(id).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Sent, None), "one part is still out");
    f.store.record_receipts(vec![f.receipt("u-3", MessageState::Delivered, T0.plus_millis(150))]).await.unwrap();

    let m = f.get(id).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Undelivered, Some(undeliverable())));
    let events = after_sent(&m);
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0],
        (
            EventKind::Undelivered,
            false,
            Some("u-2".into()),
            Some(json!({"text": "stat:UNDELIV", "part": 2, "parts": 3}))
        )
    );
    assert_eq!(events[3], (EventKind::Undelivered, true, Some("u-1".into()), Some(json!({"parts": 3}))));
    let resolving = m.events.as_ref().unwrap().last().unwrap().clone();
    assert_eq!(resolving.error, Some(undeliverable()));
    // The part's event carries its own error.
    assert_eq!(m.events.as_ref().unwrap()[4].error, Some(undeliverable()));
}

pub async fn part_receipts_before_the_sent_outcome_are_applied_when_it_lands(f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    f.claim("w", T0).await;
    // Every part's receipt overtakes the answer to the send, the second part's one twice.
    let mut second = f.receipt("e-2", MessageState::Delivered, T0.plus_millis(50));
    second.details = Some(json!({"text": "stat:DELIVRD"}));
    f.store
        .record_receipts(vec![
            f.receipt("e-3", MessageState::Delivered, T0.plus_millis(40)),
            second.clone(),
            f.receipt("e-1", MessageState::Delivered, T0.plus_millis(60)),
        ])
        .await
        .unwrap();
    f.store.record_receipts(vec![second]).await.unwrap();
    assert_eq!(f.db.count("pending_receipts").await, 4);
    assert_eq!(f.get(id).await.status, MessageState::Sending);

    f.outcome(id, "w", 1, T0.plus_millis(100), sent(&["e-1", "e-2", "e-3"])).await;
    assert_eq!(f.db.count("pending_receipts").await, 0, "the kept receipts of every part are taken");
    let m = f.get(id).await;
    assert_eq!(m.status, MessageState::Delivered);
    let part = |n: i64| Some(json!({"part": n, "parts": 3}));
    assert_eq!(
        after_sent(&m),
        [
            (EventKind::Delivered, false, Some("e-3".into()), part(3)),
            (
                EventKind::Delivered,
                false,
                Some("e-2".into()),
                Some(json!({"text": "stat:DELIVRD", "part": 2, "parts": 3}))
            ),
            (
                EventKind::Delivered,
                false,
                Some("e-2".into()),
                Some(json!({"text": "stat:DELIVRD", "part": 2, "parts": 3}))
            ),
            (EventKind::Delivered, false, Some("e-1".into()), part(1)),
            (EventKind::Delivered, true, Some("e-1".into()), Some(json!({"parts": 3}))),
        ]
    );

    // Some before, some after.
    let id = f.send("+4915122222222", T0).await;
    f.claim("w", T0).await;
    f.store.record_receipts(vec![f.receipt("l-2", MessageState::Delivered, T0.plus_millis(40))]).await.unwrap();
    f.outcome(id, "w", 1, T0.plus_millis(100), sent(&["l-1", "l-2"])).await;
    assert_eq!(f.get(id).await.status, MessageState::Sent);
    let mut failed = f.receipt("l-1", MessageState::Failed, T0.plus_millis(200));
    failed.error = Some(undeliverable());
    f.store.record_receipts(vec![failed]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!((m.status, m.error), (MessageState::Failed, Some(undeliverable())));
}

pub async fn a_duplicate_part_receipt_changes_nothing(f: Fixture) {
    let id = sent_in_parts(&f, "+4915111111111", &["d-1", "d-2"]).await;
    f.store.record_receipts(vec![f.receipt("d-1", MessageState::Delivered, T0.plus_millis(100))]).await.unwrap();
    // The same receipt again does not count as the second part.
    f.store.record_receipts(vec![f.receipt("d-1", MessageState::Delivered, T0.plus_millis(100))]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!(m.status, MessageState::Sent);
    assert_eq!(after_sent(&m).iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(EventKind::Delivered, false); 2]);

    f.store.record_receipts(vec![f.receipt("d-2", MessageState::Delivered, T0.plus_millis(200))]).await.unwrap();
    assert_eq!(f.get(id).await.status, MessageState::Delivered);
    // Once resolved, more part receipts (repeats, late failures) are recorded and change nothing.
    let mut late = f.receipt("d-2", MessageState::Undelivered, T0.plus_millis(300));
    late.error = Some(undeliverable());
    f.store.record_receipts(vec![f.receipt("d-2", MessageState::Delivered, T0.plus_millis(200)), late]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Delivered, None));
    let applied: Vec<EventKind> = after_sent(&m).into_iter().filter(|e| e.1).map(|e| e.0).collect();
    assert_eq!(applied, [EventKind::Delivered], "one resolving event");
    assert_eq!(after_sent(&m).len(), 6);

    // A second `sent` outcome for the message (a stale claim) keeps what the parts know.
    f.outcome(id, "w", 1, T0.plus_millis(400), sent(&["d-1", "d-2"])).await;
    assert_eq!(f.db.count("message_parts").await, 2);
    f.store.record_receipts(vec![f.receipt("d-1", MessageState::Delivered, T0.plus_millis(500))]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!(after_sent(&m).into_iter().filter(|e| e.1).count(), 1);
}

pub async fn single_part_messages_keep_no_parts(f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    f.claim("w", T0).await;
    // One part id is one part: the message's own id.
    f.outcome(
        id,
        "w",
        1,
        T0.plus_millis(10),
        OutcomeKind::Sent { provider_message_id: "o-1".into(), part_ids: vec!["o-1".into()] },
    )
    .await;
    assert_eq!(f.db.count("message_parts").await, 0);
    f.store.record_receipts(vec![f.receipt("o-1", MessageState::Delivered, T0.plus_millis(20))]).await.unwrap();
    let m = f.get(id).await;
    assert_eq!(after_sent(&m), [(EventKind::Delivered, true, Some("o-1".into()), None)]);
}

pub async fn concurrent_part_receipts_resolve_each_message_once(f: Fixture) {
    let peer = f.peer().await;
    let mut messages = Vec::new();
    for i in 0..20 {
        let ids: Vec<String> = (1..=3).map(|p| format!("c-{i}-{p}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        messages.push((sent_in_parts(&f, &format!("+49151{i:08}"), &refs).await, ids));
    }
    // Every part's receipt on its own, from two stores at once.
    let mut tasks = Vec::new();
    for (n, (_, ids)) in messages.iter().enumerate() {
        for (p, pid) in ids.iter().enumerate() {
            let store = if (n + p) % 2 == 0 { f.store.clone() } else { peer.clone() };
            let receipt = f.receipt(pid, MessageState::Delivered, T0.plus_millis(100));
            tasks.push(tokio::spawn(async move { store.record_receipts(vec![receipt]).await }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for (id, _) in &messages {
        let m = f.get(*id).await;
        assert_eq!(m.status, MessageState::Delivered, "{id}");
        let applied = after_sent(&m).into_iter().filter(|e| e.1).count();
        assert_eq!((applied, after_sent(&m).len()), (1, 4), "{id}");
    }
}

pub async fn parts_of_old_messages_are_purged(f: Fixture) {
    sent_in_parts(&f, "+4915111111111", &["old-1", "old-2"]).await;
    assert_eq!(f.db.count("message_parts").await, 2);
    // Messages created at T0 are not older than T0.
    assert_eq!(f.store.purge_message_parts(T0).await.unwrap(), 0);
    assert_eq!(f.store.purge_message_parts(T0.plus_millis(1)).await.unwrap(), 2);
    assert_eq!(f.db.count("message_parts").await, 0);
}
