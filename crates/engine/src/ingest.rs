//! Storing what providers report asynchronously: receipts and inbound messages, in batches.
//! Each writer runs until the engine stops it (after the dispatcher has finished), then stores
//! what is still queued and ends.

use crate::Engine;
use parley_domain::{InboundMessage, Receipt};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const BATCH: usize = 1024;

pub async fn receipt_writer(engine: Engine, rx: UnboundedReceiver<Receipt>) {
    let store = engine.store().clone();
    drain(engine, rx, "receipts", move |batch| {
        let store = store.clone();
        async move { store.record_receipts(batch).await.map(|_| ()) }
    })
    .await
}

pub async fn inbound_writer(engine: Engine, rx: UnboundedReceiver<InboundMessage>) {
    let store = engine.store().clone();
    drain(engine, rx, "inbound messages", move |batch| {
        let store = store.clone();
        async move { store.record_inbound(batch).await.map(|_| ()) }
    })
    .await
}

async fn drain<T, F, Fut>(engine: Engine, mut rx: UnboundedReceiver<T>, what: &'static str, write: F)
where
    T: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = parley_store::Result<()>>,
{
    let stop = engine.inner.writers_stop.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return } else { false },
            _ = stop.cancelled() => {
                while let Ok(item) = rx.try_recv() {
                    batch.push(item);
                }
                true
            }
        };
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match write(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, count = batch.len(), "recording {what} failed; retrying");
                    if stopping && delay >= Duration::from_secs(2) {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        if stopping {
            return;
        }
    }
}
