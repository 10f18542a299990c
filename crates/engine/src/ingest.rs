//! Storing what providers report asynchronously: receipts and inbound messages, in batches.
//! Each writer runs until the engine stops it (after the dispatcher has finished), then stores
//! what is still queued and ends.
//!
//! Every inbound message is stored with its sender's contact (created on first contact); then the
//! ones stored now (a provider's repeat is not) are checked for keywords (STOP, START, HELP, …),
//! which record consent and are answered once.

use crate::Engine;
use crate::metrics::EventTally;
use parley_domain::{EventKind, InboundMessage, Message, Receipt};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const BATCH: usize = 1024;

/// Every receipt stored counts as an event of its state, whether it moved the message or was
/// recorded without effect (late, or kept until its `sent` outcome lands).
pub async fn receipt_writer(engine: Engine, rx: UnboundedReceiver<Receipt>) {
    let writer = engine.clone();
    drain(engine, rx, "receipts", move |batch| {
        let engine = writer.clone();
        async move {
            let mut tally = EventTally::default();
            for receipt in &batch {
                // Receipts come from the connectors the registry built, so the account is known.
                if let Ok(Some(entry)) =
                    engine.inner.registry.get(engine.store().as_ref(), receipt.channel_account_id).await
                {
                    tally.add(entry.account.channel, EventKind::from(receipt.state));
                }
            }
            // A failed route step has a job due now, to move on: wake the dispatcher.
            let failures = batch.iter().any(|r| r.state.is_failure());
            engine.store().record_receipts(batch).await?;
            engine.inner.metrics.record_events(&tally);
            if failures {
                engine.inner.work_ready.notify_one();
            }
            Ok(())
        }
    })
    .await
}

pub async fn inbound_writer(engine: Engine, rx: UnboundedReceiver<InboundMessage>) {
    let writer = engine.clone();
    drain(engine, rx, "inbound messages", move |batch| {
        let engine = writer.clone();
        async move { receive(&engine, batch).await.map(|_| ()) }
    })
    .await
}

/// Store inbound messages with their senders' contacts (and so in their conversations), then act
/// on the ones stored now: a provider's repeat is not stored again, so it is not acted on again.
/// Every path that receives messages (connectors' channels, provider callbacks, the sandbox's
/// simulated messages) comes through here.
pub(crate) async fn receive(engine: &Engine, mut batch: Vec<InboundMessage>) -> parley_store::Result<Vec<Message>> {
    for inbound in batch.iter_mut().filter(|i| i.contact_id.is_none()) {
        inbound.contact_id = sender_contact(engine, inbound).await?;
    }
    let stored = engine.store().record_inbound(batch).await?;
    let mut tally = EventTally::default();
    for message in &stored {
        tally.add(message.channel, EventKind::Received);
    }
    engine.inner.metrics.record_events(&tally);
    // Stored and committed: a failure here must not store the batch again.
    for message in &stored {
        if let Err(e) = engine.handle_keyword(message).await {
            tracing::warn!(error = %e, message_id = %message.id, "could not act on an inbound keyword");
        }
    }
    Ok(stored)
}

/// The contact of an inbound message's sender, created if the workspace has none. `None` when
/// the account is unknown or the sender's address cannot be an identity (the message is stored
/// all the same); a store failure is an error, so that the batch is tried again.
async fn sender_contact(
    engine: &Engine,
    inbound: &InboundMessage,
) -> parley_store::Result<Option<parley_domain::ContactId>> {
    let Ok(Some(entry)) = engine.inner.registry.get(engine.store().as_ref(), inbound.channel_account_id).await else {
        return Ok(None);
    };
    match engine.ensure_contact(entry.account.workspace_id, entry.account.channel, &inbound.from).await {
        Ok(contact) => Ok(Some(contact.id)),
        Err(crate::EngineError::Store(e)) => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, from = %inbound.from, "inbound sender kept without a contact");
            Ok(None)
        }
    }
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
