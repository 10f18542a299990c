//! `/v1/contacts`: the workspace's customers and their identities.
//!
//! Bodies are read as JSON values and checked by the engine field by field
//! (`parley_engine::contacts::parse_change`), so that `POST`, `PATCH`, `PUT …/by-identity` and
//! NDJSON imports follow one set of rules; the request structs here document them.
//!
//! Deleting a contact erases its personal data (name, locale, time zone, attributes, tags,
//! preferred channels) but keeps its identities attached to it, reserved: its consent and opt-out
//! history, kept by contact, keeps applying to those addresses, and a later create or upsert with
//! one of them revives the same contact id with the new data.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, JsonBytes, parse_json};
use crate::routes::{List, into_page, page_limit, read_cursor};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parley_domain::{Channel, ContactId, Identity, Millis, Scope, TimeZoneSource};
use parley_engine::contacts::{
    BodyKind, ContactError, ImportFormat, ImportOrigin, ImportReport, parse_change, parse_filter,
};
use parley_store::Contact;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Import bodies are limited to this many bytes (other routes take 1 MiB).
pub const MAX_IMPORT_BYTES: usize = 50 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    let import = OpenApiRouter::new().routes(routes!(import_contacts)).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES));
    OpenApiRouter::new()
        .routes(routes!(create_contact, list_contacts))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(upsert_by_identity))
        .routes(routes!(merge_contacts))
        .merge(import)
}

/// The problem a refused contact request is answered with.
pub fn contact_error(e: &ContactError) -> ApiError {
    match e {
        ContactError::NotFound(_) => ApiError::not_found("contact"),
        ContactError::Invalid { code, field, detail } => ApiError::new(code, detail.clone()).with_param(field, detail),
        ContactError::IdentityConflict { owner, .. } => {
            ApiError::new("identity_conflict", e.to_string()).with_param("identities", format!("owned by {owner}"))
        }
        ContactError::MergeWithItself(_) => {
            ApiError::new("invalid_merge", e.to_string()).with_param("contact_id", "the same contact as the path's")
        }
        ContactError::Import(detail) => ApiError::new("invalid_import", detail.clone()),
    }
}

/// One identity of a contact.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityResource {
    #[schema(value_type = String, example = "sms")]
    pub channel: &'static str,
    /// E.164 with its `+` for sms, whatsapp and rcs; the visitor id for webchat.
    #[schema(example = "+4915112345678")]
    pub address: String,
    /// `channel:address`, as filters and upserts take it.
    #[schema(example = "sms:+4915112345678")]
    pub identity: String,
    /// When it was attached.
    pub created_at: Millis,
}

/// A contact as the API shows it. Unset fields are `null`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactResource {
    /// `ctc_…`
    pub id: ContactId,
    pub name: Option<String>,
    /// BCP 47 (`pt-BR`).
    pub locale: Option<String>,
    /// IANA (`Europe/Berlin`).
    pub time_zone: Option<String>,
    /// `given` by you, or `guessed` from a phone number's country (only countries with one zone).
    pub time_zone_source: Option<TimeZoneSource>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub tags: Vec<String>,
    #[schema(value_type = Vec<String>, example = json!(["whatsapp", "sms"]))]
    pub preferred_channels: Vec<&'static str>,
    pub identities: Vec<IdentityResource>,
    /// Set on a contact that was merged into another: follow it. Such a contact has no
    /// identities left.
    pub merged_into: Option<ContactId>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl From<Contact> for ContactResource {
    fn from(c: Contact) -> Self {
        ContactResource {
            id: c.id,
            name: c.name,
            locale: c.locale,
            time_zone: c.time_zone,
            time_zone_source: c.time_zone_source,
            attributes: c.attributes,
            tags: c.tags,
            preferred_channels: c.preferred_channels.iter().map(|ch| ch.as_str()).collect(),
            identities: c
                .identities
                .iter()
                .zip(&c.identity_created_at)
                .map(|(i, at)| IdentityResource {
                    channel: i.channel.as_str(),
                    address: i.address.clone(),
                    identity: i.to_string(),
                    created_at: *at,
                })
                .collect(),
            merged_into: c.merged_into,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A contact to create. Every field is optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateContactRequest {
    /// 1 to 256 characters.
    name: Option<String>,
    /// BCP 47: `en`, `pt-BR`, `zh-Hant-TW`.
    locale: Option<String>,
    /// An IANA zone. Without one, it is guessed from the first phone identity whose country has a
    /// single zone.
    time_zone: Option<String>,
    /// A JSON object of at most 16 KiB.
    #[schema(value_type = Object)]
    attributes: Option<Value>,
    /// Up to 50 tags of 1 to 64 of `A-Za-z0-9_:.-`; repeats are dropped.
    tags: Option<Vec<String>>,
    /// Channels in order of preference.
    preferred_channels: Option<Vec<String>>,
    /// Strings `"sms:+4915112345678"`, `"whatsapp:4915112345678"`, `"rcs:+…"`,
    /// `"webchat:<visitor id>"`, or objects `{"channel": "sms", "address": "+4915…"}`. Each
    /// belongs to one contact of the workspace.
    #[schema(value_type = Vec<Object>)]
    identities: Option<Vec<Value>>,
}

/// A JSON Merge Patch of a contact: absent fields stay, `null` clears; `attributes` are patched
/// key by key (a `null` value removes a key); `tags`, `preferred_channels` and `identities`
/// are replaced whole.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UpdateContactRequest {
    name: Option<String>,
    locale: Option<String>,
    /// `null` clears a given zone; it is then guessed again.
    time_zone: Option<String>,
    #[schema(value_type = Object)]
    attributes: Option<Value>,
    tags: Option<Vec<String>>,
    preferred_channels: Option<Vec<String>>,
    #[schema(value_type = Vec<Object>)]
    identities: Option<Vec<Value>>,
}

/// The fields of an upsert: those of a patch but `identities` (the identity is in the path).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UpsertContactRequest {
    name: Option<String>,
    locale: Option<String>,
    time_zone: Option<String>,
    #[schema(value_type = Object)]
    attributes: Option<Value>,
    tags: Option<Vec<String>>,
    preferred_channels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The contact to absorb (`ctc_…`).
    pub contact_id: String,
}

/// One refused row of an import.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportRowErrorResource {
    /// Data rows count from 1 (the CSV header is row 0; NDJSON rows are line numbers), plus
    /// `first_row`.
    pub row: u64,
    /// `malformed_row`, `invalid_encoding`, `malformed_json`, `missing_identity`,
    /// `invalid_identity`, `unknown_time_zone`, `invalid_locale`, `invalid_tag`,
    /// `invalid_attributes`, `invalid_contact`, `invalid_consent`, `identity_conflict`.
    pub code: &'static str,
    pub detail: String,
}

/// What an import did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportReportResource {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    /// Rows that matched their contact exactly (nothing written): a re-run of a file.
    pub unchanged: u64,
    pub failed: u64,
    /// Consent records written (source `import`); an entry already in force writes none, so a
    /// re-run writes none.
    pub consents: u64,
    /// The first 1,000 refused rows.
    pub errors: Vec<ImportRowErrorResource>,
}

impl From<ImportReport> for ImportReportResource {
    fn from(r: ImportReport) -> Self {
        ImportReportResource {
            rows: r.rows,
            created: r.created,
            updated: r.updated,
            unchanged: r.unchanged,
            failed: r.failed,
            consents: r.consents,
            errors: r
                .errors
                .into_iter()
                .map(|e| ImportRowErrorResource { row: e.row, code: e.code, detail: e.detail })
                .collect(),
        }
    }
}

fn parse_id(raw: &str) -> ApiResult<ContactId> {
    // An id that cannot be one of ours names nothing here: 404, as for any unknown id.
    ContactId::parse(raw).map_err(|_| ApiError::not_found("contact"))
}

fn body_value(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    parse_json(bytes, "")
}

fn created(contact: Contact) -> axum::response::Response {
    let location = format!("/v1/contacts/{}", contact.id);
    (StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(ContactResource::from(contact))).into_response()
}

/// Create a contact. An identity that belongs to another contact is a conflict; identities
/// reserved by a deleted contact revive it (same id) with this data.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = CreateContactRequest,
    responses(
        (status = 201, description = "Created", body = ContactResource),
        (status = 409, description = "An identity belongs to another contact (`identity_conflict`)", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A field is refused (`invalid_identity`, `unknown_time_zone`, `invalid_locale`, \
            `invalid_tag`, `invalid_attributes`, `invalid_contact`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_contact(
    State(state): State<AppState>,
    auth: Auth,
    JsonBytes(bytes): JsonBytes,
) -> ApiResult<axum::response::Response> {
    auth.require(Scope::MessagesWrite)?;
    let change = parse_change(&body_value(&bytes)?, BodyKind::Create).map_err(|e| contact_error(&e))?;
    Ok(created(state.engine.create_contact(auth.workspace(), change).await?))
}

/// Search the workspace's contacts, newest first. Filters combine with AND: `identity`
/// (`sms:+4915…`), `tag` (repeatable), `attribute.<key>` (the value as text: strings, numbers
/// and booleans match).
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("identity" = Option<String>, Query, description = "`channel:address`"),
        ("tag" = Option<String>, Query, description = "A tag the contact has; repeat for several"),
        ("attribute.<key>" = Option<String>, Query, description = "An attribute's value, as text"),
    ),
    responses(
        (status = 200, description = "A page of contacts", body = List<ContactResource>),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A malformed filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_contacts(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<axum::Json<List<ContactResource>>> {
    auth.require(Scope::MessagesRead)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut limit = None;
    let mut cursor = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => {
                limit = Some(value.parse::<u32>().map_err(|_| {
                    ApiError::new("invalid_query", format!("limit: '{value}' is not a number"))
                        .with_param("limit", "1 to 1000")
                })?)
            }
            "cursor" => cursor = Some(value.as_str()),
            "identity" | "tag" => {}
            k if k.starts_with("attribute.") => {}
            other => {
                return Err(ApiError::new("invalid_query", format!("unknown query parameter '{other}'"))
                    .with_param(other, "use limit, cursor, identity, tag or attribute.<key>"));
            }
        }
    }
    let limit = page_limit(limit)?;
    let mut filter =
        parse_filter(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| contact_error(&e))?;
    filter.before = read_cursor(cursor, |raw| ContactId::parse(raw).ok())?;
    let rows = state.engine.list_contacts(auth.workspace(), &filter, limit + 1).await?;
    Ok(axum::Json(into_page(rows, limit, |c: &Contact| c.id.to_string())))
}

/// One contact. A merged contact answers with `merged_into` set and no identities; a deleted
/// one is not found.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "The contact id (`ctc_…`)")),
    responses(
        (status = 200, description = "The contact", body = ContactResource),
        (status = 404, description = "No such contact in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ContactResource>> {
    auth.require(Scope::MessagesRead)?;
    Ok(axum::Json(state.engine.get_contact(auth.workspace(), parse_id(&id)?).await?.into()))
}

/// Change a contact (JSON Merge Patch, RFC 7396).
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", request_body = UpdateContactRequest,
    params(("id" = String, Path, description = "The contact id (`ctc_…`)")),
    responses(
        (status = 200, description = "The contact as it is now", body = ContactResource),
        (status = 404, description = "No such contact in this workspace (or it was merged or deleted)", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "An identity belongs to another contact (`identity_conflict`)", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A field is refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn update_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBytes(bytes): JsonBytes,
) -> ApiResult<axum::Json<ContactResource>> {
    auth.require(Scope::MessagesWrite)?;
    let id = parse_id(&id)?;
    let change = parse_change(&body_value(&bytes)?, BodyKind::Patch).map_err(|e| contact_error(&e))?;
    Ok(axum::Json(state.engine.update_contact(auth.workspace(), id, change).await?.into()))
}

/// Erase a contact's personal data. Its identities stay attached to it (reserved), so that its
/// consents and opt-outs keep applying to those addresses; a later create or upsert with one of
/// them revives the same contact id with the new data. `GET` answers 404 meanwhile.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "The contact id (`ctc_…`)")),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "No such contact in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn delete_contact(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    auth.require(Scope::MessagesWrite)?;
    state.engine.delete_contact(auth.workspace(), parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create the contact with this identity (201), or update its owner (200, merge-patch
/// semantics). The address may be URL-encoded (`%2B` for `+`); WhatsApp ids may omit the `+`.
#[utoipa::path(put, path = "/v1/contacts/by-identity/{channel}/{address}", tag = "contacts",
    request_body = UpsertContactRequest,
    params(
        ("channel" = String, Path, description = "`sms`, `whatsapp`, `rcs` or `webchat`"),
        ("address" = String, Path, description = "The number (E.164) or visitor id"),
    ),
    responses(
        (status = 200, description = "The owner, updated", body = ContactResource),
        (status = 201, description = "Created (or a deleted contact revived)", body = ContactResource),
        (status = 422, description = "A malformed identity or a refused field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn upsert_by_identity(
    State(state): State<AppState>,
    auth: Auth,
    Path((channel, address)): Path<(String, String)>,
    request: Request,
) -> ApiResult<axum::response::Response> {
    auth.require(Scope::MessagesWrite)?;
    let channel = Channel::parse(&channel).ok_or_else(|| {
        ApiError::new("invalid_identity", format!("'{channel}' is not a channel: use sms, whatsapp, rcs or webchat"))
            .with_param("channel", "sms, whatsapp, rcs or webchat")
    })?;
    let identity = Identity::new(channel, &address)
        .map_err(|e| ApiError::new("invalid_identity", e.to_string()).with_param("address", e.to_string()))?;
    // The body is optional: without one, the contact is only ensured.
    let has_body = request.headers().contains_key(header::CONTENT_TYPE)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|n| n.parse::<u64>().ok()) != Some(0))
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let body = if has_body {
        let JsonBytes(bytes) = JsonBytes::from_request(request, &state).await?;
        body_value(&bytes)?
    } else {
        Value::Object(Map::new())
    };
    let change = parse_change(&body, BodyKind::Upsert).map_err(|e| contact_error(&e))?;
    let (contact, was_created) = state.engine.upsert_contact(auth.workspace(), identity, change).await?;
    if was_created { Ok(created(contact)) } else { Ok(axum::Json(ContactResource::from(contact)).into_response()) }
}

/// Absorb another contact into this one, in one transaction: its identities move over,
/// attributes merge (this contact's values win), tags are unioned, preferred channels appended;
/// its messages, consents and conversations become this contact's. The other stays as a
/// tombstone with `merged_into`.
#[utoipa::path(post, path = "/v1/contacts/{id}/merge", tag = "contacts", request_body = MergeRequest,
    params(("id" = String, Path, description = "The surviving contact (`ctc_…`)")),
    responses(
        (status = 200, description = "The surviving contact", body = ContactResource),
        (status = 404, description = "Either contact is not a live contact of this workspace", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A contact merged with itself (`invalid_merge`), or the result has too many tags \
            or too large attributes", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn merge_contacts(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBytes(bytes): JsonBytes,
) -> ApiResult<axum::Json<ContactResource>> {
    auth.require(Scope::MessagesWrite)?;
    let survivor = parse_id(&id)?;
    let request: MergeRequest = parse_json(&bytes, "")?;
    let absorbed = parse_id(&request.contact_id)?;
    Ok(axum::Json(state.engine.merge_contacts(auth.workspace(), survivor, absorbed).await?.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Added to every row number (for a file sent in parts).
    #[serde(default)]
    pub first_row: u64,
    /// The file's name (up to 255 characters), kept in the evidence of the consent records the
    /// import writes.
    pub file: Option<String>,
}

/// Longest `file` name kept in consent evidence.
const MAX_FILE_NAME_CHARS: usize = 255;

/// Import contacts from CSV (`text/csv`) or NDJSON (`application/x-ndjson`), up to 50 MiB. Each
/// row upserts the contact of its first identity; a bad row is reported and skipped, the others
/// are imported; a re-run of the same file changes nothing. CSV columns: `sms`, `phone` (= sms),
/// `whatsapp`, `rcs`, `webchat`, `name`, `locale`, `time_zone`, `tags` and `preferred_channels`
/// (`;`-separated), `consent` (`;`-separated `<channel or *>:<purpose or *>:<opted_in or
/// opted_out>`) and `attributes.<key>`; an unknown column refuses the file before anything is
/// stored. NDJSON: one create body per line, and `consent` (entries as strings or `{channel,
/// purpose, status}` objects). Each consent entry appends a record (source `import`) to the row's
/// contact's ledger unless it is the consent in force already.
#[utoipa::path(post, path = "/v1/contacts/import", tag = "contacts", params(ImportQuery),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, description = "What was imported, and the refused rows", body = ImportReportResource),
        (status = 413, description = "Larger than 50 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor NDJSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The file cannot be read (unknown column, UTF-16, no header): `invalid_import`", body = Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn import_contacts(
    State(state): State<AppState>,
    auth: Auth,
    crate::extract::Query(query): crate::extract::Query<ImportQuery>,
    request: Request,
) -> ApiResult<axum::Json<ImportReportResource>> {
    auth.require(Scope::MessagesWrite)?;
    if let Some(file) = &query.file
        && (file.is_empty() || file.chars().count() > MAX_FILE_NAME_CHARS || file.chars().any(char::is_control))
    {
        let reason = format!("1 to {MAX_FILE_NAME_CHARS} characters, no control characters");
        return Err(ApiError::new("validation_failed", format!("file: {reason}")).with_param("file", reason));
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match essence.as_str() {
        "text/csv" | "application/csv" => ImportFormat::Csv,
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => ImportFormat::Ndjson,
        _ => {
            return Err(ApiError::new(
                "unsupported_media_type",
                format!(
                    "expected Content-Type: text/csv or application/x-ndjson, got '{}'",
                    content_type.chars().take(64).collect::<String>()
                ),
            ));
        }
    };
    let body = Bytes::from_request(request, &state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new("payload_too_large", format!("the file is larger than {MAX_IMPORT_BYTES} bytes"))
        } else {
            ApiError::new("invalid_import", format!("the body could not be read: {rejection}"))
        }
    })?;
    // The evidence of the consent records names the key, as that of API calls does, and the file.
    let caller = match super::consents::api_evidence(&auth, None) {
        Value::Object(caller) => caller,
        _ => Map::new(),
    };
    let origin = ImportOrigin { caller, file: query.file };
    let report = state.engine.import_contacts(auth.workspace(), format, &body, query.first_row, &origin).await?;
    Ok(axum::Json(report.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_domain::WorkspaceId;

    /// Contact events carry the contact as this resource shows it (`Contact::resource`, built
    /// in the store, which knows nothing of the API's types): the two must not drift apart.
    #[test]
    fn events_show_the_contact_as_the_api_does() {
        let mut c = Contact::new(WorkspaceId::new(), Millis(1_700_000_000_123));
        c.name = Some("Ada".into());
        c.locale = Some("pt-BR".into());
        c.time_zone = Some("Europe/Berlin".into());
        c.time_zone_source = Some(TimeZoneSource::Guessed);
        c.attributes = serde_json::from_str(r#"{"plan": "gold", "seats": 3, "a": {"b": null}}"#).unwrap();
        c.tags = vec!["vip".into(), "beta".into()];
        c.preferred_channels = vec![Channel::Whatsapp, Channel::Sms];
        c.identities = vec![Identity::parse("sms:+4915112345678").unwrap(), Identity::parse("webchat:v1").unwrap()];
        c.identity_created_at = vec![Millis(1_700_000_000_123), Millis(1_700_000_000_456)];
        c.updated_at = Millis(1_700_000_000_789);
        assert_eq!(serde_json::to_value(ContactResource::from(c.clone())).unwrap(), c.resource());
        let tombstone =
            Contact { merged_into: Some(ContactId::new()), identities: vec![], identity_created_at: vec![], ..c };
        assert_eq!(serde_json::to_value(ContactResource::from(tombstone.clone())).unwrap(), tombstone.resource());
    }
}
