//! The dispatch queue: claims and leases, outcomes, receipts, cancellation, inbound messages.

use crate::support::*;

pub async fn concurrent_claimers_never_get_the_same_job(f: Fixture) {
    let second = f.peer().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = f.store.clone();
        let batch: Vec<NewOutbound> =
            (0..10).map(|_| outbound(f.ws, f.sms, Channel::Sms, "+4915111111111", T0.plus_millis(i))).collect();
        let req = request(f.ws, batch, T0.plus_millis(i));
        tasks.push(tokio::spawn(async move { store.create_messages(req).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), CreateOutcome::Created);
    }

    let now = T0.plus_seconds(10);
    let mut claimers = Vec::new();
    for c in 0..8 {
        let store: Arc<dyn Store> = if c % 2 == 0 { f.store.clone() } else { second.clone() };
        claimers.push(tokio::spawn(async move {
            let owner = format!("claimer-{c}");
            let mut got = Vec::new();
            loop {
                let batch = store.claim_jobs(&owner, now, 60_000, 25).await.unwrap();
                if batch.jobs.is_empty() {
                    return got;
                }
                for job in batch.jobs {
                    assert_eq!((job.attempt, job.message.status, job.message.attempts), (1, MessageState::Sending, 1));
                    assert_eq!(job.lease_until, now.plus_millis(60_000));
                    got.push(job.message.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: HashSet<MessageId> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (2000, 2000));
    assert!(f.claim("late", now).await.jobs.is_empty());
    assert_eq!(f.store.message_stats(f.ws).await.unwrap().count(MessageState::Sending), 2000);
}

pub async fn a_lease_that_runs_out_makes_the_job_claimable_again(f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    let first = f.claim("a", T0).await;
    assert_eq!(first.jobs.len(), 1);
    let job = &first.jobs[0];
    assert_eq!((job.attempt, job.lease_until), (1, T0.plus_millis(LEASE_MS)));
    assert_eq!(job.message.sequence, 3);
    assert!(f.claim("b", T0.plus_millis(LEASE_MS - 1)).await.jobs.is_empty());
    assert_eq!(f.store.cancel_message(f.ws, id, T0.plus_millis(1)).await.unwrap().status(), "in_flight");

    let second = f.claim("b", T0.plus_millis(LEASE_MS)).await;
    assert_eq!(second.jobs.len(), 1);
    assert_eq!((second.jobs[0].attempt, second.jobs[0].message.attempts), (2, 2));
    // Already sending: no new event.
    let message = f.get(id).await;
    assert_eq!(
        kinds(&message),
        vec![(EventKind::Accepted, true), (EventKind::Queued, true), (EventKind::Sending, true)]
    );
    assert_eq!(message.events.as_ref().unwrap()[2].attempt, Some(1));

    // Releasing gives the job, and the claim's attempt, back at once.
    assert_eq!(f.store.release_leases("a").await.unwrap(), 0);
    assert_eq!(f.store.release_leases("b").await.unwrap(), 1);
    assert_eq!(f.get(id).await.attempts, 1);
    let third = f.claim("c", T0.plus_millis(LEASE_MS + 1)).await;
    assert_eq!(third.jobs.first().map(|j| j.attempt), Some(2));
}

pub async fn sent_then_receipts_move_forward_only(f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    let claim = f.claim("d", T0.plus_millis(100)).await;
    assert_eq!(claim.jobs.len(), 1);
    assert_eq!(claim.jobs[0].message.updated_at, T0.plus_millis(100));
    f.outcome(
        id,
        "d",
        1,
        T0.plus_millis(200),
        OutcomeKind::Sent { provider_message_id: "p-1".into(), part_ids: Vec::new() },
    )
    .await;
    let sent = f.get(id).await;
    assert_eq!((sent.status, sent.provider_message_id.as_deref()), (MessageState::Sent, Some("p-1")));
    // The dispatcher's observations are recorded at the time it gives.
    let event = sent.events.as_ref().unwrap()[3].clone();
    assert_eq!(
        (event.kind, event.occurred_at, event.recorded_at),
        (EventKind::Sent, T0.plus_millis(200), T0.plus_millis(200))
    );
    assert_eq!((event.attempt, sent.updated_at), (Some(1), T0.plus_millis(200)));
    assert!(f.claim("d", T0.plus_seconds(3600)).await.jobs.is_empty(), "the job is gone");
    assert_eq!(f.store.cancel_message(f.ws, id, T0.plus_millis(300)).await.unwrap().status(), "not_cancelable");

    f.store
        .record_receipts(vec![
            f.receipt("p-1", MessageState::Delivered, T0.plus_millis(5000)),
            f.receipt("p-1", MessageState::Sent, T0.plus_millis(300)),
        ])
        .await
        .unwrap();
    f.store.record_receipts(vec![f.receipt("p-1", MessageState::Undelivered, T0.plus_millis(6000))]).await.unwrap();
    let message = f.get(id).await;
    assert_eq!(message.status, MessageState::Delivered);
    assert_eq!(message.error, None, "a late failure does not mark a delivered message");
    assert_eq!(
        kinds(&message),
        vec![
            (EventKind::Accepted, true),
            (EventKind::Queued, true),
            (EventKind::Sending, true),
            (EventKind::Sent, true),
            (EventKind::Delivered, true),
            (EventKind::Sent, false),
            (EventKind::Undelivered, false),
        ]
    );
    let events = message.events.unwrap();
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(message.sequence, 7);
    assert_eq!(events[3].provider_message_id.as_deref(), Some("p-1"));
    assert_eq!(events[4].occurred_at, T0.plus_millis(5000));
    assert_eq!(f.store.delivery_latencies_ms(f.ws).await.unwrap(), vec![5000]);
}

pub async fn a_receipt_before_the_sent_outcome_is_kept_and_applied_later(f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    f.claim("d", T0).await;
    // The provider's receipt overtakes the answer to the send.
    f.store.record_receipts(vec![f.receipt("p-2", MessageState::Delivered, T0.plus_millis(900))]).await.unwrap();
    assert_eq!(f.get(id).await.status, MessageState::Sending);
    assert_eq!(f.db.count("pending_receipts").await, 1);

    f.outcome(
        id,
        "d",
        1,
        T0.plus_millis(1000),
        OutcomeKind::Sent { provider_message_id: "p-2".into(), part_ids: Vec::new() },
    )
    .await;
    let message = f.get(id).await;
    assert_eq!(message.status, MessageState::Delivered);
    assert_eq!(kinds(&message)[3..], [(EventKind::Sent, true), (EventKind::Delivered, true)]);
    assert_eq!(f.db.count("pending_receipts").await, 0);

    // A receipt for another account's message of the same provider id is kept apart.
    let mut other = f.receipt("p-2", MessageState::Delivered, T0);
    other.channel_account_id = f.whatsapp;
    f.store.record_receipts(vec![other]).await.unwrap();
    assert_eq!(f.get(id).await.sequence, 5);
    assert_eq!(f.db.count("pending_receipts").await, 1);

    // One that never finds its message is deleted once it is old enough, and only then.
    let now = parley_domain::Millis::now();
    assert_eq!(f.store.purge_pending_receipts(now.plus_seconds(-3600)).await.unwrap(), 0);
    assert_eq!(f.db.count("pending_receipts").await, 1);
    assert_eq!(f.store.purge_pending_receipts(now.plus_seconds(5)).await.unwrap(), 1);
    assert_eq!(f.db.count("pending_receipts").await, 0);
}

pub async fn retry_failure_and_release_outcomes(f: Fixture) {
    let retried = f.send("+4915111111111", T0).await;
    let failed = f.send("+4915122222222", T0).await;
    let released = f.send("+4915133333333", T0).await;
    assert_eq!(f.claim("w", T0).await.jobs.len(), 3);

    let transient = ErrorInfo { code: "sandbox:throttled".into(), detail: "slow down".into(), permanent: false };
    let permanent =
        ErrorInfo { code: "sandbox:invalid_number".into(), detail: "no such number".into(), permanent: true };
    let at = T0.plus_millis(500);
    let retry_at = T0.plus_seconds(60);
    let outcome = |id, kind| DispatchOutcome { message_id: id, lease_owner: "w".into(), attempt: 1, at, kind };
    f.store
        .record_outcomes(vec![
            outcome(retried, OutcomeKind::Retry { error: transient.clone(), retry_at }),
            outcome(failed, OutcomeKind::Failed { error: permanent.clone() }),
            outcome(released, OutcomeKind::Release { due_at: T0.plus_seconds(5) }),
        ])
        .await
        .unwrap();

    let m = f.get(retried).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Sending, Some(transient.clone())));
    let last = m.events.as_ref().unwrap().last().unwrap().clone();
    assert_eq!(
        (last.kind, last.applied, last.retry_at, last.error),
        (EventKind::AttemptFailed, false, Some(retry_at), Some(transient))
    );
    let m = f.get(failed).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Failed, Some(permanent)));
    let m = f.get(released).await;
    assert_eq!((m.status, m.attempts, m.sequence), (MessageState::Sending, 0, 3));

    // The released job is due at its due time, with the attempt given back; the retried one at
    // its retry time; the failed one never.
    let early = f.claim("w", T0.plus_seconds(5)).await;
    assert_eq!(early.jobs.iter().map(|j| (j.message.id, j.attempt)).collect::<Vec<_>>(), vec![(released, 1)]);
    f.outcome(
        released,
        "w",
        1,
        T0.plus_seconds(6),
        OutcomeKind::Sent { provider_message_id: "p-9".into(), part_ids: Vec::new() },
    )
    .await;
    let later = f.claim("w", retry_at).await;
    assert_eq!(later.jobs.iter().map(|j| (j.message.id, j.attempt)).collect::<Vec<_>>(), vec![(retried, 2)]);
    assert_eq!(f.get(retried).await.sequence, 4, "a retry claims without a new event");

    // An outcome from a claim that lost its lease leaves the current holder's job alone.
    f.outcome(retried, "someone-else", 1, retry_at, OutcomeKind::Release { due_at: retry_at }).await;
    assert!(f.claim("x", retry_at.plus_millis(1)).await.jobs.is_empty());
    let much_later = f.claim("x", T0.plus_seconds(1800)).await;
    assert_eq!(much_later.jobs.iter().map(|j| (j.message.id, j.attempt)).collect::<Vec<_>>(), vec![(retried, 3)]);
    // Sent at last: the transient error is over.
    let at = T0.plus_seconds(1801);
    f.outcome(retried, "x", 3, at, OutcomeKind::Sent { provider_message_id: "p-10".into(), part_ids: Vec::new() })
        .await;
    let m = f.get(retried).await;
    assert_eq!((m.status, m.error, m.attempts), (MessageState::Sent, None, 3));
}

/// A message's error is the one that ended it, or the latest transient one while it is retried:
/// outcomes that come from a claim which lost its lease, after another ended the message, change
/// neither its state nor its error.
pub async fn stale_outcomes_leave_the_error_that_ended_the_message(f: Fixture) {
    let transient = ErrorInfo { code: "sandbox:throttled".into(), detail: "slow down".into(), permanent: false };
    let permanent =
        ErrorInfo { code: "sandbox:invalid_number".into(), detail: "no such number".into(), permanent: true };
    let retry = |at: Millis| OutcomeKind::Retry { error: transient.clone(), retry_at: at.plus_seconds(60) };
    let sent = |pid: &str| OutcomeKind::Sent { provider_message_id: pid.into(), part_ids: Vec::new() };

    // "a" stalls past its lease; "b" takes the job over and fails the message for good. Then "a"
    // comes back with what it saw.
    let failed = f.send("+4915111111111", T0).await;
    let sent_by_b = f.send("+4915122222222", T0).await;
    assert_eq!(f.claim("a", T0).await.jobs.len(), 2);
    let taken_over = f.claim("b", T0.plus_millis(LEASE_MS)).await;
    assert_eq!(taken_over.jobs.iter().map(|j| j.attempt).collect::<Vec<_>>(), [2, 2]);
    let at = T0.plus_millis(LEASE_MS + 10);
    f.outcome(failed, "b", 2, at, OutcomeKind::Failed { error: permanent.clone() }).await;
    f.outcome(sent_by_b, "b", 2, at, sent("p-b")).await;
    let late = T0.plus_millis(LEASE_MS + 20);
    for id in [failed, sent_by_b] {
        f.outcome(id, "a", 1, late, retry(late)).await;
        f.outcome(id, "a", 1, late, sent("p-a")).await;
    }
    // A failure after `sent` is a move the state machine allows (the provider may still refuse
    // the message); after `failed` nothing moves.
    f.outcome(failed, "a", 1, late, OutcomeKind::Failed { error: transient.clone() }).await;
    f.outcome(failed, "a", 1, late, OutcomeKind::Expired { error: transient.clone() }).await;
    let m = f.get(failed).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Failed, Some(permanent.clone())));
    assert_eq!(
        kinds(&m)[3..],
        [
            (EventKind::Failed, true),
            (EventKind::AttemptFailed, false),
            (EventKind::Sent, false),
            (EventKind::Failed, false),
            (EventKind::Expired, false)
        ]
    );
    assert_eq!(m.provider_message_id.as_deref(), Some("p-a"), "a sent outcome stores the provider id");
    let m = f.get(sent_by_b).await;
    assert_eq!((m.status, m.error.clone()), (MessageState::Sent, None));
    assert_eq!(kinds(&m)[3..], [(EventKind::Sent, true), (EventKind::AttemptFailed, false), (EventKind::Sent, false)]);
    assert!(f.claim("c", late.plus_seconds(3600)).await.jobs.is_empty(), "no job comes back");

    // A transient error is the message's error while it waits for its next attempt; a retry that
    // comes when the message can no longer be sent does not set one.
    let retried = f.send("+4915133333333", T0).await;
    assert_eq!(f.claim("a", T0).await.jobs.len(), 1);
    f.outcome(retried, "a", 1, T0.plus_millis(10), retry(T0)).await;
    assert_eq!(f.get(retried).await.error, Some(transient.clone()));
    let canceled = f.store.cancel_message(f.ws, retried, T0.plus_millis(20)).await.unwrap();
    assert_eq!(canceled.status(), "canceled");
    let error = f.get(retried).await.error;
    let other = ErrorInfo { code: "sandbox:busy".into(), ..transient.clone() };
    let stale = OutcomeKind::Retry { error: other, retry_at: T0.plus_seconds(120) };
    f.outcome(retried, "a", 1, T0.plus_millis(30), stale).await;
    let m = f.get(retried).await;
    assert_eq!((m.status, m.error), (MessageState::Canceled, error));
    assert!(f.claim("c", T0.plus_seconds(3600)).await.jobs.is_empty(), "a stale retry brings no job back");
}

pub async fn cancel_outcomes(f: Fixture) {
    let queued = f.send("+4915111111111", T0).await;
    let canceled = f.store.cancel_message(f.ws, queued, T0.plus_millis(10)).await.unwrap();
    let CancelOutcome::Canceled(message) = canceled else { panic!("expected canceled, got {canceled:?}") };
    assert_eq!((message.status, message.sequence, message.updated_at), (MessageState::Canceled, 3, T0.plus_millis(10)));
    assert_eq!(kinds(&f.get(queued).await).last(), Some(&(EventKind::Canceled, true)));
    assert!(matches!(
        f.store.cancel_message(f.ws, queued, T0.plus_millis(20)).await.unwrap(),
        CancelOutcome::NotCancelable(MessageState::Canceled)
    ));
    assert!(f.claim("a", T0.plus_seconds(10)).await.jobs.is_empty(), "a canceled message is not sent");

    assert_eq!(f.store.cancel_message(f.ws, MessageId::new(), T0).await.unwrap().status(), "not_found");
    let other = workspace(&*f.store, "Other").await;
    let leased = f.send("+4915122222222", T0).await;
    assert_eq!(f.store.cancel_message(other, leased, T0).await.unwrap().status(), "not_found");

    assert_eq!(f.claim("a", T0).await.jobs.len(), 1);
    assert_eq!(f.store.cancel_message(f.ws, leased, T0.plus_millis(LEASE_MS - 1)).await.unwrap().status(), "in_flight");
    // Its holder died: once the lease has run out, it may be canceled.
    let late = f.store.cancel_message(f.ws, leased, T0.plus_millis(LEASE_MS)).await.unwrap();
    assert!(matches!(late, CancelOutcome::Canceled(ref m) if m.status == MessageState::Canceled), "{late:?}");
}

pub async fn claims_expire_old_messages_and_queue_scheduled_ones(f: Fixture) {
    let stale = f.send("+4915111111111", T0).await; // valid for an hour
    let scheduled = outbound_at(f.ws, f.sms, Channel::Sms, "+4915122222222", T0, Some(T0.plus_seconds(1800)));
    let scheduled_id = scheduled.message.id;
    f.store.create_messages(request(f.ws, vec![scheduled], T0)).await.unwrap();

    let now = T0.plus_seconds(3600);
    let batch = f.claim("a", now).await;
    assert_eq!(batch.expired, vec![stale]);
    assert_eq!(batch.jobs.iter().map(|j| j.message.id).collect::<Vec<_>>(), vec![scheduled_id]);

    let m = f.get(stale).await;
    assert_eq!(m.status, MessageState::Expired);
    let error = m.error.clone().unwrap();
    assert_eq!((error.code.as_str(), error.permanent), ("validity_expired", true));
    assert_eq!(kinds(&m).last(), Some(&(EventKind::Expired, true)));
    // Its job is gone; the other one is leased.
    let again = f.claim("a", now.plus_millis(1)).await;
    assert!(again.jobs.is_empty() && again.expired.is_empty());

    let m = f.get(scheduled_id).await;
    assert_eq!(
        kinds(&m),
        vec![
            (EventKind::Accepted, true),
            (EventKind::Scheduled, true),
            (EventKind::Queued, true),
            (EventKind::Sending, true)
        ]
    );
    assert_eq!(m.events.unwrap()[3].attempt, Some(1));
}

pub async fn inbound_messages_are_stored_once(f: Fixture) {
    let inbound = |pid: &str| InboundMessage {
        channel_account_id: f.whatsapp,
        provider_message_id: pid.into(),
        from: "+4915199999999".into(),
        to: Some("+4930123456".into()),
        content: Content::text("STOP"),
        received_at: T0,
        contact_id: None,
    };
    let contact = parley_domain::ContactId::new();
    let with_contact = InboundMessage { contact_id: Some(contact), ..inbound("in-2") };
    let stored = f.store.record_inbound(vec![inbound("in-1"), inbound("in-1"), with_contact]).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!((stored[0].contact_id, stored[1].contact_id), (None, Some(contact)), "the sender's contact is kept");
    assert_eq!(f.get(stored[1].id).await.contact_id, Some(contact));
    let m = &stored[0];
    assert_eq!(
        (m.workspace_id, m.direction, m.channel, m.status, m.to.as_str(), m.from.as_deref()),
        (f.ws, Direction::Inbound, Channel::Whatsapp, MessageState::Received, "+4930123456", Some("+4915199999999"))
    );
    let got = f.get(m.id).await;
    assert_eq!(kinds(&got), vec![(EventKind::Received, true)]);
    assert_eq!(got, m.clone(), "what is returned is what is stored, with its event");
    assert_eq!((m.created_at, m.provider_message_id.as_deref()), (T0, Some("in-1")), "created when received");
    // Sent to no address the provider named: to the channel account.
    let stored = f.store.record_inbound(vec![InboundMessage { to: None, ..inbound("in-5") }]).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(), ["whatsapp account"]);

    // A second delivery, even two at once, stores nothing.
    let (a, b) =
        tokio::join!(f.store.record_inbound(vec![inbound("in-1")]), f.store.record_inbound(vec![inbound("in-3")]));
    assert!(a.unwrap().is_empty());
    assert_eq!(b.unwrap().len(), 1);
    let (a, b) =
        tokio::join!(f.store.record_inbound(vec![inbound("in-4")]), f.store.record_inbound(vec![inbound("in-4")]));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    assert_eq!(f.store.message_stats(f.ws).await.unwrap().count(MessageState::Received), 5);
}
