use super::*;

#[test]
fn config_defaults() {
    let c = SandboxConfig::from_json(&serde_json::json!({})).unwrap();
    assert_eq!(c, SandboxConfig::default());
    assert_eq!((c.latency_ms, c.receipt_latency_ms, c.read_receipts, c.auto_reply, c.seed), (0, 50, true, None, 0));
}

#[tokio::test(start_paused = true)]
async fn normal_recipient_gets_delivered_then_read_in_order_and_on_time() {
    let mut rig = rig(Channel::Whatsapp, SandboxConfig::default());
    let id = MessageId::new();
    let start = Instant::now();
    let pid = provider_id(&rig.sandbox.send(&request(Channel::Whatsapp, NORMAL, 1, id)).await);
    assert!(pid.starts_with("sbx_") && pid.len() == 4 + 24, "{pid}");
    assert!(pid[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(start.elapsed(), Duration::ZERO);

    let (r, at) = next_receipt(&mut rig.receipts, start).await.unwrap();
    assert_eq!(
        (r.state, at, r.provider_message_id.as_str(), r.error),
        (MessageState::Delivered, L, pid.as_str(), None)
    );
    let account = r.channel_account_id;
    let (r2, at) = next_receipt(&mut rig.receipts, start).await.unwrap();
    assert_eq!((r2.state, at, r2.channel_account_id), (MessageState::Read, 2 * L, account));
    assert!(r2.occurred_at >= r.occurred_at);
    assert!(next_receipt(&mut rig.receipts, start).await.is_none());
    assert!(rig.inbound.try_recv().is_err(), "no auto-reply unless configured");
    assert_eq!(rig.ledger.count_for(&id), 1);
}

#[tokio::test(start_paused = true)]
async fn read_receipts_only_where_the_channel_has_them_and_they_are_on() {
    for (channel, read_receipts, expect_read) in [
        (Channel::Sms, true, false),
        (Channel::Whatsapp, true, true),
        (Channel::Rcs, true, true),
        (Channel::Webchat, true, true),
        (Channel::Whatsapp, false, false),
    ] {
        let mut rig = rig(channel, SandboxConfig { read_receipts, ..SandboxConfig::default() });
        let to = if channel == Channel::Webchat { "visitor-42" } else { NORMAL };
        let start = Instant::now();
        rig.sandbox.send(&request(channel, to, 1, MessageId::new())).await;
        let mut states = Vec::new();
        while let Some((r, _)) = next_receipt(&mut rig.receipts, start).await {
            states.push(r.state);
        }
        let expected =
            if expect_read { vec![MessageState::Delivered, MessageState::Read] } else { vec![MessageState::Delivered] };
        assert_eq!(states, expected, "{channel:?} read_receipts={read_receipts}");
    }
}

#[tokio::test(start_paused = true)]
async fn auto_reply_arrives_from_the_recipient_after_delivery() {
    let config = SandboxConfig { auto_reply: Some("STOP? no, thanks!".into()), ..SandboxConfig::default() };
    let mut rig = rig(Channel::Sms, config);
    let id = MessageId::new();
    let start = Instant::now();
    rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, id)).await;
    let (r, at) = next_receipt(&mut rig.receipts, start).await.unwrap();
    assert_eq!((r.state, at), (MessageState::Delivered, L));
    let reply = rig.inbound.recv().await.unwrap();
    assert_eq!(start.elapsed(), 2 * L);
    assert_eq!(reply.from, NORMAL);
    assert_eq!(reply.to, None);
    assert_eq!(reply.content, Content::text("STOP? no, thanks!"));
    assert_eq!(reply.channel_account_id, r.channel_account_id);
    assert_eq!(reply.provider_message_id, rig.sandbox.inbound_message_id(&id));
    assert!(reply.provider_message_id.starts_with("sbx_in_") && reply.provider_message_id.len() == 7 + 24);
    assert!(reply.received_at >= r.occurred_at);
}

#[tokio::test]
async fn zero_receipt_latency_reports_at_once() {
    let config = SandboxConfig { receipt_latency_ms: 0, auto_reply: Some("ok".into()), ..SandboxConfig::default() };
    let mut rig = rig(Channel::Rcs, config);
    rig.sandbox.send(&request(Channel::Rcs, NORMAL, 1, MessageId::new())).await;
    assert_eq!(rig.receipts.try_recv().map(|r| r.state), Ok(MessageState::Delivered));
    assert_eq!(rig.receipts.try_recv().map(|r| r.state), Ok(MessageState::Read));
    assert!(rig.inbound.try_recv().is_ok());
    assert!(rig.sandbox.timer.get().is_none(), "no timer task needed");
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer() {
    let rig = rig(Channel::Sms, SandboxConfig { latency_ms: 120, ..SandboxConfig::default() });
    let start = Instant::now();
    provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, MessageId::new())).await);
    assert_eq!(start.elapsed(), Duration::from_millis(120));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_pending_receipts() {
    let mut rig = rig(Channel::Whatsapp, SandboxConfig::default());
    rig.sandbox.send(&request(Channel::Whatsapp, NORMAL, 1, MessageId::new())).await;
    rig.sandbox.shutdown();
    assert!(next_receipt(&mut rig.receipts, Instant::now()).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn many_messages_share_one_timer_and_come_due_in_order() {
    let mut rig = rig(Channel::Sms, SandboxConfig::default());
    let start = Instant::now();
    let mut pids = Vec::new();
    for i in 0..100u64 {
        if i == 50 {
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        pids.push(provider_id(&rig.sandbox.send(&request(Channel::Sms, NORMAL, 1, MessageId::new())).await));
    }
    let mut got = Vec::new();
    while let Some((r, at)) = next_receipt(&mut rig.receipts, start).await {
        got.push((r.provider_message_id, at));
    }
    let ids: Vec<_> = got.iter().map(|g| g.0.clone()).collect();
    assert_eq!(ids, pids);
    assert!(got[..50].iter().all(|g| g.1 == L));
    assert!(got[50..].iter().all(|g| g.1 == L + Duration::from_millis(10)));
}
