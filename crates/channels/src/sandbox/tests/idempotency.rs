use super::*;

#[tokio::test(start_paused = true)]
async fn same_seed_gives_the_same_provider_ids() {
    let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
    let run = |seed: u64| {
        let ids = ids.clone();
        async move {
            let rig = rig(Channel::Sms, SandboxConfig { seed, ..SandboxConfig::default() });
            let mut out = Vec::new();
            for id in ids {
                out.push(provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, id)).await));
            }
            out
        }
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    let b = run(8).await;
    assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(distinct.len(), a.len());
}

#[tokio::test(start_paused = true)]
async fn a_second_send_of_an_accepted_id_is_a_duplicate_with_the_same_id() {
    let mut rig = rig(Channel::Whatsapp, SandboxConfig::default());
    let id = MessageId::new();
    let start = Instant::now();
    let first = provider_id(&rig.sandbox.send(&request(Channel::Whatsapp, NORMAL, 1, id)).await);
    let again = provider_id(&rig.sandbox.send(&request(Channel::Whatsapp, NORMAL, 2, id)).await);
    assert_eq!(first, again);
    assert_eq!(rig.ledger.count_for(&id), 1);
    let outcomes: Vec<_> = rig.ledger.submissions().iter().map(|s| s.outcome).collect();
    assert_eq!(outcomes, vec![SubmissionOutcome::Accepted, SubmissionOutcome::Duplicate]);
    // The carrier reports on the message once, not once per send.
    let mut states = Vec::new();
    while let Some((r, _)) = next_receipt(&mut rig.receipts, start).await {
        states.push(r.state);
    }
    assert_eq!(states, vec![MessageState::Delivered, MessageState::Read]);
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_the_ledger_refuses_duplicates_and_the_receipts_still_come() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandbox-ledger.txt");
    let id = MessageId::new();
    let config = SandboxConfig { seed: 3, ..SandboxConfig::default() };
    let first = {
        let rig = rig_with(Channel::Sms, config.clone(), Arc::new(SubmissionLedger::open(Some(path.clone())).unwrap()));
        let pid = provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, id)).await);
        rig.sandbox.shutdown(); // the process dies before its receipts are due
        pid
    };
    let ledger = Arc::new(SubmissionLedger::open(Some(path)).unwrap());
    assert_eq!(ledger.accepted_ids(), vec![id]);
    let mut rig = rig_with(Channel::Sms, config, ledger);
    let start = Instant::now();
    let again = provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 2, id)).await);
    assert_eq!(first, again);
    provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 3, id)).await);
    assert_eq!(rig.ledger.count_for(&id), 1);
    let outcomes: Vec<_> = rig.ledger.submissions().iter().map(|s| (s.attempt, s.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![(1, SubmissionOutcome::Accepted), (2, SubmissionOutcome::Duplicate), (3, SubmissionOutcome::Duplicate)]
    );
    // The receipts lost with the first process come once from the second.
    let (r, at) = next_receipt(&mut rig.receipts, start).await.unwrap();
    assert_eq!((r.state, at, r.provider_message_id), (MessageState::Delivered, L, first));
    assert!(next_receipt(&mut rig.receipts, start).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_id_are_accepted_once() {
    let rig = rig(Channel::Sms, SandboxConfig::default());
    let id = MessageId::new();
    let tasks: Vec<_> = (1..=16)
        .map(|attempt| {
            let sandbox = rig.sandbox.clone();
            tokio::spawn(async move { sandbox.send(&request(Channel::Sms, NORMAL, attempt, id)).await })
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for t in tasks {
        pids.insert(provider_id(&t.await.unwrap()));
    }
    assert_eq!(pids.len(), 1);
    assert_eq!(rig.ledger.count_for(&id), 1);
    let dupes = rig.ledger.submissions().iter().filter(|s| s.outcome == SubmissionOutcome::Duplicate).count();
    assert_eq!(dupes, 15);
}

#[tokio::test(start_paused = true)]
async fn resume_after_a_restart_sends_the_receipts_still_owed_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandbox-ledger.txt");
    let taken = MessageId::new();
    let config = SandboxConfig { seed: 5, ..SandboxConfig::default() };
    let provider_message_id = {
        let rig = rig_with(Channel::Sms, config.clone(), Arc::new(SubmissionLedger::open(Some(path.clone())).unwrap()));
        let pid = provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, taken)).await);
        rig.sandbox.shutdown(); // the process dies before the receipt is due
        pid
    };
    let mut rig = rig_with(Channel::Sms, config, Arc::new(SubmissionLedger::open(Some(path)).unwrap()));
    let start = Instant::now();
    let awaiting = |message_id: MessageId, provider_message_id: &str| AwaitingReceipt {
        message_id,
        provider_message_id: provider_message_id.to_string(),
        channel: Channel::Sms,
        to: NORMAL.to_string(),
    };
    rig.sandbox.resume(vec![
        awaiting(taken, &provider_message_id),
        // Never taken by this carrier, or under another id: nothing to report.
        awaiting(MessageId::new(), "sbx_000000000000000000000000"),
        awaiting(taken, "sbx_not_the_id_it_gave"),
    ]);
    let mut receipts = Vec::new();
    while let Some((r, _)) = next_receipt(&mut rig.receipts, start).await {
        receipts.push((r.provider_message_id, r.state));
    }
    assert_eq!(receipts, vec![(provider_message_id, MessageState::Delivered)]);
    assert_eq!(rig.ledger.count_for(&taken), 1, "resuming is not a second hand-off");
}
