//! Contacts: create, change, find, merge and import the customers of a workspace.
//!
//! The first three methods ([`Engine::contact`], [`Engine::contact_by_identity`],
//! [`Engine::ensure_contact`]) are what other use cases build on (consent, message addressing,
//! inbound senders). The rest serve `/v1/contacts`: request bodies arrive as JSON values and are
//! checked here field by field ([`parse_change`]), so the API and the importer apply the same
//! rules; the store decides the new record inside its transaction (see `parley_store::contacts`).

mod import;

pub use import::{ImportFormat, ImportOrigin, ImportReport, ImportRowError, MAX_IMPORT_ERRORS};

use crate::{Engine, Result};
use parley_domain::contact::{self as rules, ContactFieldError};
use parley_domain::{Channel, ContactId, Identity, Millis, WorkspaceId};
use parley_store::{
    Contact, ContactChange, ContactFilter, ContactTarget, ContactWrite, ContactWriteOutcome, MergeOutcome,
};
use serde_json::{Map, Value};

/// Why a contact request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("contact {0} not found in this workspace")]
    NotFound(String),
    /// A field is refused; `code` is the API's code for it.
    #[error("{detail}")]
    Invalid { code: &'static str, field: String, detail: String },
    /// The identity belongs to another contact of the workspace.
    #[error("identity {identity} belongs to contact {owner}")]
    IdentityConflict { identity: Identity, owner: ContactId },
    /// A contact merged with itself.
    #[error("a contact cannot be merged with itself ({0})")]
    MergeWithItself(String),
    /// An import file that cannot be read at all (an unknown column, UTF-16, …); nothing stored.
    #[error("{0}")]
    Import(String),
}

impl ContactError {
    fn field(e: ContactFieldError) -> ContactError {
        ContactError::Invalid { code: field_code(&e), field: e.field().to_string(), detail: e.to_string() }
    }

    fn invalid(field: &str, detail: impl Into<String>) -> ContactError {
        ContactError::Invalid { code: "invalid_contact", field: field.to_string(), detail: detail.into() }
    }
}

/// The API's code for a refused field.
pub fn field_code(e: &ContactFieldError) -> &'static str {
    match e {
        ContactFieldError::InvalidIdentity { .. } => "invalid_identity",
        ContactFieldError::AttributesNotObject | ContactFieldError::AttributesTooLarge { .. } => "invalid_attributes",
        ContactFieldError::InvalidTag(_) | ContactFieldError::TooManyTags(_) => "invalid_tag",
        ContactFieldError::InvalidLocale(_) => "invalid_locale",
        ContactFieldError::UnknownTimeZone(_) => "unknown_time_zone",
        ContactFieldError::InvalidName => "invalid_contact",
    }
}

/// Which fields a body may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST /v1/contacts`, an NDJSON import line.
    Create,
    /// `PATCH /v1/contacts/{id}`.
    Patch,
    /// `PUT /v1/contacts/by-identity/…`: the identity is in the path.
    Upsert,
}

/// Check a JSON body (an object of `name`, `locale`, `time_zone`, `attributes`, `tags`,
/// `preferred_channels` and, but for upserts, `identities`) into a change. Unknown fields are
/// refused; `null` clears a field (JSON Merge Patch).
pub fn parse_change(body: &Value, kind: BodyKind) -> Result<ContactChange, ContactError> {
    let Value::Object(fields) = body else {
        return Err(ContactError::invalid("body", "the body must be a JSON object"));
    };
    let mut change = ContactChange::default();
    for (key, value) in fields {
        match key.as_str() {
            "name" => {
                change.name = Some(
                    opt_string(key, value)?
                        .map(|n| rules::normalize_name(&n))
                        .transpose()
                        .map_err(ContactError::field)?,
                )
            }
            "locale" => {
                change.locale = Some(
                    opt_string(key, value)?
                        .map(|l| rules::normalize_locale(&l))
                        .transpose()
                        .map_err(ContactError::field)?,
                )
            }
            "time_zone" => {
                change.time_zone = Some(
                    opt_string(key, value)?
                        .map(|z| rules::normalize_time_zone(&z))
                        .transpose()
                        .map_err(ContactError::field)?,
                )
            }
            "attributes" => match value {
                Value::Null => change.clear_attributes = true,
                Value::Object(map) => {
                    rules::validate_attributes(value).map_err(ContactError::field)?;
                    // A new contact's attributes are the object itself, without its nulls.
                    change.clear_attributes = kind == BodyKind::Create;
                    change.attributes = Some(map.clone());
                }
                _ => return Err(ContactError::field(ContactFieldError::AttributesNotObject)),
            },
            "tags" => {
                let tags = opt_strings(key, value)?;
                change.tags = Some(rules::normalize_tags(&tags).map_err(ContactError::field)?);
            }
            "preferred_channels" => {
                let mut channels: Vec<Channel> = Vec::new();
                for name in opt_strings(key, value)? {
                    let channel = Channel::parse(&name).ok_or_else(|| {
                        ContactError::invalid(
                            key,
                            format!("'{name}' is not a channel: use sms, whatsapp, rcs or webchat"),
                        )
                    })?;
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                change.preferred_channels = Some(channels);
            }
            "identities" if kind != BodyKind::Upsert => change.identities = Some(parse_identities(value)?),
            other => {
                let known = if kind == BodyKind::Upsert {
                    "name, locale, time_zone, attributes, tags and preferred_channels (the identity is in the path)"
                } else {
                    "name, locale, time_zone, attributes, tags, preferred_channels and identities"
                };
                return Err(ContactError::invalid(other, format!("unknown field '{other}'; the fields are {known}")));
            }
        }
    }
    Ok(change)
}

fn opt_string(key: &str, value: &Value) -> Result<Option<String>, ContactError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ContactError::invalid(key, format!("'{key}' must be a string or null"))),
    }
}

fn opt_strings(key: &str, value: &Value) -> Result<Vec<String>, ContactError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ContactError::invalid(key, format!("'{key}' must be an array of strings"))),
        _ => Err(ContactError::invalid(key, format!("'{key}' must be an array of strings"))),
    }
}

/// Identities as strings (`"sms:+4915…"`) or objects (`{"channel": "sms", "address": "+4915…"}`).
fn parse_identities(value: &Value) -> Result<Vec<Identity>, ContactError> {
    let items: &[Value] = match value {
        Value::Null => &[],
        Value::Array(items) => items,
        _ => return Err(ContactError::invalid("identities", "'identities' must be an array")),
    };
    if items.len() > rules::MAX_IDENTITIES {
        return Err(ContactError::invalid(
            "identities",
            format!("{} identities given; at most {} are allowed", items.len(), rules::MAX_IDENTITIES),
        ));
    }
    let mut out: Vec<Identity> = Vec::new();
    for item in items {
        let identity = match item {
            Value::String(s) => Identity::parse(s),
            Value::Object(o) => {
                let channel = o.get("channel").and_then(Value::as_str).unwrap_or_default();
                let address = o.get("address").and_then(Value::as_str).unwrap_or_default();
                Identity::parse(&format!("{channel}:{address}"))
            }
            _ => {
                return Err(ContactError::invalid(
                    "identities",
                    "each identity is a string like \"sms:+4915112345678\" or an object {\"channel\", \"address\"}",
                ));
            }
        }
        .map_err(ContactError::field)?;
        if !out.contains(&identity) {
            out.push(identity);
        }
    }
    Ok(out)
}

/// Search filters of `GET /v1/contacts`: `identity=sms:+4915…`, `tag=vip`, `attribute.plan=gold`.
pub fn parse_filter<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<ContactFilter, ContactError> {
    let mut filter = ContactFilter::default();
    for (key, value) in pairs {
        if key == "identity" {
            filter.identity = Some(Identity::parse(value).map_err(ContactError::field)?);
        } else if key == "tag" {
            if !rules::is_valid_tag(value) {
                return Err(ContactError::field(ContactFieldError::InvalidTag(value.chars().take(80).collect())));
            }
            if !filter.tags.iter().any(|t| t == value) {
                filter.tags.push(value.to_string());
            }
        } else if let Some(attribute) = key.strip_prefix("attribute.") {
            if attribute.is_empty() || attribute.len() > 128 || attribute.contains(['"', '\\']) {
                return Err(ContactError::invalid(
                    key,
                    "an attribute filter names a key of 1 to 128 characters without '\"' or '\\'",
                ));
            }
            filter.attributes.push((attribute.to_string(), value.to_string()));
        }
    }
    Ok(filter)
}

impl Engine {
    /// The workspace's contact `id`; a merged one resolves to the contact it was merged into;
    /// a deleted one is `None`.
    pub async fn contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>> {
        let mut id = id;
        // Merges re-point older tombstones, so one hop suffices; a few more cost nothing.
        for _ in 0..4 {
            match self.store().get_contact(workspace, id).await? {
                Some(c) if c.deleted_at.is_some() => return Ok(None),
                Some(c) => match c.merged_into {
                    Some(next) => id = next,
                    None => return Ok(Some(c)),
                },
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The owner of the identity (`address` in any form [`Identity::new`] takes). A deleted
    /// contact is returned too (check `deleted_at`): it keeps its identities so that its consents
    /// and opt-outs still apply to them. An address that is not valid for the channel is an
    /// error (`ContactError::Invalid`).
    pub async fn contact_by_identity(
        &self,
        workspace: WorkspaceId,
        channel: Channel,
        address: &str,
    ) -> Result<Option<Contact>> {
        let identity = Identity::new(channel, address).map_err(ContactError::field)?;
        Ok(self.store().contact_by_identity(workspace, &identity).await?)
    }

    /// The owner of the identity, created (its time zone guessed from the number) when there is
    /// none, and revived (same id, data wiped) when it was deleted. A number that a contact
    /// already has on another phone channel (WhatsApp, then SMS) is the same person: the new
    /// identity is added to that contact. Concurrent callers with the same new identity get the
    /// same contact. For every inbound message's sender.
    pub async fn ensure_contact(&self, workspace: WorkspaceId, channel: Channel, address: &str) -> Result<Contact> {
        let identity = Identity::new(channel, address).map_err(ContactError::field)?;
        Ok(self.store().ensure_contact(workspace, &identity, Millis::now()).await?)
    }

    /// The contact as `GET /v1/contacts/{id}` shows it: a merged tombstone as it is (with
    /// `merged_into`); a deleted one is not found.
    pub async fn get_contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<Contact> {
        match self.store().get_contact(workspace, id).await? {
            Some(c) if c.deleted_at.is_none() => Ok(c),
            _ => Err(ContactError::NotFound(id.to_string()).into()),
        }
    }

    /// Create a contact from a checked body (see [`parse_change`]). Identities held by a
    /// deleted contact revive it (same id).
    pub async fn create_contact(&self, workspace: WorkspaceId, change: ContactChange) -> Result<Contact> {
        let write = ContactWrite { target: ContactTarget::Create, change };
        let (contact, _) = written(self.store().write_contact(workspace, write, Millis::now()).await?, None)?;
        Ok(contact)
    }

    /// Apply a merge patch to the live contact `id`.
    pub async fn update_contact(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
        change: ContactChange,
    ) -> Result<Contact> {
        let write = ContactWrite { target: ContactTarget::Id(id), change };
        let (contact, _) = written(self.store().write_contact(workspace, write, Millis::now()).await?, Some(id))?;
        Ok(contact)
    }

    /// Create the contact with `identity` or update its owner; `true` when it was created (or
    /// revived).
    pub async fn upsert_contact(
        &self,
        workspace: WorkspaceId,
        identity: Identity,
        mut change: ContactChange,
    ) -> Result<(Contact, bool)> {
        change.identities = Some(vec![identity]);
        let write = ContactWrite { target: ContactTarget::Upsert, change };
        written(self.store().write_contact(workspace, write, Millis::now()).await?, None)
    }

    /// Erase the contact's personal data; its identities stay reserved to it.
    pub async fn delete_contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<()> {
        if self.store().delete_contact(workspace, id, Millis::now()).await? {
            Ok(())
        } else {
            Err(ContactError::NotFound(id.to_string()).into())
        }
    }

    /// Absorb `absorbed` into `survivor`; returns the survivor.
    pub async fn merge_contacts(
        &self,
        workspace: WorkspaceId,
        survivor: ContactId,
        absorbed: ContactId,
    ) -> Result<Contact> {
        if survivor == absorbed {
            return Err(ContactError::MergeWithItself(survivor.to_string()).into());
        }
        match self.store().merge_contacts(workspace, survivor, absorbed, Millis::now()).await? {
            MergeOutcome::Merged(c) => Ok(*c),
            MergeOutcome::NotFound(id) => Err(ContactError::NotFound(id.to_string()).into()),
            MergeOutcome::Invalid(e) => Err(ContactError::field(e).into()),
        }
    }

    /// Live contacts matching `filter`, newest first.
    pub async fn list_contacts(
        &self,
        workspace: WorkspaceId,
        filter: &ContactFilter,
        limit: u32,
    ) -> Result<Vec<Contact>> {
        Ok(self.store().list_contacts(workspace, filter, limit).await?)
    }
}

/// The contact a write produced, and whether it was created; a refusal as the error to answer.
fn written(outcome: ContactWriteOutcome, id: Option<ContactId>) -> Result<(Contact, bool)> {
    match outcome {
        ContactWriteOutcome::Created(c) => Ok((*c, true)),
        ContactWriteOutcome::Updated(c) | ContactWriteOutcome::Unchanged(c) => Ok((*c, false)),
        ContactWriteOutcome::NotFound => {
            Err(ContactError::NotFound(id.map(|i| i.to_string()).unwrap_or_default()).into())
        }
        ContactWriteOutcome::IdentityConflict { identity, owner } => {
            Err(ContactError::IdentityConflict { identity, owner }.into())
        }
        ContactWriteOutcome::Invalid(e) => Err(ContactError::field(e).into()),
    }
}

/// Attributes of a CSV row, each a string.
fn string_attributes(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}
