//! The stream's guarantees on a real (SQLite) store: backlog then live events, each once and in
//! order; recovery from lag through the store; filters; slow clients; hubs that come and go.

use super::*;
use parley_domain::{
    ChannelAccountId, Content, Direction, EventId, EventKind, MessageEvent, MessageState, Millis, WorkspaceId,
};
use parley_store::{ChannelAccount, CreateMessages, NewOutbound, Workspace, WorkspaceEvent};
use std::collections::BTreeMap;

struct World {
    store: Arc<dyn Store>,
    ws: WorkspaceId,
    sms: ChannelAccountId,
    whatsapp: ChannelAccountId,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("parley.db");
    let store: Arc<dyn Store> =
        Arc::new(parley_store::sqlite::SqliteStore::open(path.to_str().expect("UTF-8 path")).await.expect("store"));
    let ws = workspace(&store).await;
    let sms = account(&store, ws, Channel::Sms).await;
    let whatsapp = account(&store, ws, Channel::Whatsapp).await;
    World { store, ws, sms, whatsapp, _dir: dir }
}

async fn workspace(store: &Arc<dyn Store>) -> WorkspaceId {
    let ws = Workspace { id: WorkspaceId::new(), name: "Acme".into(), created_at: Millis::now() };
    store.create_workspace(&ws).await.expect("workspace");
    ws.id
}

async fn account(store: &Arc<dyn Store>, ws: WorkspaceId, channel: Channel) -> ChannelAccountId {
    let now = Millis::now();
    let account = ChannelAccount {
        id: ChannelAccountId::new(),
        workspace_id: ws,
        channel,
        provider: "sandbox".into(),
        name: format!("{} account", channel.as_str()),
        config: serde_json::json!({}),
        rate_limit_per_second: 50,
        max_in_flight: 10,
        is_default: true,
        created_at: now,
        updated_at: now,
        credentials: None,
        credentials_hint: None,
        deleted_at: None,
    };
    store.create_channel_account(&account).await.expect("account");
    account.id
}

/// Store `n` queued messages (two events each: accepted, queued) on `account`.
async fn send(store: &Arc<dyn Store>, ws: WorkspaceId, account: ChannelAccountId, channel: Channel, n: usize) {
    let now = Millis::now();
    let messages = (0..n)
        .map(|_| {
            let id = MessageId::new();
            let event = |sequence, kind| MessageEvent {
                id: EventId::new(),
                message_id: id,
                sequence,
                kind,
                occurred_at: now,
                recorded_at: now,
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
                    to: "+4915112345678".into(),
                    from: None,
                    status: MessageState::Queued,
                    content: Content::text("hello"),
                    send_at: None,
                    expires_at: now.plus_seconds(3600),
                    validity_seconds: 3600,
                    metadata: BTreeMap::new(),
                    client_reference: None,
                    contact_id: None,
                    conversation_id: None,
                    purpose: None,
                    provider_message_id: None,
                    attempts: 0,
                    error: None,
                    sequence: 2,
                    created_at: now,
                    updated_at: now,
                    route: None,
                    events: None,
                },
                events: vec![event(1, EventKind::Accepted), event(2, EventKind::Queued)],
                due_at: now,
            }
        })
        .collect();
    store
        .create_messages(CreateMessages { workspace_id: ws, messages, idempotency: None, now })
        .await
        .expect("create messages");
}

fn quick() -> StreamSettings {
    StreamSettings { poll: Duration::from_millis(10), page: 7, ..StreamSettings::default() }
}

/// The next `n` events, failing the test if they take longer than a few seconds.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Arc<StreamEvent>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(event)) => out.push(event),
            Ok(None) => panic!("the stream ended after {} of {n} events", out.len()),
            Err(_) => panic!("only {} of {n} events came", out.len()),
        }
    }
    out
}

/// Nothing more arrives for a while.
async fn quiet(sub: &mut Subscription) {
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected event at {}: {}", event.position, event.json());
    }
}

async fn all_positions(w: &World) -> Vec<i64> {
    w.store.events_after(w.ws, 0, 10_000).await.expect("feed").iter().map(|e| e.position).collect()
}

fn positions(events: &[Arc<StreamEvent>]) -> Vec<i64> {
    events.iter().map(|e| e.position).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_the_backlog_then_live_events_once_in_order() {
    let w = world().await;
    let streams = Streams::new(quick());
    send(&w.store, w.ws, w.sms, Channel::Sms, 10).await;
    let mut from_start =
        streams.subscribe(w.store.clone(), w.ws, StreamStart::After(0), Default::default()).await.unwrap();
    let mut from_now = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    let backlog = take(&mut from_start, 20).await;

    // Another workspace's events never show.
    let other = workspace(&w.store).await;
    let other_sms = account(&w.store, other, Channel::Sms).await;
    send(&w.store, other, other_sms, Channel::Sms, 3).await;
    send(&w.store, w.ws, w.sms, Channel::Sms, 10).await;
    let live = take(&mut from_start, 20).await;
    let new = take(&mut from_now, 20).await;
    quiet(&mut from_start).await;
    quiet(&mut from_now).await;

    let everything = all_positions(&w).await;
    assert_eq!([positions(&backlog), positions(&live)].concat(), everything);
    assert_eq!(positions(&new), everything[20..]);
    for event in backlog.iter().chain(&live) {
        let envelope = serde_json::from_str::<serde_json::Value>(event.json()).expect("JSON");
        assert_eq!(envelope["type"], *event.event_type);
        assert_eq!(envelope["workspace_id"], w.ws.to_string());
        let status = if event.event_type == "message.accepted" { "accepted" } else { "queued" };
        assert_eq!(envelope["data"]["message"]["status"], status, "{envelope}");
        assert_eq!(envelope["id"], event.id.to_string());
        assert_eq!(envelope["data"]["sequence"], envelope["data"]["message"]["sequence"]);
        let sse = std::str::from_utf8(&event.sse).expect("UTF-8");
        assert_eq!(sse, format!("id: {}\nevent: {}\ndata: {}\n\n", event.id, event.event_type, event.json()));
    }
    // Both subscribers got the same envelopes, built once.
    assert!(live.iter().zip(&new).all(|(a, b)| Arc::ptr_eq(a, b)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_goes_back_to_the_store() {
    let w = world().await;
    let settings =
        StreamSettings { poll: Duration::from_millis(5), page: 5, broadcast_capacity: 2, buffer: 1, ..quick() };
    let streams = Streams::new(settings);
    let mut sub = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    let writer = {
        let store = w.store.clone();
        let (ws, sms) = (w.ws, w.sms);
        tokio::spawn(async move {
            for _ in 0..20 {
                send(&store, ws, sms, Channel::Sms, 3).await;
            }
        })
    };
    // A slow reader: the hub publishes far more than the broadcast keeps.
    let mut got = Vec::new();
    while got.len() < 120 {
        got.extend(take(&mut sub, 1).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.expect("writer");
    quiet(&mut sub).await;
    assert_eq!(positions(&got), all_positions(&w).await, "every event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pass_only_the_wanted_kinds_and_channels() {
    let w = world().await;
    let streams = Streams::new(quick());
    let filter = StreamFilter {
        types: Some(crate::webhooks::EventTypeFilter::parse(&["message.queued"]).unwrap()),
        channels: Some(HashSet::from([Channel::Whatsapp])),
    };
    let mut sub = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, filter).await.unwrap();
    send(&w.store, w.ws, w.sms, Channel::Sms, 3).await;
    send(&w.store, w.ws, w.whatsapp, Channel::Whatsapp, 2).await;
    send(&w.store, w.ws, w.sms, Channel::Sms, 3).await;
    let got = take(&mut sub, 2).await;
    quiet(&mut sub).await;
    assert!(got.iter().all(|e| e.event_type == "message.queued" && e.channel == Some(Channel::Whatsapp)));
    assert!(
        got.iter().all(|e| serde_json::from_str::<serde_json::Value>(e.json()).unwrap()["data"]["message"]["channel"]
            == "whatsapp")
    );
}

/// An `endpoint.disabled` recorded between message events.
async fn endpoint_disabled(store: &Arc<dyn Store>, ws: WorkspaceId) -> EventId {
    let event = WorkspaceEvent {
        id: EventId::new(),
        workspace_id: ws,
        event_type: "endpoint.disabled".into(),
        data: serde_json::json!({"endpoint": {"id": "wh_1", "enabled": false}}),
        created_at: Millis::now(),
    };
    let id = event.id;
    store.record_workspace_events(vec![event]).await.expect("workspace event");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_events_come_in_feed_order_and_only_without_a_channel_filter() {
    let w = world().await;
    let streams = Streams::new(quick());
    let mut everything = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    let endpoints =
        StreamFilter { types: Some(crate::webhooks::EventTypeFilter::parse(&["endpoint.*"]).unwrap()), channels: None };
    let mut only_endpoints = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, endpoints).await.unwrap();
    let sms_only = StreamFilter { types: None, channels: Some(HashSet::from([Channel::Sms])) };
    let mut sms = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, sms_only).await.unwrap();
    send(&w.store, w.ws, w.sms, Channel::Sms, 1).await;
    let disabled = endpoint_disabled(&w.store, w.ws).await;
    send(&w.store, w.ws, w.sms, Channel::Sms, 1).await;

    let got = take(&mut everything, 5).await;
    quiet(&mut everything).await;
    assert_eq!(positions(&got), all_positions(&w).await);
    let types: Vec<&str> = got.iter().map(|e| &*e.event_type).collect();
    assert_eq!(
        types,
        ["message.accepted", "message.queued", "endpoint.disabled", "message.accepted", "message.queued"]
    );
    let event = &got[2];
    assert_eq!((event.id, event.channel), (disabled, None));
    let envelope: serde_json::Value = serde_json::from_str(event.json()).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({
            "id": disabled.to_string(),
            "type": "endpoint.disabled",
            "created_at": envelope["created_at"],
            "workspace_id": w.ws.to_string(),
            "data": {"endpoint": {"id": "wh_1", "enabled": false}},
        })
    );
    assert!(envelope["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{envelope}");

    let got = take(&mut only_endpoints, 1).await;
    quiet(&mut only_endpoints).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [disabled]);
    let got = take(&mut sms, 4).await;
    quiet(&mut sms).await;
    assert!(got.iter().all(|e| e.channel == Some(Channel::Sms)), "a channel filter leaves workspace events out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_loses_its_stream_and_no_one_else_is_harmed() {
    let w = world().await;
    let settings = StreamSettings { buffer: 2, slow_client: Duration::from_millis(100), ..quick() };
    let streams = Streams::new(settings);
    let mut idle = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    let mut reader = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    send(&w.store, w.ws, w.sms, Channel::Sms, 5).await;
    assert_eq!(take(&mut reader, 10).await.len(), 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What its buffer held, then the end.
    assert_eq!(take(&mut idle, 2).await.len(), 2);
    assert!(tokio::time::timeout(Duration::from_secs(2), idle.next()).await.expect("ended").is_none());
    // The reader goes on.
    send(&w.store, w.ws, w.sms, Channel::Sms, 1).await;
    assert_eq!(take(&mut reader, 2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_go_with_their_last_subscriber_and_closing_ends_every_stream() {
    let w = world().await;
    let streams = Streams::new(quick());
    let a = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    let b = streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.unwrap();
    assert_eq!(streams.hub_count(), 1, "one hub per workspace");
    drop(a);
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while streams.hub_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the hub outlived its subscribers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A new hub after the old one went, then closing ends the subscription.
    let mut c = streams.subscribe(w.store.clone(), w.ws, StreamStart::After(0), Default::default()).await.unwrap();
    send(&w.store, w.ws, w.sms, Channel::Sms, 1).await;
    assert_eq!(take(&mut c, 2).await.len(), 2);
    streams.close();
    assert!(tokio::time::timeout(Duration::from_secs(2), c.next()).await.expect("ended").is_none());
    assert!(streams.subscribe(w.store.clone(), w.ws, StreamStart::Now, Default::default()).await.is_err());
}
