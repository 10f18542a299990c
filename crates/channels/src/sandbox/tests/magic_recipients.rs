use super::*;

#[test]
fn magic_numbers_are_valid_e164() {
    for n in [
        magic::PERMANENT_FAILURE,
        magic::NO_RECEIPT,
        magic::RATE_LIMITED,
        magic::UNDELIVERABLE,
        magic::OUT_OF_ORDER,
        magic::FAILS_ONCE,
        magic::FAILS_TWICE,
        magic::FAILS_THRICE,
        NORMAL,
    ] {
        assert_eq!(E164::parse(n, None).map(|e| e.as_str().to_string()), Ok(n.to_string()), "{n}");
    }
    // Written the way an American would, they still reach the magic.
    assert_eq!(E164::parse("(202) 555-0101", Some("US")).unwrap().as_str(), magic::PERMANENT_FAILURE);
}

#[tokio::test(start_paused = true)]
async fn permanent_failure_number_is_refused_for_good() {
    for (channel, to) in
        [(Channel::Sms, magic::PERMANENT_FAILURE), (Channel::Webchat, magic::WEBCHAT_PERMANENT_FAILURE)]
    {
        let mut rig = rig(channel, SandboxConfig::default());
        let id = MessageId::new();
        for attempt in 1..=3 {
            match rig.sandbox.send(&request(channel, to, attempt, id)).await {
                SendResult::Permanent { error } => {
                    assert_eq!(error.code, "sandbox:permanent_failure");
                    assert!(error.permanent);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(next_receipt(&mut rig.receipts, Instant::now()).await.is_none());
        assert_eq!(rig.ledger.count_for(&id), 0);
        assert!(rig.ledger.submissions().iter().all(|s| s.outcome == SubmissionOutcome::Permanent));
    }
}

#[tokio::test(start_paused = true)]
async fn flaky_numbers_fail_n_attempts_then_succeed() {
    let cases = [
        (1, magic::FAILS_ONCE, magic::WEBCHAT_FAILS_ONCE),
        (2, magic::FAILS_TWICE, magic::WEBCHAT_FAILS_TWICE),
        (3, magic::FAILS_THRICE, magic::WEBCHAT_FAILS_THRICE),
    ];
    for (n, phone, visitor) in cases {
        for (channel, to) in [(Channel::Sms, phone), (Channel::Webchat, visitor)] {
            let mut rig = rig(channel, SandboxConfig::default());
            let id = MessageId::new();
            for attempt in 1..=n {
                match rig.sandbox.send(&request(channel, to, attempt, id)).await {
                    SendResult::Transient { error, retry_after_ms } => {
                        assert_eq!(error.code, "sandbox:temporary_failure");
                        assert!(!error.permanent);
                        assert_eq!(retry_after_ms, None);
                    }
                    other => panic!("{to} attempt {attempt}: {other:?}"),
                }
            }
            let pid = provider_id(&rig.sandbox.send(&request(channel, to, n + 1, id)).await);
            let (r, _) = next_receipt(&mut rig.receipts, Instant::now()).await.unwrap();
            assert_eq!((r.state, r.provider_message_id), (MessageState::Delivered, pid));
            let outcomes: Vec<_> = rig.ledger.submissions().iter().map(|s| (s.attempt, s.outcome)).collect();
            let mut expected: Vec<_> = (1..=n).map(|a| (a, SubmissionOutcome::Transient)).collect();
            expected.push((n + 1, SubmissionOutcome::Accepted));
            assert_eq!(outcomes, expected);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_process_sees_the_same_flakiness() {
    // Failures follow the attempt number, not memory: a fresh connector refuses attempt 1 again
    // and takes attempt 2 at once.
    let id = MessageId::new();
    let first = rig(Channel::Sms, SandboxConfig::default());
    assert!(matches!(
        first.sandbox.send(&request(Channel::Sms, magic::FAILS_ONCE, 1, id)).await,
        SendResult::Transient { .. }
    ));
    let second = rig(Channel::Sms, SandboxConfig::default());
    assert!(matches!(
        second.sandbox.send(&request(Channel::Sms, magic::FAILS_ONCE, 2, id)).await,
        SendResult::Accepted { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn rate_limited_number_asks_to_wait_two_seconds_once() {
    for (channel, to) in [(Channel::Rcs, magic::RATE_LIMITED), (Channel::Webchat, magic::WEBCHAT_RATE_LIMITED)] {
        let rig = rig(channel, SandboxConfig::default());
        let id = MessageId::new();
        match rig.sandbox.send(&request(channel, to, 1, id)).await {
            SendResult::Transient { error, retry_after_ms } => {
                assert_eq!(error.code, "sandbox:rate_limited");
                assert_eq!(retry_after_ms, Some(2000));
            }
            other => panic!("{other:?}"),
        }
        provider_id(&rig.sandbox.send(&request(channel, to, 2, id)).await);
        assert_eq!(rig.ledger.count_for(&id), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn no_receipt_number_is_accepted_and_then_silent() {
    for (channel, to) in [(Channel::Whatsapp, magic::NO_RECEIPT), (Channel::Webchat, magic::WEBCHAT_NO_RECEIPT)] {
        let mut rig = rig(channel, SandboxConfig { auto_reply: Some("hi".into()), ..SandboxConfig::default() });
        let id = MessageId::new();
        provider_id(&rig.sandbox.send(&request(channel, to, 1, id)).await);
        assert!(next_receipt(&mut rig.receipts, Instant::now()).await.is_none());
        assert!(rig.inbound.try_recv().is_err());
        assert_eq!(rig.ledger.count_for(&id), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn undeliverable_number_gets_an_undelivered_receipt() {
    for (channel, to) in [(Channel::Sms, magic::UNDELIVERABLE), (Channel::Webchat, magic::WEBCHAT_UNDELIVERABLE)] {
        let mut rig = rig(channel, SandboxConfig::default());
        let start = Instant::now();
        let pid = provider_id(&rig.sandbox.send(&request(channel, to, 1, MessageId::new())).await);
        let (r, at) = next_receipt(&mut rig.receipts, start).await.unwrap();
        assert_eq!((r.state, at, r.provider_message_id), (MessageState::Undelivered, L, pid));
        let error = r.error.unwrap();
        assert_eq!(error.code, "sandbox:undeliverable");
        assert!(error.permanent);
        assert!(next_receipt(&mut rig.receipts, start).await.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn out_of_order_number_sends_a_late_sent_receipt() {
    let cases = [
        (Channel::Whatsapp, magic::OUT_OF_ORDER, vec![MessageState::Read, MessageState::Delivered, MessageState::Sent]),
        (Channel::Sms, magic::OUT_OF_ORDER, vec![MessageState::Delivered, MessageState::Sent]),
        (
            Channel::Webchat,
            magic::WEBCHAT_OUT_OF_ORDER,
            vec![MessageState::Read, MessageState::Delivered, MessageState::Sent],
        ),
    ];
    for (channel, to, expected) in cases {
        let mut rig = rig(channel, SandboxConfig::default());
        let start = Instant::now();
        rig.sandbox.send(&request(channel, to, 1, MessageId::new())).await;
        let mut got = Vec::new();
        while let Some((r, at)) = next_receipt(&mut rig.receipts, start).await {
            got.push((r.state, at, r.occurred_at));
        }
        let states: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(states, expected, "{channel:?}");
        let times: Vec<_> = got.iter().map(|g| g.1).collect();
        let expected_times: Vec<_> = (1..=expected.len() as u32).map(|n| n * L).collect();
        assert_eq!(times, expected_times);
        // The late `sent` says it happened first.
        let sent_at = got.last().map(|g| g.2).unwrap();
        assert!(got.iter().all(|g| g.2 >= sent_at));
    }
}

#[tokio::test]
async fn every_send_makes_any_recipient_behave_like_a_magic_number() {
    let config = |every_send| SandboxConfig { every_send, receipt_latency_ms: 0, ..SandboxConfig::default() };
    let rig = rig(Channel::Whatsapp, config(EverySend::PermanentFailure));
    let id = MessageId::new();
    let result = rig.sandbox.send(&request(Channel::Whatsapp, "+12025550150", 1, id)).await;
    assert!(
        matches!(result, SendResult::Permanent { ref error } if error.code == "sandbox:permanent_failure"),
        "{result:?}"
    );
    assert_eq!(rig.ledger.count_for(&id), 0);

    let mut rig =
        rig_with(Channel::Whatsapp, config(EverySend::Undeliverable), Arc::new(SubmissionLedger::in_memory()));
    let result = rig.sandbox.send(&request(Channel::Whatsapp, "+12025550150", 1, id)).await;
    assert!(matches!(result, SendResult::Accepted { .. }), "{result:?}");
    let receipt = tokio::time::timeout(Duration::from_secs(5), rig.receipts.recv()).await.unwrap().unwrap();
    assert_eq!(receipt.state, MessageState::Undelivered);
}
