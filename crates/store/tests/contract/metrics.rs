//! What `/metrics` reads from the store: messages by channel and state across workspaces, and the
//! jobs a dispatcher could claim now.

use crate::support::*;
use parley_store::MetricsSnapshot;

pub async fn metrics_snapshot_counts_messages_and_claimable_jobs(f: Fixture) {
    assert_eq!(f.store.metrics_snapshot(T0).await.unwrap(), MetricsSnapshot::default(), "an empty store");

    // Three SMS and one WhatsApp message of this workspace, two SMS of another, one scheduled.
    let mut sms = Vec::new();
    for i in 0..3 {
        sms.push(f.send("+4915111111111", T0.plus_millis(i)).await);
    }
    let whatsapp = outbound(f.ws, f.whatsapp, Channel::Whatsapp, "+4915122222222", T0.plus_millis(10));
    f.store.create_messages(request(f.ws, vec![whatsapp], T0.plus_millis(10))).await.unwrap();
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    let theirs =
        (0..2).map(|_| outbound(other, other_sms, Channel::Sms, "+4915133333333", T0.plus_millis(20))).collect();
    f.store.create_messages(request(other, theirs, T0.plus_millis(20))).await.unwrap();
    let later = T0.plus_seconds(3600);
    let scheduled = outbound_at(f.ws, f.sms, Channel::Sms, "+4915144444444", T0, Some(later));
    f.store.create_messages(request(f.ws, vec![scheduled], T0)).await.unwrap();

    let snapshot = f.store.metrics_snapshot(T0.plus_millis(100)).await.unwrap();
    assert_eq!(
        snapshot,
        MetricsSnapshot {
            messages: vec![
                (Channel::Sms, MessageState::Queued, 5),
                (Channel::Sms, MessageState::Scheduled, 1),
                (Channel::Whatsapp, MessageState::Queued, 1),
            ],
            due_jobs: 6,
            oldest_due_at: Some(T0),
        }
    );
    // Only what is due counts: at T0 + 5 ms, the first three.
    let early = f.store.metrics_snapshot(T0.plus_millis(5)).await.unwrap();
    assert_eq!((early.due_jobs, early.oldest_due_at), (3, Some(T0)));

    // Leased jobs are not waiting; the oldest waiting one is the third SMS.
    let claimed = f.store.claim_jobs("w", T0.plus_millis(100), LEASE_MS, 2).await.unwrap();
    let claimed: Vec<MessageId> = claimed.jobs.iter().map(|j| j.message.id).collect();
    assert_eq!(claimed, sms[..2]);
    let snapshot = f.store.metrics_snapshot(T0.plus_millis(200)).await.unwrap();
    assert_eq!((snapshot.due_jobs, snapshot.oldest_due_at), (4, Some(T0.plus_millis(2))));
    assert!(snapshot.messages.contains(&(Channel::Sms, MessageState::Sending, 2)), "{snapshot:?}");
    assert!(snapshot.messages.contains(&(Channel::Sms, MessageState::Queued, 3)), "{snapshot:?}");

    // Outcomes end the jobs and move the counts; an inbound message counts in its channel.
    let at = T0.plus_millis(300);
    f.outcome(claimed[0], "w", 1, at, OutcomeKind::Sent { provider_message_id: "p-1".into(), part_ids: Vec::new() })
        .await;
    let permanent = ErrorInfo { code: "sandbox:invalid_number".into(), detail: "no".into(), permanent: true };
    f.outcome(claimed[1], "w", 1, at, OutcomeKind::Failed { error: permanent }).await;
    let inbound = InboundMessage {
        channel_account_id: f.whatsapp,
        provider_message_id: "in-1".into(),
        from: "+4915199999999".into(),
        to: None,
        content: Content::text("hi"),
        received_at: at,
        contact_id: None,
    };
    assert_eq!(f.store.record_inbound(vec![inbound]).await.unwrap().len(), 1);
    let snapshot = f.store.metrics_snapshot(at).await.unwrap();
    assert_eq!(
        snapshot.messages,
        vec![
            (Channel::Sms, MessageState::Failed, 1),
            (Channel::Sms, MessageState::Queued, 3),
            (Channel::Sms, MessageState::Scheduled, 1),
            (Channel::Sms, MessageState::Sent, 1),
            (Channel::Whatsapp, MessageState::Queued, 1),
            (Channel::Whatsapp, MessageState::Received, 1),
        ]
    );
    assert_eq!(snapshot.due_jobs, 4);

    // Everything due claimed: nothing waits, until the leases run out.
    assert_eq!(f.claim("w", at).await.jobs.len(), 4);
    let snapshot = f.store.metrics_snapshot(at.plus_millis(1)).await.unwrap();
    assert_eq!((snapshot.due_jobs, snapshot.oldest_due_at), (0, None));
    let lapsed = f.store.metrics_snapshot(at.plus_millis(LEASE_MS)).await.unwrap();
    assert_eq!((lapsed.due_jobs, lapsed.oldest_due_at), (4, Some(T0.plus_millis(2))));
    // The scheduled one waits from its send time on.
    let due = f.store.metrics_snapshot(later).await.unwrap();
    assert_eq!((due.due_jobs, due.oldest_due_at), (5, Some(T0.plus_millis(2))));
}
