//! What followers of the event feed read besides `events_after`: the position of an event (to
//! resume after it) and messages with their timelines in one go (to build event envelopes), and
//! that a message replayed from its timeline (`Message::as_of`) is what the store said then.

use crate::support::*;
use parley_store::{FeedItem, WorkspaceEvent};

pub async fn event_positions_resolve_in_their_workspace_only(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    f.send("+4915111111111", T0).await;
    let theirs = outbound(other, other_sms, Channel::Sms, "+4915122222222", T0);
    f.store.create_messages(request(other, vec![theirs], T0)).await.unwrap();
    f.send("+4915133333333", T0.plus_millis(1)).await;

    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    assert_eq!(feed.len(), 4);
    for e in &feed {
        assert_eq!(f.store.event_position(f.ws, e.id()).await.unwrap(), Some(e.position), "{:?}", e.id());
        assert_eq!(f.store.event_position(other, e.id()).await.unwrap(), None, "not another workspace's");
    }
    let their_feed = f.store.events_after(other, 0, 100).await.unwrap();
    assert_eq!(their_feed.len(), 2);
    for e in &their_feed {
        assert_eq!(f.store.event_position(f.ws, e.id()).await.unwrap(), None);
        assert_eq!(f.store.event_position(other, e.id()).await.unwrap(), Some(e.position));
    }
    assert_eq!(f.store.event_position(f.ws, EventId::new()).await.unwrap(), None);
    // Resuming after an event's position gives exactly the events recorded after it.
    let resumed = f.store.events_after(f.ws, feed[1].position, 100).await.unwrap();
    assert_eq!(
        resumed.iter().map(|e| e.id()).collect::<Vec<_>>(),
        feed[2..].iter().map(|e| e.id()).collect::<Vec<_>>()
    );
}

pub async fn messages_with_events_loads_the_workspaces_messages_with_their_timelines(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    let theirs = outbound(other, other_sms, Channel::Sms, "+4915122222222", T0);
    let their_id = theirs.message.id;
    f.store.create_messages(request(other, vec![theirs], T0)).await.unwrap();
    let queued = f.send("+4915111111111", T0).await;
    let sent = f.send("+4915133333333", T0).await;
    // Claims serve every workspace: the other one's message is claimed too.
    assert_eq!(f.claim("w", T0.plus_millis(10)).await.jobs.len(), 3);
    f.outcome(
        sent,
        "w",
        1,
        T0.plus_millis(20),
        OutcomeKind::Sent { provider_message_id: "p-1".into(), part_ids: Vec::new() },
    )
    .await;
    f.outcome(queued, "w", 1, T0.plus_millis(20), OutcomeKind::Release { due_at: T0.plus_seconds(60) }).await;

    assert!(f.store.messages_with_events(f.ws, &[]).await.unwrap().is_empty());
    // Unknown ids and another workspace's message are left out; a repeated id counts once.
    let mut got = f.store.messages_with_events(f.ws, &[sent, their_id, queued, MessageId::new(), sent]).await.unwrap();
    got.sort_by_key(|m| m.id);
    let mut expected = vec![f.get(queued).await, f.get(sent).await];
    expected.sort_by_key(|m| m.id);
    assert_eq!(got, expected, "the same as get_message with events");
    assert_eq!(got.iter().map(|m| m.events.as_ref().map(Vec::len)).collect::<Vec<_>>(), vec![Some(3), Some(4)]);
    assert!(f.store.messages_with_events(other, &[sent, queued]).await.unwrap().is_empty());

    // Many ids at once (more than SQLite's default limit on statement parameters would take).
    let many: Vec<MessageId> = (0..40_000).map(|_| MessageId::new()).chain([queued]).collect();
    let got = f.store.messages_with_events(f.ws, &many).await.unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![queued]);
}

/// A message replayed up to each of its events is what the store answered right after that
/// event: through scheduling, a transient error and its retry, sending, a receipt and a late one.
pub async fn a_message_as_of_each_event_is_what_the_store_said_then(f: Fixture) {
    let scheduled = outbound_at(f.ws, f.sms, Channel::Sms, "+4915111111111", T0, Some(T0.plus_seconds(10)));
    let id = scheduled.message.id;
    f.store.create_messages(request(f.ws, vec![scheduled], T0)).await.unwrap();
    let failing = f.send("+4915122222222", T0).await;
    let mut seen = vec![bare(&f, id).await, bare(&f, failing).await];

    let transient = ErrorInfo { code: "sandbox:throttled".into(), detail: "slow down".into(), permanent: false };
    let permanent =
        ErrorInfo { code: "sandbox:invalid_number".into(), detail: "no such number".into(), permanent: true };
    // The failing one: claimed, then refused for good.
    assert_eq!(f.claim("w", T0.plus_millis(5)).await.jobs.len(), 1);
    seen.push(bare(&f, failing).await);
    f.outcome(failing, "w", 1, T0.plus_millis(6), OutcomeKind::Failed { error: permanent.clone() }).await;
    seen.push(bare(&f, failing).await);

    // The scheduled one: queued and sending at its time, a transient error, sent on the retry.
    assert_eq!(f.claim("w", T0.plus_seconds(10)).await.jobs.len(), 1);
    seen.push(bare(&f, id).await);
    let retry_at = T0.plus_seconds(20);
    let retry = OutcomeKind::Retry { error: transient.clone(), retry_at };
    f.outcome(id, "w", 1, T0.plus_seconds(11), retry).await;
    let retrying = bare(&f, id).await;
    assert_eq!(retrying.error, Some(transient));
    seen.push(retrying);
    assert_eq!(f.claim("w", retry_at).await.jobs.len(), 1, "claimed again, without an event");
    f.outcome(
        id,
        "w",
        2,
        T0.plus_seconds(21),
        OutcomeKind::Sent { provider_message_id: "p-7".into(), part_ids: Vec::new() },
    )
    .await;
    let sent = bare(&f, id).await;
    assert_eq!((sent.status, sent.error.clone(), sent.attempts), (MessageState::Sent, None, 2));
    seen.push(sent);
    f.store.record_receipts(vec![f.receipt("p-7", MessageState::Delivered, T0.plus_seconds(30))]).await.unwrap();
    seen.push(bare(&f, id).await);
    f.store.record_receipts(vec![f.receipt("p-7", MessageState::Undelivered, T0.plus_seconds(31))]).await.unwrap();
    let last = bare(&f, id).await;
    assert_eq!((last.status, last.error.clone(), last.sequence), (MessageState::Delivered, None, 8));
    seen.push(last);

    let timelines = f.store.messages_with_events(f.ws, &[id, failing]).await.unwrap();
    assert_eq!(timelines.len(), 2);
    for then in seen {
        let message = timelines.iter().find(|m| m.id == then.id).expect("loaded");
        assert_eq!(message.as_of(then.sequence), then, "as of event {} of {}", then.sequence, then.id);
    }
}

/// The message as `get_message` answers without its timeline.
async fn bare(f: &Fixture, id: MessageId) -> Message {
    f.store.get_message(f.ws, id, false).await.unwrap().expect("message exists")
}

fn workspace_event(ws: WorkspaceId, event_type: &str, data: serde_json::Value, at: Millis) -> WorkspaceEvent {
    WorkspaceEvent { id: EventId::new(), workspace_id: ws, event_type: event_type.into(), data, created_at: at }
}

/// A workspace event (`conversation.opened`, `endpoint.disabled`, …) committed between two message
/// events comes out of the feed between them, with its body, and followers resume around it;
/// readers of message events (timelines, lists, figures) do not see it.
pub async fn workspace_events_take_their_place_in_the_feed(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let first = f.send("+4915111111111", T0).await;
    let data = serde_json::json!({"conversation": {"id": "cnv_1", "status": "open"}});
    let opened = workspace_event(f.ws, "conversation.opened", data, T0.plus_millis(1));
    f.store.record_workspace_events(vec![opened.clone()]).await.unwrap();
    let second = f.send("+4915122222222", T0.plus_millis(2)).await;
    // Recorded again (a retried call): kept as it was, in its place.
    let mut again = opened.clone();
    again.event_type = "conversation.closed".into();
    f.store.record_workspace_events(vec![again]).await.unwrap();
    f.store.record_workspace_events(Vec::new()).await.unwrap();

    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    let seen: Vec<(EventId, &str, Option<Channel>)> =
        feed.iter().map(|e| (e.id(), e.event_type(), e.channel())).collect();
    let first_events = f.get(first).await.events.unwrap();
    let second_events = f.get(second).await.events.unwrap();
    let sms = Some(Channel::Sms);
    assert_eq!(
        seen,
        [
            (first_events[0].id, "message.accepted", sms),
            (first_events[1].id, "message.queued", sms),
            (opened.id, "conversation.opened", None),
            (second_events[0].id, "message.accepted", sms),
            (second_events[1].id, "message.queued", sms),
        ]
    );
    assert_eq!(feed[2].item, FeedItem::Workspace(opened.clone()), "with its body");
    assert_eq!(feed[2].message_event(), None);

    // Followers resume before and after it.
    assert_eq!(f.store.events_after(f.ws, feed[1].position, 1).await.unwrap(), feed[2..3]);
    assert_eq!(f.store.events_after(f.ws, feed[2].position, 100).await.unwrap(), feed[3..]);
    assert_eq!(f.store.event_position(f.ws, opened.id).await.unwrap(), Some(feed[2].position));
    assert_eq!(f.store.event_position(other, opened.id).await.unwrap(), None);
    assert_eq!(f.store.feed_events_by_id(f.ws, &[feed[3].id(), opened.id]).await.unwrap(), feed[2..4]);
    assert!(f.store.feed_events_by_id(other, &[opened.id]).await.unwrap().is_empty());
    assert!(f.store.events_after(other, 0, 100).await.unwrap().is_empty(), "not another workspace's");
    assert_eq!(f.store.list_workspace_events(f.ws, 10).await.unwrap(), vec![opened.clone()]);

    // The newest position may be a workspace event's; several are recorded in one call, in order.
    let disabled = workspace_event(f.ws, "endpoint.disabled", serde_json::json!({"endpoint": {}}), T0.plus_millis(3));
    let opted_out = workspace_event(f.ws, "contact.opted_out", serde_json::json!({"contact": {}}), T0.plus_millis(3));
    f.store.record_workspace_events(vec![disabled.clone(), opted_out.clone()]).await.unwrap();
    let tail = f.store.events_after(f.ws, feed[4].position, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.item.clone()).collect::<Vec<_>>(),
        [FeedItem::Workspace(disabled), FeedItem::Workspace(opted_out)]
    );
    assert_eq!(f.store.latest_event_position(f.ws).await.unwrap(), tail[1].position);
    assert_eq!(f.store.latest_event_position(other).await.unwrap(), 0);

    // Message-level readers see messages and their events only.
    assert_eq!((first_events.len(), second_events.len()), (2, 2));
    let loaded = f.store.messages_with_events(f.ws, &[first, second]).await.unwrap();
    assert_eq!(loaded.iter().map(|m| m.events.as_ref().map_or(0, Vec::len)).collect::<Vec<_>>(), [2, 2]);
    let stats = f.store.message_stats(f.ws).await.unwrap();
    assert_eq!((stats.total(), stats.count(MessageState::Queued)), (2, 2));
    assert_eq!(f.store.list_messages(f.ws, &MessageFilter::default(), 10).await.unwrap().len(), 2);
    assert!(f.store.delivery_latencies_ms(f.ws).await.unwrap().is_empty());
}
