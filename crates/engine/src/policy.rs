//! Messaging policy: consent and opt-outs, keywords, quiet hours, frequency caps and the
//! WhatsApp customer-service window, checked before a message is accepted.
//!
//! The rules themselves are pure (`parley_domain::policy`); this module loads what they need
//! (the workspace's policy, the contact's ledger, recent sends, the last inbound message) and
//! applies them: at send time ([`Engine::check_send`], called by accept), for inbound keywords
//! ([`Engine::handle_keyword`], called by the inbound writer), and for the consent routes.

use crate::cache::TtlCache;
use crate::{Engine, EngineError, IdempotencyInput, Result, SendSpec};
use parley_domain::policy::{
    self, ChannelScope, Consent, ConsentRefusal, ConsentSource, ConsentStatus, KeywordAction, MessagingPolicy,
    PolicyFieldError, PurposeScope,
};
use parley_domain::{
    Address, Channel, ChannelAccountId, ConsentId, ContactId, Content, Message, MessageId, Millis, Purpose, WorkspaceId,
};
use parley_store::Contact;
use std::sync::Arc;

/// Why a send is refused by the ledger or the policy; the message is recorded as `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    RecipientOptedOut,
    ConsentRequired,
    FrequencyCapExceeded,
    WhatsappWindowClosed,
}

impl Refusal {
    /// The error code, on the API and on the message's `rejected` event.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::RecipientOptedOut => "recipient_opted_out",
            Refusal::ConsentRequired => "consent_required",
            Refusal::FrequencyCapExceeded => "frequency_cap_exceeded",
            Refusal::WhatsappWindowClosed => "whatsapp_window_closed",
        }
    }
}

/// Why a send is refused by policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Refused before sending; recorded as the `rejected` message `message_id`.
    #[error("{detail}")]
    Refused { refusal: Refusal, detail: String, message_id: MessageId },
    /// A send or consent names a contact that is not in the workspace.
    #[error("contact {0} not found in this workspace")]
    ContactNotFound(String),
    /// A send to a contact that has no address on the channel.
    #[error("contact {contact} has no {channel} identity to send to")]
    NoIdentityForChannel { contact: ContactId, channel: &'static str },
    /// `channel: "auto"` found no channel that can carry this content to this contact now; each
    /// channel with why it was passed over.
    #[error("no channel can reach contact {contact} with this content now")]
    NoRoute { contact: ContactId, passed_over: serde_json::Map<String, serde_json::Value> },
    /// A step of an explicit route cannot be sent to the recipient (no address on its channel).
    #[error("route step {step} ({channel}) cannot reach the recipient: {reason}")]
    RouteStepUnreachable { step: usize, channel: &'static str, reason: String },
    /// A messaging policy that is not acceptable (each field named).
    #[error("the messaging policy is not valid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidSettings(Vec<PolicyFieldError>),
}

impl PolicyError {
    /// The rejected message a refusal was recorded as.
    pub fn message_id(&self) -> Option<MessageId> {
        match self {
            PolicyError::Refused { message_id, .. } => Some(*message_id),
            _ => None,
        }
    }
}

/// What the consent ledger says against sending `purpose` on `channel`, with why: an opt-out in
/// force refuses anything; marketing needs an opt-in in force. The one reading for acceptance and
/// for the check again at hand-off.
fn consent_refusal(records: &[Consent], channel: Channel, purpose: &Purpose) -> Option<(Refusal, String)> {
    let refusal = policy::check_consent(records, channel, purpose).err()?;
    let (channel, purpose_name) = (channel.as_str(), purpose.as_str());
    match refusal {
        ConsentRefusal::OptedOut => Some((
            Refusal::RecipientOptedOut,
            format!("the recipient has opted out of {purpose_name} messages on {channel}"),
        )),
        ConsentRefusal::ConsentRequired => Some((
            Refusal::ConsentRequired,
            format!(
                "{purpose_name} messages need the recipient's opt-in on {channel}; record it with \
                 POST /v1/contacts/{{id}}/consents"
            ),
        )),
    }
}

/// What the policy says about one send.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Send when it was going to.
    Go,
    /// Hold it until then (quiet hours, a deferring cap).
    Hold(Millis),
    /// Refuse it (recorded as `rejected`).
    Refuse(Refusal, String),
}

/// One send as the policy sees it.
pub(crate) struct SendCheck<'a> {
    pub channel: Channel,
    pub account: ChannelAccountId,
    pub to: &'a str,
    pub contact: Option<&'a Contact>,
    pub purpose: &'a Purpose,
    pub content: &'a Content,
    pub now: Millis,
    /// When it would go (`send_at` in the future, else now).
    pub at: Millis,
    pub respect_quiet_hours: Option<bool>,
}

/// How long a workspace's messaging policy is used without reading it again. Every send needs
/// it; a change made through this process applies at once, one made through another process
/// (several processes on one PostgreSQL database) within this time.
const POLICY_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The workspaces' messaging policies as last read (see [`POLICY_TTL`]), shared: every send reads
/// its workspace's, and a copy would cost its keyword lists' allocations each time.
pub(crate) struct PolicyCache(TtlCache<WorkspaceId, Arc<MessagingPolicy>>);

impl Default for PolicyCache {
    fn default() -> Self {
        PolicyCache(TtlCache::new(POLICY_TTL))
    }
}

impl Engine {
    /// The workspace's messaging policy (the defaults when it never set one).
    pub async fn messaging_policy(&self, workspace: WorkspaceId) -> Result<Arc<MessagingPolicy>> {
        if let Some(policy) = self.inner.policy_cache.0.get(&workspace) {
            return Ok(policy);
        }
        let policy = Arc::new(match self.store().get_messaging_policy(workspace).await? {
            None => MessagingPolicy::default(),
            Some(stored) => serde_json::from_value(stored).map_err(|e| {
                EngineError::Store(parley_store::StoreError::Corrupt(format!("messaging policy of {workspace}: {e}")))
            })?,
        });
        self.inner.policy_cache.0.put(workspace, policy.clone());
        Ok(policy)
    }

    /// Replace the workspace's messaging policy, after checking every field.
    pub async fn set_messaging_policy(
        &self,
        workspace: WorkspaceId,
        policy: MessagingPolicy,
    ) -> Result<MessagingPolicy> {
        let errors = policy.validate();
        if !errors.is_empty() {
            return Err(PolicyError::InvalidSettings(errors).into());
        }
        let value = serde_json::to_value(&policy)
            .map_err(|e| EngineError::Store(parley_store::StoreError::Database(e.to_string())))?;
        self.store().put_messaging_policy(workspace, &value, Millis::now()).await?;
        self.inner.policy_cache.0.put(workspace, Arc::new(policy.clone()));
        Ok(policy)
    }

    /// Append one record to a contact's ledger.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_consent(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        channel: ChannelScope,
        purpose: PurposeScope,
        status: ConsentStatus,
        source: ConsentSource,
        evidence: serde_json::Value,
        address: Option<String>,
    ) -> Result<Consent> {
        let record = Consent {
            id: ConsentId::new(),
            workspace_id: workspace,
            contact_id: contact,
            channel,
            purpose,
            status,
            source,
            evidence,
            address,
            recorded_at: Millis::now(),
        };
        self.store().append_consents(vec![record.clone()]).await?;
        Ok(record)
    }

    /// What the policy says about a send (the recipient contact's ledger is read here).
    pub(crate) async fn check_send(
        &self,
        workspace: WorkspaceId,
        policy: &MessagingPolicy,
        send: SendCheck<'_>,
    ) -> Result<Verdict> {
        let purpose = send.purpose.as_str();
        let records = match send.contact {
            Some(c) => self.store().list_consents(workspace, c.id, None, None).await?,
            None => Vec::new(),
        };
        if let Some((refusal, detail)) = consent_refusal(&records, send.channel, send.purpose) {
            return Ok(Verdict::Refuse(refusal, detail));
        }
        let mut at = send.at;
        // Frequency caps count the contact's messages of this purpose; rejected and canceled ones
        // do not count.
        if let Some(contact) = send.contact {
            for cap in policy.caps_for(send.purpose) {
                let period_ms = cap.period_seconds.saturating_mul(1000);
                let since = send.now.plus_millis(-period_ms);
                let times = self.store().recent_sends(workspace, contact.id, send.purpose, since, cap.max).await?;
                let Some(release) = policy::cap_release(&times, cap.max, period_ms) else { continue };
                match policy.cap_action {
                    policy::CapAction::Reject => {
                        let detail = format!(
                            "at most {} {purpose} messages per {} seconds may go to this contact; the next is \
                             allowed at {release}",
                            cap.max, cap.period_seconds
                        );
                        return Ok(Verdict::Refuse(Refusal::FrequencyCapExceeded, detail));
                    }
                    policy::CapAction::Defer => at = at.max(release),
                }
            }
        }
        // Quiet hours, in the contact's zone (or the workspace's default zone).
        let quiet = &policy.quiet_hours;
        if send.respect_quiet_hours.unwrap_or(send.purpose.is_marketing())
            && quiet.enabled
            && let (Some(start), Some(end)) = (policy::parse_clock(&quiet.start), policy::parse_clock(&quiet.end))
        {
            let zone = send
                .contact
                .and_then(|c| c.time_zone.as_deref())
                .and_then(|z| jiff::tz::TimeZone::get(z).ok())
                .or_else(|| jiff::tz::TimeZone::get(&quiet.default_time_zone).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC);
            if let Some(open) = policy::quiet_hours_release(at.to_timestamp(), &zone, start, end) {
                at = at.max(Millis::from_timestamp(open));
            }
        }
        // The WhatsApp window, when the message would actually go, per WhatsApp number and
        // customer (unless the workspace leaves it to Meta).
        if send.channel == Channel::Whatsapp
            && policy.whatsapp_window == policy::WhatsappWindowMode::Enforce
            && !matches!(send.content, Content::Template { .. })
        {
            let last = self.store().last_inbound_at(send.account, send.to).await?;
            if !policy::whatsapp_window_open(last, at) {
                let detail = match last {
                    Some(last) => format!(
                        "the customer's last message was at {last}: free-form WhatsApp messages may follow it for \
                         24 hours only; send an approved template instead"
                    ),
                    None => "the customer has not written to this WhatsApp number: free-form messages need a \
                             customer message in the last 24 hours; send an approved template instead"
                        .to_string(),
                };
                return Ok(Verdict::Refuse(Refusal::WhatsappWindowClosed, detail));
            }
        }
        Ok(if at > send.at { Verdict::Hold(at) } else { Verdict::Go })
    }

    /// Check a claimed message's consent again, just before it is handed over, when its contact's
    /// ledger changed after it was accepted (`consent_changed_at`, from the claim): an opt-out
    /// recorded meanwhile (a STOP, an API call, an import) must stop messages already waiting, as
    /// carriers' opt-out rules require. The error to reject it with, if consent no longer allows it.
    ///
    /// The comparison is strict: a record of the same millisecond as the acceptance was already
    /// seen by it (the keyword confirmation is accepted right after the opt-out it confirms).
    pub(crate) async fn consent_withdrawn(
        &self,
        message: &Message,
        consent_changed_at: Option<Millis>,
    ) -> Result<Option<parley_domain::ErrorInfo>> {
        let (Some(contact), Some(changed)) = (message.contact_id, consent_changed_at) else { return Ok(None) };
        if changed <= message.created_at {
            return Ok(None);
        }
        let records = self.store().list_consents(message.workspace_id, contact, None, None).await?;
        let purpose = message.purpose.clone().unwrap_or_else(Purpose::transactional);
        Ok(consent_refusal(&records, message.channel, &purpose).map(|(refusal, detail)| parley_domain::ErrorInfo {
            code: refusal.code().into(),
            detail: format!("{detail} (the ledger changed after this message was accepted; it was not sent)"),
            permanent: true,
        }))
    }

    /// Act on an inbound message that is a keyword: record the consent it gives or takes, then
    /// answer it once (the answer's idempotency key is derived from the inbound message's id).
    /// Called for messages stored now only, so a provider's repeated delivery answers nothing.
    pub(crate) async fn handle_keyword(&self, message: &Message) -> Result<()> {
        let (Content::Text { text, .. }, Some(contact), Some(from)) =
            (&message.content, message.contact_id, message.from.as_deref())
        else {
            return Ok(());
        };
        let policy = self.messaging_policy(message.workspace_id).await?;
        let Some(action) = policy.keyword_action(text) else { return Ok(()) };
        let change = match action {
            KeywordAction::OptOut => Some((ChannelScope::One(message.channel), ConsentStatus::OptedOut)),
            KeywordAction::OptOutAll => Some((ChannelScope::All, ConsentStatus::OptedOut)),
            KeywordAction::OptIn => Some((ChannelScope::One(message.channel), ConsentStatus::OptedIn)),
            KeywordAction::Help => None,
        };
        if let Some((channel, status)) = change {
            let evidence = serde_json::json!({"message_id": message.id, "text": text});
            self.record_consent(
                message.workspace_id,
                contact,
                channel,
                PurposeScope::All,
                status,
                ConsentSource::Keyword,
                evidence,
                Some(from.to_string()),
            )
            .await?;
        }
        let reply = match action {
            KeywordAction::OptOut | KeywordAction::OptOutAll => policy.opt_out_reply.clone(),
            KeywordAction::OptIn => policy.opt_in_reply.clone(),
            KeywordAction::Help => policy.help_text.clone(),
        };
        let Ok(to) = Address::parse(message.channel, from, None) else { return Ok(()) };
        let spec = SendSpec {
            channel: message.channel,
            to: Some(to),
            channel_account_id: Some(message.channel_account_id),
            content: Content::text(reply),
            send_at: None,
            validity_seconds: None,
            metadata: Default::default(),
            client_reference: None,
            contact_id: Some(contact),
            purpose: Purpose::transactional(),
            respect_quiet_hours: Some(false),
            auto_channel: false,
            route: None,
        };
        let key = format!("parley:keyword-reply:{}", message.id);
        let idempotency = IdempotencyInput { key: key.clone(), request_hash: key };
        self.accept_as(message.workspace_id, vec![spec], Some(idempotency), true, |items| match items.first() {
            Some(Ok(m)) => (202, serde_json::to_vec(m).unwrap_or_default()),
            _ => (422, Vec::new()),
        })
        .await?;
        Ok(())
    }
}
