//! The live event stream: every event of a workspace (message events, and events about the
//! workspace such as `endpoint.disabled`), as an envelope, to any number of subscribers
//! (`GET /v1/stream`), with no gap and no duplicate, resumable from any position.
//!
//! One hub per workspace follows the store's feed (`events_after`) while the workspace has
//! subscribers: it is created with the first and ends with the last. It builds each event's
//! envelope once (loading the messages of a page in one go) and fans it out through a
//! `broadcast` channel. A subscriber starts from a position: it reads the store up to the hub's
//! position, then follows the hub, skipping what it already has. If it falls behind the
//! broadcast (`Lagged`), it goes back to the store from the last event it handed on. Each
//! subscriber has a small buffer of its own; a client that leaves it full for
//! [`StreamSettings::slow_client`] loses its stream, so a client that never reads holds no more
//! than that buffer and slows no one.

use crate::webhooks::EventTypeFilter;
use crate::{EngineError, Result};
use parley_domain::event::WorkspaceEventEnvelope;
use parley_domain::{Channel, EventEnvelope, EventId, Message, MessageId, WorkspaceId};
use parley_store::{FeedEvent, FeedItem, Store, StoreError};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

/// One event of the stream: its envelope, serialised once for every subscriber (and every
/// webhook endpoint). Only the wire forms are kept, so that the events a hub retains for lagging
/// subscribers cost their bytes and nothing more.
#[derive(Debug)]
pub struct StreamEvent {
    /// Its position in the store's feed (orders the stream; not shown to clients).
    pub position: i64,
    pub id: EventId,
    /// `resource.past_tense_verb`: `message.delivered`, `endpoint.disabled`, …
    pub event_type: Cow<'static, str>,
    /// The channel of the event's message; `None` for an event about the workspace.
    pub channel: Option<Channel>,
    /// The whole Server-Sent Events message (`id:`, `event:`, `data:` and the blank line), ready
    /// to be written to every subscriber's connection as it is.
    pub sse: bytes::Bytes,
    /// Where the envelope's JSON lies in `sse` (see [`StreamEvent::json`]).
    json: std::ops::Range<usize>,
}

impl StreamEvent {
    /// The envelope as JSON, on one line (the webhook body; the SSE message's `data:`).
    pub fn json(&self) -> &str {
        // `sse` was built from a `String` and `json` bounds the JSON within it.
        std::str::from_utf8(&self.sse[self.json.clone()]).unwrap_or_default()
    }
}

/// Which events a subscriber wants; `None` means all.
///
/// Events about the workspace (`endpoint.disabled`, `conversation.opened`, …) have no channel:
/// a channel filter leaves them out, so they come only to subscribers that set none.
#[derive(Clone, Debug, Default)]
pub struct StreamFilter {
    /// By type, as webhook endpoints filter (`message.delivered`, `endpoint.*`, `*`).
    pub types: Option<EventTypeFilter>,
    pub channels: Option<HashSet<Channel>>,
}

impl StreamFilter {
    pub fn matches(&self, event: &StreamEvent) -> bool {
        self.types.as_ref().is_none_or(|t| t.matches(&event.event_type))
            && self.channels.as_ref().is_none_or(|c| event.channel.is_some_and(|ch| c.contains(&ch)))
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStart {
    /// After the newest event recorded so far.
    Now,
    /// After this feed position (see `Store::event_position`).
    After(i64),
}

/// How the stream behaves; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// How often a hub looks for new events when the last page was not full.
    pub poll: Duration,
    /// Events read from the store at once.
    pub page: u32,
    /// Envelopes a hub keeps for subscribers that have not taken them yet.
    pub broadcast_capacity: usize,
    /// Events waiting for one subscriber's client.
    pub buffer: usize,
    /// A subscriber whose buffer stays full this long is ended.
    pub slow_client: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            poll: Duration::from_millis(100),
            page: 500,
            // Lagging subscribers read the store again, each on its own, and rebuild every
            // envelope: under load that costs more than following the ring, so they fall
            // further behind. A ring of several seconds of a busy workspace (6.5 s at 10,000
            // events/s) keeps that rare: with 100 subscribers at 2,000 messages/s for 60 s, the
            // slowest had 28 % of the events with 8,192, 84 % to all of them with 65,536 (see
            // docs/BENCHMARKS.md). It holds the events' wire forms only (under 1 KB each), and
            // only while the workspace has subscribers.
            broadcast_capacity: 65_536,
            buffer: 256,
            slow_client: Duration::from_secs(10),
        }
    }
}

/// The events of one subscription, in feed order; ends when the engine stops streaming, or when
/// its client did not read for too long.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<StreamEvent>>,
}

impl Subscription {
    pub async fn next(&mut self) -> Option<Arc<StreamEvent>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting already (to write several to a connection at once).
    pub fn try_next(&mut self) -> Option<Arc<StreamEvent>> {
        self.rx.try_recv().ok()
    }
}

impl futures::Stream for Subscription {
    type Item = Arc<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl crate::Engine {
    /// Follow the workspace's events from `start`, those that `filter` lets through, in
    /// feed order: every event exactly once, also across lag and store errors. Ends when the
    /// engine stops streaming ([`crate::Engine::close_streams`], shutdown).
    pub async fn subscribe(
        &self,
        workspace: WorkspaceId,
        start: StreamStart,
        filter: StreamFilter,
    ) -> Result<Subscription> {
        self.inner.streams.subscribe(self.store().clone(), workspace, start, filter).await
    }

    /// End every live stream now (a server that stops taking requests does this first, so that
    /// open streams do not hold its shutdown up); later subscriptions are refused.
    pub fn close_streams(&self) {
        self.inner.streams.close();
    }
}

type HubMap = Arc<Mutex<HashMap<WorkspaceId, Weak<Hub>>>>;

/// The hubs of a process, by workspace.
pub(crate) struct Streams {
    hubs: HubMap,
    settings: StreamSettings,
    /// Ends every hub and subscription.
    stop: CancellationToken,
    /// Store reads of subscribers that fell behind, at once, across the process. Falling behind
    /// happens when the machine is already busy; without a bound, a hundred subscribers reading
    /// the store each on its own would take the CPU the send path needs, and fall further behind.
    catch_up_reads: Arc<tokio::sync::Semaphore>,
}

/// Store reads of lagging subscribers at once (see `Streams::catch_up_reads`).
const CATCH_UP_READS: usize = 2;

/// What a hub's task and its subscribers share.
struct HubShared {
    sender: broadcast::Sender<Arc<StreamEvent>>,
    /// Every event up to this position has been handed to `sender` (it is raised before the
    /// events are sent, so a subscriber that reads it after subscribing misses nothing).
    published: AtomicI64,
}

/// A workspace's hub, held by its subscribers; dropping the last one stops its task.
struct Hub {
    workspace: WorkspaceId,
    shared: Arc<HubShared>,
    hubs: HubMap,
    _stop_task: DropGuard,
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Forget this hub unless a new one has taken its place already.
        if let Ok(mut hubs) = self.hubs.lock()
            && hubs.get(&self.workspace).is_some_and(|w| w.strong_count() == 0)
        {
            hubs.remove(&self.workspace);
        }
    }
}

impl Streams {
    pub(crate) fn new(settings: StreamSettings) -> Streams {
        Streams {
            hubs: Default::default(),
            settings,
            stop: CancellationToken::new(),
            catch_up_reads: Arc::new(tokio::sync::Semaphore::new(CATCH_UP_READS)),
        }
    }

    /// End every subscription and hub; later subscriptions are refused.
    pub(crate) fn close(&self) {
        self.stop.cancel();
    }

    /// Workspaces with a running hub.
    #[cfg(test)]
    fn hub_count(&self) -> usize {
        self.hubs.lock().map(|h| h.len()).unwrap_or(0)
    }

    pub(crate) async fn subscribe(
        &self,
        store: Arc<dyn Store>,
        workspace: WorkspaceId,
        start: StreamStart,
        filter: StreamFilter,
    ) -> Result<Subscription> {
        if self.stop.is_cancelled() {
            return Err(EngineError::Store(StoreError::Closed));
        }
        let latest = store.latest_event_position(workspace).await?;
        let hub = self.hub(&store, workspace, latest);
        // Subscribe before reading the hub's position: whatever it sends after that position
        // reaches this receiver (or is reported as lag).
        let receiver = hub.shared.sender.subscribe();
        let after = match start {
            StreamStart::Now => latest,
            StreamStart::After(position) => position,
        };
        let (tx, rx) = mpsc::channel(self.settings.buffer.max(1));
        let follower = Follower {
            store,
            workspace,
            hub,
            receiver,
            tx,
            filter,
            last: after,
            settings: self.settings.clone(),
            stop: self.stop.clone(),
            catch_up_reads: self.catch_up_reads.clone(),
        };
        tokio::spawn(follower.run());
        Ok(Subscription { rx })
    }

    /// The workspace's hub, started (at `latest`) if it has none.
    fn hub(&self, store: &Arc<dyn Store>, workspace: WorkspaceId, latest: i64) -> Arc<Hub> {
        let mut hubs = match self.hubs.lock() {
            Ok(hubs) => hubs,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(hub) = hubs.get(&workspace).and_then(Weak::upgrade) {
            return hub;
        }
        let (sender, _) = broadcast::channel(self.settings.broadcast_capacity.max(1));
        let shared = Arc::new(HubShared { sender, published: AtomicI64::new(latest) });
        let stop = self.stop.child_token();
        let hub = Arc::new(Hub {
            workspace,
            shared: shared.clone(),
            hubs: self.hubs.clone(),
            _stop_task: stop.clone().drop_guard(),
        });
        hubs.insert(workspace, Arc::downgrade(&hub));
        tokio::spawn(run_hub(store.clone(), workspace, shared, self.settings.clone(), stop));
        hub
    }
}

/// Follow the workspace's feed from the hub's position and publish every event, until stopped.
async fn run_hub(
    store: Arc<dyn Store>,
    workspace: WorkspaceId,
    shared: Arc<HubShared>,
    settings: StreamSettings,
    stop: CancellationToken,
) {
    let mut position = shared.published.load(Ordering::SeqCst);
    loop {
        let read = tokio::select! {
            read = read_page(store.as_ref(), workspace, position, settings.page) => read,
            _ = stop.cancelled() => return,
        };
        let full = match read {
            Ok((events, last, full)) => {
                if let Some(last) = last {
                    shared.published.store(last, Ordering::SeqCst);
                    position = last;
                }
                for event in events {
                    // No receiver (every subscriber is between pages) is fine: they read the store.
                    let _ = shared.sender.send(event);
                }
                full
            }
            Err(e) => {
                tracing::warn!(error = %e, %workspace, "the event stream could not read the feed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.poll) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The events after `after` (at most `limit`) with their envelopes, the position of the last one
/// read (also when an event could not be enveloped), and whether the page was full.
async fn read_page(
    store: &dyn Store,
    workspace: WorkspaceId,
    after: i64,
    limit: u32,
) -> parley_store::Result<(Vec<Arc<StreamEvent>>, Option<i64>, bool)> {
    let page = store.events_after(workspace, after, limit).await?;
    let full = page.len() >= limit as usize;
    let last = page.last().map(|e| e.position);
    Ok((envelopes(store, workspace, page).await?, last, full))
}

/// Build the envelopes of a page of the feed, loading its messages in one go.
pub(crate) async fn envelopes(
    store: &dyn Store,
    workspace: WorkspaceId,
    page: Vec<FeedEvent>,
) -> parley_store::Result<Vec<Arc<StreamEvent>>> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<MessageId> = page.iter().filter_map(|e| e.message_event().map(|m| m.message_id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let messages: HashMap<MessageId, Message> = if ids.is_empty() {
        HashMap::new()
    } else {
        store.messages_with_events(workspace, &ids).await?.into_iter().map(|m| (m.id, m)).collect()
    };
    let mut out = Vec::with_capacity(page.len());
    for fe in page {
        let id = fe.id();
        let (json, event_type, channel) = match &fe.item {
            FeedItem::Message { channel, event } => {
                // Events are never recorded without their message, and messages are never deleted.
                let Some(message) = messages.get(&event.message_id) else {
                    tracing::error!(event = %event.id, message = %event.message_id, "an event's message is missing");
                    continue;
                };
                let envelope = EventEnvelope::for_message_event(message, event);
                (serde_json::to_string(&envelope), Cow::Borrowed(event.kind.event_type()), Some(*channel))
            }
            FeedItem::Workspace(event) => {
                let envelope = WorkspaceEventEnvelope {
                    id: event.id,
                    event_type: event.event_type.clone(),
                    created_at: event.created_at,
                    workspace_id: event.workspace_id,
                    data: event.data.clone(),
                };
                (serde_json::to_string(&envelope), Cow::Owned(event.event_type.clone()), None)
            }
        };
        let json = json.map_err(|e| StoreError::Corrupt(format!("event {id} cannot be serialised: {e}")))?;
        let (sse, json) = sse_message(&id.to_string(), &event_type, &json);
        out.push(Arc::new(StreamEvent { position: fe.position, id, event_type, channel, sse, json }));
    }
    Ok(out)
}

/// One Server-Sent Events message, and where `data` lies in it. `data` is one line of JSON
/// (serde_json escapes every line break inside strings), so it needs one `data:` field.
fn sse_message(id: &str, event_type: &str, data: &str) -> (bytes::Bytes, std::ops::Range<usize>) {
    let mut out = String::with_capacity(id.len() + event_type.len() + data.len() + 24);
    for part in ["id: ", id, "\nevent: ", event_type, "\ndata: "] {
        out.push_str(part);
    }
    let start = out.len();
    out.push_str(data);
    let range = start..out.len();
    out.push_str("\n\n");
    (bytes::Bytes::from(out), range)
}

/// Why a follower stops.
enum End {
    /// The engine stops streaming, or the client went away.
    Stopped,
    /// The client left its buffer full for too long.
    TooSlow,
}

/// One subscription's task: from the store up to the hub, then the hub's broadcast.
struct Follower {
    store: Arc<dyn Store>,
    workspace: WorkspaceId,
    /// Keeps the hub running while this subscription lives.
    hub: Arc<Hub>,
    receiver: broadcast::Receiver<Arc<StreamEvent>>,
    tx: mpsc::Sender<Arc<StreamEvent>>,
    filter: StreamFilter,
    /// The position of the last event handed on (or skipped by the filter).
    last: i64,
    settings: StreamSettings,
    stop: CancellationToken,
    catch_up_reads: Arc<tokio::sync::Semaphore>,
}

impl Follower {
    async fn run(mut self) {
        loop {
            let followed = match self.catch_up().await {
                Ok(()) => self.follow_hub().await,
                Err(end) => Err(end),
            };
            match followed {
                // Lagged behind the broadcast: back to the store.
                Ok(()) => {}
                Err(End::TooSlow) => {
                    tracing::info!(workspace = %self.workspace, "ending an event stream whose client stopped reading");
                    return;
                }
                Err(End::Stopped) => return,
            }
        }
    }

    /// Read the store from `last` up to the hub's position (at least).
    async fn catch_up(&mut self) -> Result<(), End> {
        let target = self.hub.shared.published.load(Ordering::SeqCst);
        let mut delay = Duration::from_millis(200);
        while self.last < target {
            let read = tokio::select! {
                read = async {
                    let _permit = self.catch_up_reads.acquire().await;
                    read_page(self.store.as_ref(), self.workspace, self.last, self.settings.page).await
                } => read,
                _ = self.stop.cancelled() => return Err(End::Stopped),
                _ = self.tx.closed() => return Err(End::Stopped),
            };
            match read {
                Ok((events, last, _)) => {
                    let Some(last) = last else { break };
                    for event in events {
                        self.hand_on(event).await?;
                    }
                    self.last = self.last.max(last);
                }
                Err(e) => {
                    tracing::warn!(error = %e, workspace = %self.workspace, "an event stream could not read the feed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => return Err(End::Stopped),
                        _ = self.tx.closed() => return Err(End::Stopped),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    /// Follow the broadcast until it reports lag (`Ok`) or the subscription ends.
    async fn follow_hub(&mut self) -> Result<(), End> {
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.stop.cancelled() => return Err(End::Stopped),
                _ = self.tx.closed() => return Err(End::Stopped),
            };
            match received {
                Ok(event) => self.hand_on(event).await?,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, workspace = %self.workspace, "an event stream fell behind; reading the store");
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Err(End::Stopped),
            }
        }
    }

    /// Pass `event` to the client unless it has it already or does not want it.
    async fn hand_on(&mut self, event: Arc<StreamEvent>) -> Result<(), End> {
        if event.position <= self.last {
            return Ok(());
        }
        self.last = event.position;
        if !self.filter.matches(&event) {
            return Ok(());
        }
        // Almost always there is room: hand it on without arming a timer.
        let event = match self.tx.try_send(event) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Stopped),
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        tokio::select! {
            sent = self.tx.send_timeout(event, self.settings.slow_client) => match sent {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::TooSlow),
                Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Stopped),
            },
            _ = self.stop.cancelled() => Err(End::Stopped),
        }
    }
}

#[cfg(test)]
mod tests;
