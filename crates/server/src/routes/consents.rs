//! `/v1/contacts/{id}/consents` and `/v1/opt-outs`: the consent ledger; and
//! `/v1/messaging-policy`: the workspace's quiet hours, frequency caps, keywords and replies.
//!
//! The ledger only grows: every opt-in or opt-out, whatever its source (API, keyword, import), is
//! a new record; `DELETE /v1/opt-outs/…` appends an opt-in.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Invalid, Json, JsonBytes, Query, from_value, parse_json};
use crate::routes::{List, into_page, page_limit, read_cursor};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_domain::policy::{
    self, ChannelScope, Consent, ConsentSource, ConsentStatus, MessagingPolicy, PurposeScope, consent_in_force,
};
use parley_domain::{Address, Channel, ConsentId, ContactId, Millis, Purpose, Scope};
use parley_engine::policy::PolicyError;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_consents, create_consent))
        .routes(routes!(list_opt_outs, create_opt_out))
        .routes(routes!(delete_opt_out))
        .routes(routes!(get_policy, update_policy))
}

/// The problem a send or a consent request refused by policy is answered with.
pub fn policy_error(e: &PolicyError) -> ApiError {
    match e {
        PolicyError::Refused { refusal, detail, .. } => ApiError::new(refusal.code(), detail.clone()),
        PolicyError::ContactNotFound(_) => {
            ApiError::new("contact_not_found", e.to_string()).with_param("contact_id", "no such contact")
        }
        PolicyError::NoIdentityForChannel { .. } => ApiError::new("no_identity_for_channel", e.to_string())
            .with_param("channel", "the contact has no identity on this channel"),
        PolicyError::NoRoute { passed_over, .. } => ApiError::new("no_route", e.to_string()).with_params(
            passed_over
                .iter()
                .map(|(channel, reason)| crate::error::InvalidParam {
                    name: format!("channel.{channel}"),
                    reason: reason.as_str().unwrap_or_default().to_string(),
                })
                .collect(),
        ),
        PolicyError::RouteStepUnreachable { step, reason, .. } => {
            ApiError::new("route_step_unreachable", e.to_string()).with_param(format!("route[{step}]"), reason.clone())
        }
        PolicyError::InvalidSettings(errors) => ApiError::new("validation_failed", e.to_string()).with_params(
            errors
                .iter()
                .map(|f| crate::error::InvalidParam { name: f.field.clone(), reason: f.reason.clone() })
                .collect(),
        ),
    }
}

/// Evidence given with an API call is kept beside the key that made it; at most this big.
const MAX_EVIDENCE_BYTES: usize = 4096;

pub(crate) fn api_evidence(auth: &Auth, given: Option<serde_json::Value>) -> serde_json::Value {
    let mut evidence = serde_json::json!({"api_key_id": auth.key.id});
    if let Some(given) = given {
        evidence["given"] = given;
    }
    evidence
}

/// The consent in force for one (channel, purpose) of a contact.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentState {
    /// A channel, or `*`.
    pub channel: ChannelScope,
    /// A purpose, or `*`.
    pub purpose: PurposeScope,
    pub status: ConsentStatus,
    pub source: ConsentSource,
    /// When the record in force was made.
    pub since: Millis,
    /// The record in force (`cns_…`).
    pub consent_id: ConsentId,
}

/// A page of a contact's ledger, with the consent in force for each (channel, purpose) it names.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentList {
    /// Records, newest first.
    pub data: Vec<Consent>,
    pub next_cursor: Option<String>,
    /// For every (channel, purpose) the ledger names: the newest record that covers it, exactly
    /// or by wildcard.
    pub current: Vec<ConsentState>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 1,000 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn contact_id(raw: &str) -> ApiResult<ContactId> {
    ContactId::parse(raw).map_err(|_| ApiError::not_found("contact"))
}

/// The state per (channel, purpose) named in `ledger` (newest first).
fn current_states(ledger: &[Consent]) -> Vec<ConsentState> {
    let mut keys: Vec<(ChannelScope, PurposeScope)> = Vec::new();
    for r in ledger {
        if !keys.iter().any(|(c, p)| *c == r.channel && *p == r.purpose) {
            keys.push((r.channel, r.purpose.clone()));
        }
    }
    keys.into_iter()
        .filter_map(|(channel, purpose)| {
            let covering = ledger
                .iter()
                .filter(|r| {
                    (r.channel == channel || r.channel == ChannelScope::All)
                        && (r.purpose == purpose || r.purpose == PurposeScope::All)
                })
                .max_by_key(|r| r.id)?;
            Some(ConsentState {
                channel,
                purpose,
                status: covering.status,
                source: covering.source,
                since: covering.recorded_at,
                consent_id: covering.id,
            })
        })
        .collect()
}

/// A contact's consent ledger, newest first, with the consent in force.
#[utoipa::path(get, path = "/v1/contacts/{id}/consents", tag = "consents",
    params(("id" = String, Path, description = "The contact id (`ctc_…`)"), PageQuery),
    responses(
        (status = 200, description = "A page of the ledger, and `current`", body = ConsentList),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contact in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_consents(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<ConsentList>> {
    auth.require(Scope::MessagesRead)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| ConsentId::parse(raw).ok())?;
    let id = contact_id(&id)?;
    let contact = state.engine.contact(auth.workspace(), id).await?.ok_or_else(|| ApiError::not_found("contact"))?;
    let store = state.engine.store();
    let ledger = store.list_consents(auth.workspace(), contact.id, None, None).await?;
    let rows = store.list_consents(auth.workspace(), contact.id, before, Some(limit + 1)).await?;
    let page: List<Consent> = into_page(rows, limit, |r| r.id.to_string());
    Ok(axum::Json(ConsentList { data: page.data, next_cursor: page.next_cursor, current: current_states(&ledger) }))
}

/// An opt-in or opt-out given through the API.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsentRequest {
    /// `sms`, `whatsapp`, `rcs`, `webchat`, or `*` for every channel.
    pub channel: String,
    /// A purpose (`marketing`, `transactional`, your own slug) or `*` for every purpose.
    pub purpose: String,
    pub status: ConsentStatus,
    /// What proves it (a JSON object of at most 4 KB: a form id, a checkbox text, an IP).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
}

/// Record an opt-in or opt-out of a contact (source `api`).
#[utoipa::path(post, path = "/v1/contacts/{id}/consents", tag = "consents",
    params(("id" = String, Path, description = "The contact id (`ctc_…`)")),
    request_body = CreateConsentRequest,
    responses(
        (status = 201, description = "Recorded", body = Consent),
        (status = 404, description = "No such contact in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad channel, purpose, status or evidence", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_consent(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(req): Json<CreateConsentRequest>,
) -> ApiResult<(StatusCode, axum::Json<Consent>)> {
    auth.require(Scope::MessagesWrite)?;
    let id = contact_id(&id)?;
    let mut invalid = Invalid::default();
    let channel = ChannelScope::parse(&req.channel);
    if channel.is_none() {
        invalid.add("channel", "one of sms, whatsapp, rcs, webchat, or * for every channel");
    }
    let purpose = PurposeScope::parse(&req.purpose);
    if purpose.is_none() {
        invalid.add("purpose", "a purpose (1 to 32 of a-z, 0-9 and _, starting with a letter) or * for every purpose");
    }
    check_evidence(req.evidence.as_ref(), &mut invalid);
    invalid.into_result()?;
    let (Some(channel), Some(purpose)) = (channel, purpose) else {
        return Err(ApiError::internal("consent fields missing after validation"));
    };
    let contact = state.engine.contact(auth.workspace(), id).await?.ok_or_else(|| ApiError::not_found("contact"))?;
    let record = state
        .engine
        .record_consent(
            auth.workspace(),
            contact.id,
            channel,
            purpose,
            req.status,
            ConsentSource::Api,
            api_evidence(&auth, req.evidence),
            None,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

fn check_evidence(evidence: Option<&serde_json::Value>, invalid: &mut Invalid) {
    match evidence {
        None => {}
        Some(v) if !v.is_object() => invalid.add("evidence", "must be a JSON object"),
        Some(v) if v.to_string().len() > MAX_EVIDENCE_BYTES => {
            invalid.add("evidence", format!("at most {MAX_EVIDENCE_BYTES} bytes as JSON"))
        }
        Some(_) => {}
    }
}

/// A contact opted out, as the workspace-wide list shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OptOut {
    pub contact_id: ContactId,
    /// A channel, or `*` (every channel).
    pub channel: ChannelScope,
    /// A purpose, or `*` (every purpose).
    pub purpose: PurposeScope,
    /// The address the opt-out came from, or the contact's address on the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub since: Millis,
    pub source: ConsentSource,
    /// The ledger record (`cns_…`).
    pub consent_id: ConsentId,
}

impl From<Consent> for OptOut {
    fn from(r: Consent) -> Self {
        OptOut {
            contact_id: r.contact_id,
            channel: r.channel,
            purpose: r.purpose,
            address: r.address,
            since: r.recorded_at,
            source: r.source,
            consent_id: r.id,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OptOutQuery {
    /// Only opt-outs of this channel (and those of every channel).
    pub channel: Option<Channel>,
    /// 1 to 1,000 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The opt-outs in force, newest first.
#[utoipa::path(get, path = "/v1/opt-outs", tag = "consents", params(OptOutQuery),
    responses(
        (status = 200, description = "A page of opt-outs in force", body = List<OptOut>),
        (status = 400, description = "Bad query parameter or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn list_opt_outs(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<OptOutQuery>,
) -> ApiResult<axum::Json<List<OptOut>>> {
    auth.require(Scope::MessagesRead)?;
    let limit = page_limit(q.limit)?;
    let before = read_cursor(q.cursor.as_deref(), |raw| ConsentId::parse(raw).ok())?;
    let rows = state.engine.store().list_opt_outs(auth.workspace(), q.channel, before, limit + 1).await?;
    let mut page: List<OptOut> = into_page(rows, limit, |r| r.id.to_string());
    // Records made without an address (through the contact's ledger) show the contact's own.
    for entry in page.data.iter_mut().filter(|e| e.address.is_none()) {
        let channel = match entry.channel {
            ChannelScope::One(c) => Some(c),
            ChannelScope::All => q.channel,
        };
        if let Some(contact) = state.engine.contact(auth.workspace(), entry.contact_id).await? {
            entry.address =
                contact.identities.iter().find(|i| channel.is_none_or(|c| i.channel == c)).map(|i| i.address.clone());
        }
    }
    Ok(axum::Json(page))
}

/// Opt an address out (the contact owning it is created if there is none).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOptOutRequest {
    pub channel: Channel,
    /// A phone number (normalised to E.164) or a web chat visitor id.
    pub address: String,
    /// Only this purpose; absent: every purpose.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "marketing")]
    pub purpose: Option<String>,
}

fn parse_address(channel: Channel, raw: &str, field: &str) -> ApiResult<Address> {
    Address::parse(channel, raw, None).map_err(|e| {
        let code = if channel == Channel::Webchat { "validation_failed" } else { "invalid_phone_number" };
        ApiError::new(code, e.to_string()).with_param(field, e.to_string())
    })
}

/// Opt an address out of every purpose (or one) on a channel (source `opt_out_api`).
#[utoipa::path(post, path = "/v1/opt-outs", tag = "consents", request_body = CreateOptOutRequest,
    responses(
        (status = 201, description = "Recorded", body = OptOut),
        (status = 422, description = "Bad address or purpose", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_opt_out(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<CreateOptOutRequest>,
) -> ApiResult<(StatusCode, axum::Json<OptOut>)> {
    auth.require(Scope::MessagesWrite)?;
    let address = parse_address(req.channel, &req.address, "address")?;
    let purpose = match req.purpose.as_deref().map(Purpose::parse) {
        None => PurposeScope::All,
        Some(Ok(p)) => PurposeScope::One(p),
        Some(Err(e)) => {
            return Err(ApiError::new("validation_failed", e.to_string()).with_param("purpose", e.to_string()));
        }
    };
    let contact = state.engine.ensure_contact(auth.workspace(), req.channel, address.as_str()).await?;
    let record = state
        .engine
        .record_consent(
            auth.workspace(),
            contact.id,
            ChannelScope::One(req.channel),
            purpose,
            ConsentStatus::OptedOut,
            ConsentSource::OptOutApi,
            api_evidence(&auth, None),
            Some(address.as_str().to_string()),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(OptOut::from(record))))
}

/// Lift the opt-out of an address on a channel: appends an opt-in for every purpose (source
/// `api`); the opt-out stays in the ledger.
#[utoipa::path(delete, path = "/v1/opt-outs/{channel}/{address}", tag = "consents",
    params(
        ("channel" = String, Path, description = "`sms`, `whatsapp`, `rcs` or `webchat`"),
        ("address" = String, Path, description = "The address, URL-encoded (`%2B4915112345678`)"),
    ),
    responses(
        (status = 204, description = "An opt-in was recorded"),
        (status = 404, description = "No contact has this address, or it is not opted out", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn delete_opt_out(
    State(state): State<AppState>,
    auth: Auth,
    Path((channel, address)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::MessagesWrite)?;
    let channel = Channel::parse(&channel).ok_or_else(|| ApiError::not_found("opt-out"))?;
    let address = Address::parse(channel, &address, None).map_err(|_| ApiError::not_found("opt-out"))?;
    let contact = state
        .engine
        .contact_by_identity(auth.workspace(), channel, address.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("opt-out"))?;
    let ledger = state.engine.store().list_consents(auth.workspace(), contact.id, None, None).await?;
    // Opted out when some purpose the ledger names (or the two usual ones) is opted out there.
    let named = ledger.iter().filter_map(|r| match &r.purpose {
        PurposeScope::One(p) => Some(p.clone()),
        PurposeScope::All => None,
    });
    let opted_out = named.chain([Purpose::transactional(), Purpose::marketing()]).any(|purpose| {
        consent_in_force(&ledger, channel, &purpose).is_some_and(|r| r.status == ConsentStatus::OptedOut)
    });
    if !opted_out {
        return Err(ApiError::not_found("opt-out"));
    }
    state
        .engine
        .record_consent(
            auth.workspace(),
            contact.id,
            ChannelScope::One(channel),
            PurposeScope::All,
            ConsentStatus::OptedIn,
            ConsentSource::Api,
            api_evidence(&auth, Some(serde_json::json!({"action": "opt_out_deleted"}))),
            Some(address.as_str().to_string()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workspace's messaging policy.
#[utoipa::path(get, path = "/v1/messaging-policy", tag = "consents",
    responses(
        (status = 200, description = "The policy (defaults where never set)", body = MessagingPolicy),
        (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks messages:read", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_policy(State(state): State<AppState>, auth: Auth) -> ApiResult<axum::Json<MessagingPolicy>> {
    auth.require(Scope::MessagesRead)?;
    Ok(axum::Json(MessagingPolicy::clone(&*state.engine.messaging_policy(auth.workspace()).await?)))
}

/// Change the workspace's messaging policy (JSON Merge Patch; admin scope).
#[utoipa::path(patch, path = "/v1/messaging-policy", tag = "consents", request_body = Object,
    responses(
        (status = 200, description = "The policy after the change", body = MessagingPolicy),
        (status = 403, description = "The key lacks admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is not acceptable; `invalid_params` names it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn update_policy(
    State(state): State<AppState>,
    auth: Auth,
    JsonBytes(body): JsonBytes,
) -> ApiResult<axum::Json<MessagingPolicy>> {
    auth.require(Scope::Admin)?;
    let patch: serde_json::Value = parse_json(&body, "")?;
    if !patch.is_object() {
        return Err(ApiError::new("validation_failed", "the body must be a JSON object (a JSON Merge Patch)")
            .with_param("body", "a JSON object"));
    }
    let current = state.engine.messaging_policy(auth.workspace()).await?;
    let mut value = serde_json::to_value(&*current).map_err(ApiError::internal)?;
    policy::merge_patch(&mut value, &patch);
    let changed: MessagingPolicy = from_value(value, "")?;
    Ok(axum::Json(state.engine.set_messaging_policy(auth.workspace(), changed).await?))
}
