//! Contacts and their identities: the records and the [`ContactStore`] part of the store.
//!
//! A contact is one customer of a workspace whatever channel they use; an identity is a
//! (channel, address) pair that belongs to exactly one contact of the workspace.
//!
//! Every change of a contact is a [`ContactWrite`]: the backends find the contact it is about
//! (by id, by its first identity, or a new one) and the owners of the identities it names, then
//! the rules below ([`resolve_target`], [`apply_write`]) decide the new record inside the same
//! transaction, so concurrent changes never lose one another and a refused change writes nothing.
//!
//! Every change is announced in its transaction by a workspace event: `contact.created` (a new or
//! revived contact) and `contact.updated` with the contact as the API shows it afterwards
//! ([`Contact::resource`]), `contact.merged` with the two ids, `contact.deleted` with the id only.
//! A write that changes nothing announces nothing.
//!
//! An import row may bring consent records for its contact ([`ContactRow`]): they are appended
//! to the ledger in the transaction of the row's write, each only when it would change the
//! consent in force (see [`crate::consent::consents_to_append`]), so a re-run appends nothing.

use crate::Result;
use crate::consent::Consent;
use async_trait::async_trait;
use parley_domain::contact::{self as rules, ContactFieldError};
use parley_domain::policy::{ChannelScope, ConsentSource, ConsentStatus, PurposeScope};
use parley_domain::{Channel, ContactId, Identity, Millis, TimeZoneSource, WorkspaceId};
use serde_json::{Map, Value};

/// A contact as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Contact {
    pub id: ContactId,
    pub workspace_id: WorkspaceId,
    pub name: Option<String>,
    /// A BCP 47 tag (`pt-BR`).
    pub locale: Option<String>,
    /// An IANA zone (`Europe/Berlin`), given or guessed (see `time_zone_source`).
    pub time_zone: Option<String>,
    pub time_zone_source: Option<TimeZoneSource>,
    pub attributes: Map<String, Value>,
    pub tags: Vec<String>,
    pub preferred_channels: Vec<Channel>,
    /// In the order they were attached (then by channel and address).
    pub identities: Vec<Identity>,
    /// When each of `identities` was attached, in the same order.
    pub identity_created_at: Vec<Millis>,
    /// Set on a tombstone: the contact this one was merged into.
    pub merged_into: Option<ContactId>,
    /// Set on a deleted contact: its personal data is wiped, its identities stay reserved to it.
    pub deleted_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Contact {
    /// Its most recently attached identity on `channel` (the address a send there goes to).
    pub fn newest_identity(&self, channel: Channel) -> Option<&Identity> {
        self.identities
            .iter()
            .enumerate()
            .filter(|(_, identity)| identity.channel == channel)
            .max_by_key(|(n, _)| (self.identity_created_at.get(*n).copied().unwrap_or(Millis(0)), *n))
            .map(|(_, identity)| identity)
    }

    /// Neither deleted nor merged into another.
    pub fn is_live(&self) -> bool {
        self.merged_into.is_none() && self.deleted_at.is_none()
    }

    /// An empty contact.
    pub fn new(workspace_id: WorkspaceId, now: Millis) -> Contact {
        Contact {
            id: ContactId::new(),
            workspace_id,
            name: None,
            locale: None,
            time_zone: None,
            time_zone_source: None,
            attributes: Map::new(),
            tags: Vec::new(),
            preferred_channels: Vec::new(),
            identities: Vec::new(),
            identity_created_at: Vec::new(),
            merged_into: None,
            deleted_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The contact as the API shows it (`GET /v1/contacts/{id}`): what `contact.created` and
    /// `contact.updated` events carry as `data.contact`. A deleted contact's personal data is not
    /// in it (nor in any event after its deletion: `contact.deleted` carries its id only).
    pub fn resource(&self) -> Value {
        let identities: Vec<Value> = self
            .identities
            .iter()
            .zip(&self.identity_created_at)
            .map(|(i, at)| {
                serde_json::json!({
                    "channel": i.channel.as_str(),
                    "address": i.address,
                    "identity": i.to_string(),
                    "created_at": at,
                })
            })
            .collect();
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "locale": self.locale,
            "time_zone": self.time_zone,
            "time_zone_source": self.time_zone_source,
            "attributes": self.attributes,
            "tags": self.tags,
            "preferred_channels": self.preferred_channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "identities": identities,
            "merged_into": self.merged_into,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// Put the identities in the order the store reads them back: by the time they were
    /// attached, then by channel name and address.
    fn sort_identities(&mut self) {
        let mut pairs: Vec<(Identity, Millis)> =
            self.identities.drain(..).zip(self.identity_created_at.drain(..)).collect();
        pairs.sort_by(|(a, at), (b, bt)| {
            (at, a.channel.as_str(), &a.address).cmp(&(bt, b.channel.as_str(), &b.address))
        });
        (self.identities, self.identity_created_at) = pairs.into_iter().unzip();
    }

    /// Guess the time zone from the identities again, unless it was given.
    fn reguess_time_zone(&mut self) {
        if self.time_zone_source == Some(TimeZoneSource::Given) {
            return;
        }
        let guess = self.identities.iter().find_map(Identity::guessed_time_zone);
        self.time_zone = guess.map(str::to_string);
        self.time_zone_source = guess.map(|_| TimeZoneSource::Guessed);
    }

    /// The same contact with its personal data wiped (what a deletion keeps).
    fn wiped(&self) -> Contact {
        Contact {
            name: None,
            locale: None,
            time_zone: None,
            time_zone_source: None,
            attributes: Map::new(),
            tags: Vec::new(),
            preferred_channels: Vec::new(),
            ..self.clone()
        }
    }
}

/// A change to a contact's fields, already checked field by field (the domain's rules). `None`
/// leaves a field as it is; `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactChange {
    pub name: Option<Option<String>>,
    pub locale: Option<Option<String>>,
    /// A given zone; `Some(None)` clears it, and the zone is guessed from the identities again.
    pub time_zone: Option<Option<String>>,
    /// Remove every attribute first (a merge patch of `"attributes": null`).
    pub clear_attributes: bool,
    /// A JSON Merge Patch of the attributes (RFC 7396): `null` removes a key.
    pub attributes: Option<Map<String, Value>>,
    /// Replaces the tags.
    pub tags: Option<Vec<String>>,
    /// Replaces the preferred channels.
    pub preferred_channels: Option<Vec<Channel>>,
    /// See [`ContactTarget`] for what these do.
    pub identities: Option<Vec<Identity>>,
}

/// Which contact a [`ContactWrite`] is about.
#[derive(Clone, Debug, PartialEq)]
pub enum ContactTarget {
    /// A new contact with `identities`. An identity of a live contact is a conflict; identities
    /// of one deleted contact revive that contact (same id) with the new data.
    Create,
    /// The owner of the first of `identities` (live or deleted: a deleted one is revived), or a
    /// new contact with them; the other identities are added to it.
    Upsert,
    /// The live contact with this id; `identities`, when given, replace its identities.
    Id(ContactId),
    /// As `Upsert` with one identity, for a sender or recipient Parley meets without being told
    /// who it is: when nobody owns a phone identity yet but a live contact owns the same number on
    /// another phone channel (a customer who wrote on WhatsApp now sends an SMS), the identity is
    /// added to that contact.
    Ensure,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContactWrite {
    pub target: ContactTarget,
    pub change: ContactChange,
}

/// What a [`ContactWrite`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum ContactWriteOutcome {
    /// A new contact, or a deleted one revived.
    Created(Box<Contact>),
    Updated(Box<Contact>),
    /// The write would change nothing, and wrote nothing.
    Unchanged(Box<Contact>),
    /// `ContactTarget::Id` names no live contact of the workspace.
    NotFound,
    /// `identity` belongs to another contact, `owner`.
    IdentityConflict {
        identity: Identity,
        owner: ContactId,
    },
    /// The result breaks a rule (attributes grown past their cap by a patch).
    Invalid(ContactFieldError),
}

impl ContactWriteOutcome {
    /// The contact the write found or made (created, updated or unchanged); `None` when refused.
    pub fn contact(&self) -> Option<&Contact> {
        match self {
            ContactWriteOutcome::Created(c) | ContactWriteOutcome::Updated(c) | ContactWriteOutcome::Unchanged(c) => {
                Some(c)
            }
            _ => None,
        }
    }
}

/// A consent record for the contact a [`ContactWrite`] finds or makes (its id is not known
/// before the write): what [`Consent`] holds but for the ids, the contact and the time.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentChange {
    pub channel: ChannelScope,
    pub purpose: PurposeScope,
    pub status: ConsentStatus,
    pub source: ConsentSource,
    /// What proves it (an import's: the key that sent it, the file and the row).
    pub evidence: Value,
}

/// A contact write with the consent records it brings: a row of an import.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRow {
    pub write: ContactWrite,
    /// Appended in this order to the ledger of the row's contact, each only when the consent in
    /// force for its (channel, purpose) is missing or of the other status.
    pub consents: Vec<ConsentChange>,
}

/// What a [`ContactRow`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRowOutcome {
    pub contact: ContactWriteOutcome,
    /// The consent records appended (none when the write was refused, or when every one was in
    /// force already).
    pub consents: Vec<Consent>,
}

/// What a merge did.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeOutcome {
    /// The surviving contact, as it is afterwards.
    Merged(Box<Contact>),
    /// This contact is not a live contact of the workspace.
    NotFound(ContactId),
    /// The merged contact would break a rule (too many tags, attributes too large).
    Invalid(ContactFieldError),
}

/// Which contacts [`ContactStore::list_contacts`] returns: live ones matching every filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFilter {
    pub identity: Option<Identity>,
    pub tags: Vec<String>,
    /// `(key, value)`: the attribute's value, a string, number or boolean written as text, is
    /// `value`.
    pub attributes: Vec<(String, String)>,
    /// Only contacts with an id before this one (the cursor).
    pub before: Option<ContactId>,
}

/// The contact part of [`crate::Store`]; both backends implement it with the same behaviour.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// The workspace's contact `id` in whatever state (deleted and merged ones too).
    async fn get_contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>>;

    /// The owner of `identity` in the workspace, deleted or not: a deleted contact keeps its
    /// identities, so that its consents still apply to them (check [`Contact::deleted_at`]).
    async fn contact_by_identity(&self, workspace: WorkspaceId, identity: &Identity) -> Result<Option<Contact>>;

    /// The owner of `identity`, created (time zone guessed) when there is none, revived when it
    /// was deleted. A new phone identity whose number a live contact has on another phone
    /// channel is added to that contact (see [`ContactTarget::Ensure`]). Two concurrent callers
    /// with the same new identity get the same contact.
    async fn ensure_contact(&self, workspace: WorkspaceId, identity: &Identity, now: Millis) -> Result<Contact>;

    /// Apply one write in one transaction (see [`ContactWrite`]).
    async fn write_contact(
        &self,
        workspace: WorkspaceId,
        write: ContactWrite,
        now: Millis,
    ) -> Result<ContactWriteOutcome>;

    /// Apply writes in order, in one transaction, each with its own outcome (a refused one writes
    /// nothing and the others go on): [`Self::write_contact_rows`] without consent records.
    async fn write_contacts(
        &self,
        workspace: WorkspaceId,
        writes: Vec<ContactWrite>,
        now: Millis,
    ) -> Result<Vec<ContactWriteOutcome>> {
        let rows = writes.into_iter().map(|write| ContactRow { write, consents: Vec::new() }).collect();
        Ok(self.write_contact_rows(workspace, rows, now).await?.into_iter().map(|r| r.contact).collect())
    }

    /// Apply rows in order, in one transaction, each with its own outcome (a refused write writes
    /// nothing and the others go on). For imports: a chunk of rows at a time. A row's consent
    /// records go to the ledger of the contact its write found or made (also when the write changed
    /// nothing), with `recorded_at` `now`, each announced as `contact.opted_in` / `.opted_out`, and
    /// each only when the consent in force for its (channel, purpose) is missing or of the other
    /// status (the rows before it in the chunk included): the same rows again append nothing.
    async fn write_contact_rows(
        &self,
        workspace: WorkspaceId,
        rows: Vec<ContactRow>,
        now: Millis,
    ) -> Result<Vec<ContactRowOutcome>>;

    /// Erase the live contact's personal data and mark it deleted; its identities stay attached.
    /// `false` when there is no such live contact.
    async fn delete_contact(&self, workspace: WorkspaceId, id: ContactId, now: Millis) -> Result<bool>;

    /// Merge `absorbed` into `survivor` in one transaction: identities move over, attributes are
    /// merged (the survivor's win), tags unioned, preferred channels appended; the workspace's
    /// messages and consents of `absorbed` are re-pointed, and `absorbed` stays as a tombstone
    /// (`merged_into`, as do earlier tombstones that pointed at it). The two must differ.
    async fn merge_contacts(
        &self,
        workspace: WorkspaceId,
        survivor: ContactId,
        absorbed: ContactId,
        now: Millis,
    ) -> Result<MergeOutcome>;

    /// Live contacts of the workspace matching `filter`, newest first (by id), at most `limit`.
    async fn list_contacts(&self, workspace: WorkspaceId, filter: &ContactFilter, limit: u32) -> Result<Vec<Contact>>;
}

/// The identities a write names, the key first.
pub(crate) fn write_identities(write: &ContactWrite) -> &[Identity] {
    write.change.identities.as_deref().unwrap_or(&[])
}

/// The same number on the other phone channels, in a fixed order (sms, whatsapp, rcs): where
/// [`ContactTarget::Ensure`] looks for the person behind a new phone identity.
pub(crate) fn phone_siblings(identity: &Identity) -> Vec<Identity> {
    if identity.channel == Channel::Webchat {
        return Vec::new();
    }
    [Channel::Sms, Channel::Whatsapp, Channel::Rcs]
        .into_iter()
        .filter(|c| *c != identity.channel)
        .map(|c| Identity::from_stored(c, identity.address.clone()))
        .collect()
}

/// Which existing contact a write goes to (`None`: a new one), given the current owner of each
/// identity it names (`owners[i]` for `write_identities(write)[i]`, with whether that owner is
/// deleted). A conflict is returned as the outcome to answer.
pub(crate) fn resolve_target(
    write: &ContactWrite,
    owners: &[Option<(ContactId, bool)>],
) -> std::result::Result<Option<ContactId>, ContactWriteOutcome> {
    let identities = write_identities(write);
    let conflict =
        |i: usize, owner: ContactId| ContactWriteOutcome::IdentityConflict { identity: identities[i].clone(), owner };
    match &write.target {
        ContactTarget::Id(id) => {
            for (i, owner) in owners.iter().enumerate() {
                if let Some((owner, _)) = owner
                    && owner != id
                {
                    return Err(conflict(i, *owner));
                }
            }
            Ok(Some(*id))
        }
        ContactTarget::Upsert | ContactTarget::Ensure => {
            let target = owners.first().copied().flatten().map(|(id, _)| id);
            for (i, owner) in owners.iter().enumerate().skip(1) {
                if let Some((owner, _)) = owner
                    && Some(*owner) != target
                {
                    return Err(conflict(i, *owner));
                }
            }
            Ok(target)
        }
        ContactTarget::Create => {
            let mut revive: Option<ContactId> = None;
            for (i, owner) in owners.iter().enumerate() {
                match owner {
                    None => {}
                    Some((owner, false)) => return Err(conflict(i, *owner)),
                    Some((owner, true)) => match revive {
                        None => revive = Some(*owner),
                        Some(r) if r == *owner => {}
                        Some(_) => return Err(conflict(i, *owner)),
                    },
                }
            }
            Ok(revive)
        }
    }
}

/// The record after `write`, given the target as stored (`None`: a new contact). `Ok(None)`
/// when nothing changes. The caller has checked that `current` is the contact the write is for.
pub(crate) fn apply_write(
    workspace: WorkspaceId,
    write: &ContactWrite,
    current: Option<&Contact>,
    now: Millis,
) -> std::result::Result<(Contact, bool), ContactWriteOutcome> {
    let (mut next, created) = match current {
        None => (Contact::new(workspace, now), true),
        Some(c) if c.merged_into.is_some() => return Err(ContactWriteOutcome::NotFound),
        Some(c) if c.deleted_at.is_some() => {
            if matches!(write.target, ContactTarget::Id(_)) {
                return Err(ContactWriteOutcome::NotFound);
            }
            let mut revived = c.wiped();
            revived.deleted_at = None;
            (revived, true)
        }
        Some(c) => (c.clone(), false),
    };
    let change = &write.change;
    if let Some(name) = &change.name {
        next.name = name.clone();
    }
    if let Some(locale) = &change.locale {
        next.locale = locale.clone();
    }
    if let Some(zone) = &change.time_zone {
        next.time_zone = zone.clone();
        next.time_zone_source = zone.as_ref().map(|_| TimeZoneSource::Given);
    }
    if change.clear_attributes {
        next.attributes.clear();
    }
    if let Some(patch) = &change.attributes {
        for (key, value) in patch {
            if value.is_null() {
                next.attributes.remove(key);
            } else {
                merge_patch(next.attributes.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        rules::validate_attributes(&Value::Object(next.attributes.clone())).map_err(ContactWriteOutcome::Invalid)?;
    }
    if let Some(tags) = &change.tags {
        next.tags = tags.clone();
    }
    if let Some(channels) = &change.preferred_channels {
        next.preferred_channels = channels.clone();
    }
    if let Some(identities) = &change.identities {
        let replace = matches!(write.target, ContactTarget::Id(_));
        let mut kept: Vec<(Identity, Millis)> = next
            .identities
            .iter()
            .cloned()
            .zip(next.identity_created_at.iter().copied())
            .filter(|(i, _)| !replace || identities.contains(i))
            .collect();
        for identity in identities {
            if !kept.iter().any(|(i, _)| i == identity) {
                kept.push((identity.clone(), now));
            }
        }
        (next.identities, next.identity_created_at) = kept.into_iter().unzip();
        next.sort_identities();
    }
    next.reguess_time_zone();
    let unchanged = current.is_some_and(|c| c == &next);
    if !unchanged {
        next.updated_at = now;
    }
    Ok((next, created))
}

/// RFC 7396 on one value.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(map) = target {
                for (key, value) in fields {
                    if value.is_null() {
                        map.remove(key);
                    } else {
                        merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The survivor after absorbing `absorbed` (see [`ContactStore::merge_contacts`]).
pub(crate) fn merged(
    survivor: &Contact,
    absorbed: &Contact,
    now: Millis,
) -> std::result::Result<Contact, ContactFieldError> {
    let mut next = survivor.clone();
    next.name = next.name.or_else(|| absorbed.name.clone());
    next.locale = next.locale.or_else(|| absorbed.locale.clone());
    if next.time_zone_source != Some(TimeZoneSource::Given) && absorbed.time_zone_source == Some(TimeZoneSource::Given)
    {
        next.time_zone = absorbed.time_zone.clone();
        next.time_zone_source = Some(TimeZoneSource::Given);
    }
    for (key, value) in &absorbed.attributes {
        next.attributes.entry(key.clone()).or_insert_with(|| value.clone());
    }
    rules::validate_attributes(&Value::Object(next.attributes.clone()))?;
    let tags: Vec<&String> = survivor.tags.iter().chain(&absorbed.tags).collect();
    next.tags = rules::normalize_tags(&tags)?;
    for channel in &absorbed.preferred_channels {
        if !next.preferred_channels.contains(channel) {
            next.preferred_channels.push(*channel);
        }
    }
    next.identities.extend(absorbed.identities.iter().cloned());
    next.identity_created_at.extend(absorbed.identity_created_at.iter().copied());
    next.sort_identities();
    next.reguess_time_zone();
    next.updated_at = now;
    Ok(next)
}

/// The tombstone `absorbed` becomes.
pub(crate) fn tombstone(absorbed: &Contact, survivor: ContactId, now: Millis) -> Contact {
    Contact {
        merged_into: Some(survivor),
        identities: Vec::new(),
        identity_created_at: Vec::new(),
        updated_at: now,
        ..absorbed.clone()
    }
}

/// The deleted contact `contact` becomes.
pub(crate) fn erased(contact: &Contact, now: Millis) -> Contact {
    Contact { deleted_at: Some(now), updated_at: now, ..contact.wiped() }
}

/// The workspace event of a write that changed a contact (`contact.created` for a new or revived
/// contact, `contact.updated` otherwise) with the contact as the API shows it afterwards, recorded
/// in the transaction of the write. `None` for an outcome that wrote nothing.
pub(crate) fn write_event(outcome: &ContactWriteOutcome, at: Millis) -> Option<crate::WorkspaceEvent> {
    let (verb, contact) = match outcome {
        ContactWriteOutcome::Created(c) => ("created", c),
        ContactWriteOutcome::Updated(c) => ("updated", c),
        _ => return None,
    };
    Some(contact_event(contact.workspace_id, verb, serde_json::json!({ "contact": contact.resource() }), at))
}

/// `contact.merged`: the survivor's id and the absorbed contact's (now a tombstone).
pub(crate) fn merged_event(
    workspace: WorkspaceId,
    survivor: ContactId,
    absorbed: ContactId,
    at: Millis,
) -> crate::WorkspaceEvent {
    contact_event(workspace, "merged", serde_json::json!({ "survivor_id": survivor, "absorbed_id": absorbed }), at)
}

/// `contact.deleted`: the contact's id and nothing else (its personal data is erased).
pub(crate) fn deleted_event(workspace: WorkspaceId, id: ContactId, at: Millis) -> crate::WorkspaceEvent {
    contact_event(workspace, "deleted", serde_json::json!({ "contact_id": id }), at)
}

fn contact_event(workspace: WorkspaceId, verb: &str, data: Value, at: Millis) -> crate::WorkspaceEvent {
    crate::WorkspaceEvent {
        id: parley_domain::EventId::new(),
        workspace_id: workspace,
        event_type: format!("contact.{verb}"),
        data,
        created_at: at,
    }
}

/// JSON of the stored columns.
pub(crate) fn channels_json(channels: &[Channel]) -> String {
    Value::Array(channels.iter().map(|c| Value::String(c.as_str().into())).collect()).to_string()
}

pub(crate) fn parse_channels(json: &str) -> Result<Vec<Channel>> {
    let names: Vec<String> = serde_json::from_str(json).map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
    names
        .iter()
        .map(|n| Channel::parse(n).ok_or_else(|| crate::StoreError::Corrupt(format!("unknown channel '{n}'"))))
        .collect()
}

pub(crate) fn parse_object(json: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(json).map_err(|e| crate::StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_tags(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| crate::StoreError::Corrupt(e.to_string()))
}

/// The SQLite JSON path for one attribute key (`$."plan"`); keys with `"` or `\` cannot be
/// searched (the API refuses them).
pub(crate) fn attribute_path(key: &str) -> String {
    format!("$.\"{key}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn patches_merge_attributes_and_regess_zones() {
        let ws = WorkspaceId::new();
        let write = ContactWrite {
            target: ContactTarget::Create,
            change: ContactChange {
                attributes: Some(serde_json::from_str(r#"{"plan":"gold","a":{"x":1,"y":2}}"#).unwrap()),
                identities: Some(vec![ident("sms:+4915112345678")]),
                ..Default::default()
            },
        };
        let (c, created) = apply_write(ws, &write, None, Millis(1)).unwrap();
        assert!(created);
        assert_eq!(c.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.time_zone_source, Some(TimeZoneSource::Guessed));
        let patch = ContactWrite {
            target: ContactTarget::Id(c.id),
            change: ContactChange {
                attributes: Some(serde_json::from_str(r#"{"plan":null,"a":{"y":null,"z":3}}"#).unwrap()),
                ..Default::default()
            },
        };
        let (d, created) = apply_write(ws, &patch, Some(&c), Millis(2)).unwrap();
        assert!(!created);
        assert_eq!(Value::Object(d.attributes.clone()), serde_json::json!({"a": {"x": 1, "z": 3}}));
        assert_eq!(d.updated_at, Millis(2));
        // The same patch again changes nothing.
        let (e, _) = apply_write(ws, &patch, Some(&d), Millis(3)).unwrap();
        assert_eq!(e, d);
    }

    #[test]
    fn conflicts_name_the_owner() {
        let owner = ContactId::new();
        let write = ContactWrite {
            target: ContactTarget::Create,
            change: ContactChange { identities: Some(vec![ident("webchat:v1")]), ..Default::default() },
        };
        assert_eq!(
            resolve_target(&write, &[Some((owner, false))]),
            Err(ContactWriteOutcome::IdentityConflict { identity: ident("webchat:v1"), owner })
        );
        assert_eq!(resolve_target(&write, &[Some((owner, true))]), Ok(Some(owner)));
    }
}
