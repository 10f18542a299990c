//! `outbound_analytics`: the window, the narrowed rows, the first `delivered` time, the reply
//! check and the workspace boundary.

use crate::support::*;
use parley_store::{AnalyticsRow, REPLY_WINDOW_MS};

const DAY: i64 = 24 * 3600 * 1000;

fn inbound(account: ChannelAccountId, pid: &str, from: &str, at: Millis) -> InboundMessage {
    InboundMessage {
        channel_account_id: account,
        provider_message_id: pid.into(),
        from: from.into(),
        to: None,
        content: Content::text("thanks"),
        received_at: at,
        contact_id: None,
    }
}

fn receipt(account: ChannelAccountId, pid: &str, state: MessageState, at: Millis) -> Receipt {
    Receipt {
        channel_account_id: account,
        provider_message_id: pid.into(),
        state,
        occurred_at: at,
        error: None,
        details: None,
    }
}

pub async fn rows_of_the_window_with_first_delivery_and_replies(f: Fixture) {
    let (from, to) = (T0, T0.plus_millis(1_000));
    let (a, b, c, d) = ("+4915100000001", "+4915100000002", "+4915100000003", "+4915100000004");
    // Just outside the window on either side.
    let before = outbound(f.ws, f.sms, Channel::Sms, a, from.plus_millis(-1));
    let at_end = outbound(f.ws, f.sms, Channel::Sms, a, to);
    // m1: SMS to a, delivered twice (the first counts), answered by a an hour later.
    let m1 = outbound(f.ws, f.sms, Channel::Sms, a, T0);
    // m2: a WhatsApp template to b, delivered then read; b answers, but on the SMS account.
    let mut m2 = outbound(f.ws, f.whatsapp, Channel::Whatsapp, b, T0.plus_millis(10));
    m2.message.content = Content::Template {
        name: "order_shipped".into(),
        language: "en".into(),
        variables: BTreeMap::new(),
        components: vec![],
    };
    // m3: SMS to c, refused for good; c answers exactly 24 h later (too late).
    let m3 = outbound(f.ws, f.sms, Channel::Sms, c, T0.plus_millis(20));
    // m4: SMS to d, still queued; d wrote one millisecond before it was created (not a reply).
    let m4 = outbound(f.ws, f.sms, Channel::Sms, d, T0.plus_millis(30));
    let ids = [m1.message.id, m2.message.id, m3.message.id, m4.message.id];
    for new in [before, at_end, m1, m2, m3] {
        let now = new.message.created_at;
        assert_eq!(f.store.create_messages(request(f.ws, vec![new], now)).await.unwrap(), CreateOutcome::Created);
    }
    let claimed = f.claim("w", T0.plus_millis(100)).await;
    assert_eq!(claimed.jobs.len(), 4, "the message at the window's end is not due yet");
    let created = m4.message.created_at;
    assert_eq!(f.store.create_messages(request(f.ws, vec![m4], created)).await.unwrap(), CreateOutcome::Created);
    let at = T0.plus_millis(200);
    for (id, kind) in [
        (ids[0], OutcomeKind::Sent { provider_message_id: "p1".into(), part_ids: Vec::new() }),
        (ids[1], OutcomeKind::Sent { provider_message_id: "p2".into(), part_ids: Vec::new() }),
        (
            ids[2],
            OutcomeKind::Failed {
                error: ErrorInfo { code: "sandbox:permanent_failure".into(), detail: "no".into(), permanent: true },
            },
        ),
    ] {
        f.outcome(id, "w", 1, at, kind).await;
    }
    f.store
        .record_receipts(vec![
            receipt(f.sms, "p1", MessageState::Delivered, T0.plus_millis(1_500)),
            receipt(f.sms, "p1", MessageState::Delivered, T0.plus_millis(900)),
            receipt(f.whatsapp, "p2", MessageState::Delivered, T0.plus_millis(2_010)),
            receipt(f.whatsapp, "p2", MessageState::Read, T0.plus_millis(5_010)),
        ])
        .await
        .unwrap();
    f.store
        .record_inbound(vec![
            inbound(f.sms, "i1", a, T0.plus_millis(3_600_000)),
            inbound(f.sms, "i2", b, T0.plus_millis(60_000)),
            inbound(f.sms, "i3", c, T0.plus_millis(20 + REPLY_WINDOW_MS)),
            inbound(f.sms, "i4", d, T0.plus_millis(29)),
        ])
        .await
        .unwrap();

    // Another workspace: its messages and replies never show, even to the same numbers.
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    let theirs = outbound(other, other_sms, Channel::Sms, d, T0.plus_millis(40));
    f.store.create_messages(request(other, vec![theirs], T0.plus_millis(40))).await.unwrap();
    f.store.record_inbound(vec![inbound(other_sms, "o1", d, T0.plus_millis(50))]).await.unwrap();

    let rows = f.store.outbound_analytics(f.ws, from, to).await.unwrap();
    let row =
        |i: usize, channel, account, template: Option<&str>, status, code: Option<&str>, first, replied| AnalyticsRow {
            id: ids[i],
            channel,
            channel_account_id: account,
            template: template.map(str::to_string),
            status,
            error_code: code.map(str::to_string),
            created_at: T0.plus_millis([0, 10, 20, 30][i]),
            first_delivered_at: first,
            replied,
        };
    assert_eq!(
        rows,
        vec![
            row(0, Channel::Sms, f.sms, None, MessageState::Delivered, None, Some(T0.plus_millis(900)), true),
            row(
                1,
                Channel::Whatsapp,
                f.whatsapp,
                Some("order_shipped"),
                MessageState::Read,
                None,
                Some(T0.plus_millis(2_010)),
                false
            ),
            row(2, Channel::Sms, f.sms, None, MessageState::Failed, Some("sandbox:permanent_failure"), None, false),
            row(3, Channel::Sms, f.sms, None, MessageState::Queued, None, None, false),
        ]
    );

    // The other workspace sees its own message only, replied to within the window.
    let theirs = f.store.outbound_analytics(other, from, to).await.unwrap();
    assert_eq!(theirs.iter().map(|r| (r.created_at, r.replied)).collect::<Vec<_>>(), [(T0.plus_millis(40), true)]);
    // An empty window, and one far away, have no rows.
    assert!(f.store.outbound_analytics(f.ws, to.plus_millis(1), to.plus_millis(DAY)).await.unwrap().is_empty());
    assert!(f.store.outbound_analytics(f.ws, Millis(0), Millis(DAY)).await.unwrap().is_empty());
}
