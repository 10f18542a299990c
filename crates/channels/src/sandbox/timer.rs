//! One background task per sandbox connector that emits receipts and auto-replies when they fall
//! due: a binary heap of due events fed by a channel, instead of a sleeping task per message.

use crate::ProviderEvents;
use parley_domain::{InboundMessage, Receipt};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Something the provider tells Parley later.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Emission {
    Receipt(Receipt),
    Inbound(InboundMessage),
}

impl Emission {
    /// Report it; a closed receiver means the engine is gone, and then nobody is listening.
    pub(crate) fn emit(self, events: &ProviderEvents) {
        match self {
            Emission::Receipt(r) => {
                let _ = events.receipts.send(r);
            }
            Emission::Inbound(m) => {
                let _ = events.inbound.send(m);
            }
        }
    }
}

struct Due {
    at: Instant,
    /// Ties on `at` keep the order in which they were scheduled.
    seq: u64,
    emission: Emission,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Reversed: BinaryHeap is a max-heap and the earliest must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The handle the connector keeps to schedule emissions. The task ends when `cancel` is
/// cancelled or the handle is dropped; pending emissions are then dropped.
pub(crate) struct Timer {
    tx: mpsc::UnboundedSender<(Instant, Emission)>,
}

impl Timer {
    /// Start the task on the current Tokio runtime.
    pub(crate) fn start(events: ProviderEvents, cancel: CancellationToken) -> Timer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, events, cancel));
        Timer { tx }
    }

    pub(crate) fn schedule(&self, at: Instant, emission: Emission) {
        // Fails only after shutdown, when pending emissions are dropped anyway.
        let _ = self.tx.send((at, emission));
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<(Instant, Emission)>, events: ProviderEvents, cancel: CancellationToken) {
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut push = |heap: &mut BinaryHeap<Due>, (at, emission): (Instant, Emission)| {
        seq += 1;
        heap.push(Due { at, seq, emission });
    };
    loop {
        let next = heap.peek().map(|d| d.at);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            item = rx.recv() => match item {
                Some(item) => {
                    push(&mut heap, item);
                    // Take whatever else is waiting in one go.
                    while let Ok(item) = rx.try_recv() {
                        push(&mut heap, item);
                    }
                }
                None => break,
            },
            () = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|d| d.at <= now) {
                    if let Some(due) = heap.pop() {
                        due.emission.emit(&events);
                    }
                }
            }
        }
    }
    if !heap.is_empty() {
        tracing::debug!(pending = heap.len(), "sandbox receipt timer stopped with emissions pending");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
