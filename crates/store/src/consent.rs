//! The consent ledger and the messaging policy: the records and the [`ConsentStore`] part of the
//! store.
//!
//! The ledger is append-only: an opt-in or opt-out is a new [`Consent`] record, never an update
//! (a contact merge re-points records to the survivor, which is the only change they see). Which
//! consent is in force is decided outside the store (`parley_domain::policy`), from the records.
//! The policy's queries about messages (the WhatsApp window, frequency caps) live here too.

use crate::{ConsentChange, Result};
use async_trait::async_trait;
use parley_domain::{Channel, ChannelAccountId, ConsentId, ContactId, Millis, Purpose, WorkspaceId};

pub use parley_domain::policy::{ChannelScope, Consent, ConsentSource, ConsentStatus, PurposeScope};

/// The consent part of [`crate::Store`]; both backends implement it with the same behaviour.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Append records to the ledger, all in one transaction. A record whose id is stored already
    /// is a `Conflict` (and nothing is stored).
    async fn append_consents(&self, records: Vec<Consent>) -> Result<()>;

    /// The contact's records, newest first (by id), those before `before`, at most `limit`
    /// (`None`: all of them).
    async fn list_consents(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        before: Option<ConsentId>,
        limit: Option<u32>,
    ) -> Result<Vec<Consent>>;

    /// The workspace's opt-out records still in force, newest first (by id), those before
    /// `before`, at most `limit`. An opt-out is in force while no newer record of its contact
    /// covers its (channel, purpose): one for the same or every channel (or `channel`, when the
    /// list is for one) and the same or every purpose. With `channel`, only opt-outs of that
    /// channel or of every channel.
    async fn list_opt_outs(
        &self,
        workspace: WorkspaceId,
        channel: Option<Channel>,
        before: Option<ConsentId>,
        limit: u32,
    ) -> Result<Vec<Consent>>;

    /// The workspace's messaging policy as stored (JSON), `None` when it never set one.
    async fn get_messaging_policy(&self, workspace: WorkspaceId) -> Result<Option<serde_json::Value>>;

    /// Store the workspace's messaging policy, replacing the previous one.
    async fn put_messaging_policy(&self, workspace: WorkspaceId, policy: &serde_json::Value, now: Millis)
    -> Result<()>;

    /// When the newest inbound message from `from` to the channel account was stored (one probe
    /// of the `messages_inbound_from` index); `None` when there is none.
    async fn last_inbound_at(&self, account: ChannelAccountId, from: &str) -> Result<Option<Millis>>;

    /// For frequency caps: `created_at` of the contact's outbound messages of `purpose` created at
    /// or after `since`, newest first, at most `limit`; rejected and canceled ones do not count.
    async fn recent_sends(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        purpose: &Purpose,
        since: Millis,
        limit: u32,
    ) -> Result<Vec<Millis>>;
}

/// The row form of a record's fields, shared by both backends.
pub(crate) fn consent_from_parts(parts: ConsentParts) -> Result<Consent> {
    use crate::StoreError::Corrupt;
    let bad = |what: &str, v: &str| Corrupt(format!("consent {}: bad {what} '{v}'", parts.id));
    Ok(Consent {
        id: ConsentId::parse(&parts.id).map_err(|_| bad("id", &parts.id))?,
        workspace_id: WorkspaceId::parse(&parts.workspace_id).map_err(|_| bad("workspace", &parts.workspace_id))?,
        contact_id: ContactId::parse(&parts.contact_id).map_err(|_| bad("contact", &parts.contact_id))?,
        channel: ChannelScope::parse(&parts.channel).ok_or_else(|| bad("channel", &parts.channel))?,
        purpose: PurposeScope::parse(&parts.purpose).ok_or_else(|| bad("purpose", &parts.purpose))?,
        status: ConsentStatus::parse(&parts.status).ok_or_else(|| bad("status", &parts.status))?,
        source: ConsentSource::parse(&parts.source).ok_or_else(|| bad("source", &parts.source))?,
        evidence: serde_json::from_str(&parts.evidence).map_err(|_| bad("evidence", &parts.evidence))?,
        address: parts.address,
        recorded_at: Millis(parts.recorded_at),
    })
}

/// A `consents` row as read, before parsing.
pub(crate) struct ConsentParts {
    pub id: String,
    pub workspace_id: String,
    pub contact_id: String,
    pub channel: String,
    pub purpose: String,
    pub status: String,
    pub source: String,
    pub evidence: String,
    pub address: Option<String>,
    pub recorded_at: i64,
}

/// The columns of [`ConsentParts`], in order.
pub(crate) const CONSENT_COLUMNS: &str =
    "id, workspace_id, contact_id, channel, purpose, status, source, evidence, address, recorded_at";

/// The workspace event of a consent record: `contact.opted_out` or `contact.opted_in`, with the
/// contact's id and the record, recorded in the transaction that appends it.
pub(crate) fn consent_event(record: &Consent) -> Result<crate::WorkspaceEvent> {
    let consent = serde_json::to_value(record)
        .map_err(|e| crate::StoreError::Database(format!("cannot serialise a consent record: {e}")))?;
    Ok(crate::WorkspaceEvent {
        id: parley_domain::EventId::new(),
        workspace_id: record.workspace_id,
        event_type: format!("contact.{}", record.status.as_str()),
        data: serde_json::json!({ "contact_id": record.contact_id, "consent": consent }),
        created_at: record.recorded_at,
    })
}

/// The consent in force for a (channel, purpose) of a contact whose records are `ledger`, either
/// of them possibly `*`: the newest record covering it exactly or through `*` (for one channel and
/// one purpose, what `parley_domain::policy::consent_in_force` answers; for `*`, the record the
/// API shows as `current` for it).
pub fn scope_in_force<'a>(ledger: &'a [Consent], channel: ChannelScope, purpose: &PurposeScope) -> Option<&'a Consent> {
    ledger
        .iter()
        .filter(|r| {
            (r.channel == channel || r.channel == ChannelScope::All)
                && (&r.purpose == purpose || r.purpose == PurposeScope::All)
        })
        .max_by_key(|r| r.id)
}

/// The records that `changes` (one row's, in order) append to the ledger of `contact` (`ledger`,
/// which they join, so that each change sees those before it): a change becomes a record only
/// when the consent in force for its (channel, purpose) ([`scope_in_force`]) is missing or of the
/// other status. A change followed by one that covers its (channel, purpose), exactly or through
/// `*`, is left out: it would be out of force at once, and a record of it would make every re-run
/// append both again. So writing the same changes again appends nothing.
pub(crate) fn consents_to_append(
    workspace: WorkspaceId,
    contact: ContactId,
    ledger: &mut Vec<Consent>,
    changes: &[ConsentChange],
    now: Millis,
) -> Vec<Consent> {
    let covers = |later: &ConsentChange, earlier: &ConsentChange| {
        (later.channel == earlier.channel || later.channel == ChannelScope::All)
            && (later.purpose == earlier.purpose || later.purpose == PurposeScope::All)
    };
    let mut appended = Vec::new();
    for (n, change) in changes.iter().enumerate() {
        if changes[n + 1..].iter().any(|later| covers(later, change))
            || scope_in_force(ledger, change.channel, &change.purpose).is_some_and(|r| r.status == change.status)
        {
            continue;
        }
        let record = Consent {
            id: ConsentId::new(),
            workspace_id: workspace,
            contact_id: contact,
            channel: change.channel,
            purpose: change.purpose.clone(),
            status: change.status,
            source: change.source,
            evidence: change.evidence.clone(),
            address: None,
            recorded_at: now,
        };
        ledger.push(record.clone());
        appended.push(record);
    }
    appended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(channel: &str, purpose: &str, status: ConsentStatus) -> ConsentChange {
        ConsentChange {
            channel: ChannelScope::parse(channel).unwrap(),
            purpose: PurposeScope::parse(purpose).unwrap(),
            status,
            source: ConsentSource::Import,
            evidence: serde_json::json!({"import": {"row": 1}}),
        }
    }

    #[test]
    fn only_changes_of_the_consent_in_force_are_appended() {
        use ConsentStatus::{OptedIn, OptedOut};
        let (ws, contact) = (WorkspaceId::new(), ContactId::new());
        let mut ledger = Vec::new();
        let changes = [
            // Overridden by the next: left out.
            change("sms", "*", OptedIn),
            change("*", "*", OptedOut),
            change("sms", "marketing", OptedIn),
            // Covered by the second, same status: nothing.
            change("whatsapp", "otp", OptedOut),
            // Overlapping the second without covering it: kept.
            change("rcs", "*", OptedIn),
        ];
        let first = consents_to_append(ws, contact, &mut ledger, &changes, Millis(1));
        assert_eq!(
            first.iter().map(|r| (r.channel.as_str(), r.purpose.as_str(), r.status)).collect::<Vec<_>>(),
            [("*", "*", OptedOut), ("sms", "marketing", OptedIn), ("rcs", "*", OptedIn)]
        );
        assert!(first.iter().all(|r| r.contact_id == contact && r.source == ConsentSource::Import));
        // The same again appends nothing.
        assert_eq!(consents_to_append(ws, contact, &mut ledger, &changes, Millis(2)), []);
        // A newer opt-out of marketing on sms: the opt-in is appended again, the rest stays.
        let stop = change("sms", "marketing", OptedOut);
        assert_eq!(consents_to_append(ws, contact, &mut ledger, &[stop], Millis(3)).len(), 1);
        let again = consents_to_append(ws, contact, &mut ledger, &changes, Millis(4));
        assert_eq!(
            again.iter().map(|r| (r.channel.as_str(), r.purpose.as_str())).collect::<Vec<_>>(),
            [("sms", "marketing")]
        );
    }
}
