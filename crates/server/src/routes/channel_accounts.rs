//! `/v1/channel-accounts`: the workspace's connections to providers. Reading needs
//! `messages:read`; creating, changing, deleting and checking need `admin`. Credentials are
//! taken on create and update, sealed at rest, and shown afterwards only as a masked hint.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Json, JsonBytes};
use crate::routes::List;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parley_channels::{CheckResult, ConfigError};
use parley_domain::{Channel, ChannelAccountId, Millis, Scope};
use parley_engine::accounts::{AccountError, ChannelAccountPatch, NewChannelAccount};
use parley_store::ChannelAccount;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_channel_accounts, create_channel_account))
        .routes(routes!(get_channel_account, update_channel_account, delete_channel_account))
        .routes(routes!(check_channel_account))
        .routes(routes!(simulate_inbound))
}

/// A channel account. Its credentials are never shown, only a masked hint of them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelAccountResource {
    /// `cha_…`
    pub id: ChannelAccountId,
    pub channel: Channel,
    /// The connector: `sandbox`, `whatsapp` (Cloud API), `rbm` (Google RCS Business Messaging),
    /// `smpp` (SMS over SMPP 3.4) or `twilio` (SMS over Twilio's Messages API or a copy of it).
    pub provider: String,
    pub name: String,
    /// The provider's public settings.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The credentials' shape with every value masked (`"…a1b2"`), or absent without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub credentials_hint: Option<serde_json::Value>,
    /// Where the provider must send its callbacks (statuses, inbound messages).
    pub callback_url: String,
    /// Messages per second handed to the provider, at most.
    pub rate_limit_per_second: u32,
    /// Sends awaiting the provider's answer at once, at most.
    pub max_in_flight: u32,
    /// Used for its channel when a send names no account.
    pub is_default: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

fn resource(state: &AppState, a: ChannelAccount) -> ChannelAccountResource {
    ChannelAccountResource {
        callback_url: state.engine.callback_url(&a.provider, a.id),
        id: a.id,
        channel: a.channel,
        provider: a.provider,
        name: a.name,
        config: if a.config.is_null() { serde_json::json!({}) } else { a.config },
        credentials_hint: a.credentials_hint,
        rate_limit_per_second: a.rate_limit_per_second,
        max_in_flight: a.max_in_flight,
        is_default: a.is_default,
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelAccountRequest {
    pub channel: Channel,
    /// `sandbox`, `whatsapp`, `rbm`, `smpp` or `twilio`; each serves its own channel (the
    /// sandbox serves every channel).
    pub provider: String,
    /// 1 to 200 characters.
    pub name: String,
    /// The provider's public settings (see the provider's documentation); `{}` for defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The provider's secrets (tokens, passwords, keys). Sealed at rest, never shown again.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: serde_json::Value,
    /// Default: the provider's (WhatsApp 80, SMPP 100, Twilio 25, RBM 100).
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// Default: the provider's (WhatsApp 80, SMPP 50, Twilio 50, RBM 100).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Make it its channel's default (the previous default stops being it). Default `false`.
    #[serde(default)]
    pub is_default: bool,
}

/// Absent fields stay as they are; `credentials` replaces the old ones whole.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelAccountRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<serde_json::Value>,
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub is_default: Option<bool>,
}

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Config(ConfigError::UnknownProvider(p)) => {
            let detail = ConfigError::UnknownProvider(p).to_string();
            ApiError::new("unknown_provider", detail.clone()).with_param("provider", detail)
        }
        AccountError::Config(ConfigError::InvalidField { provider, field, reason }) => {
            ApiError::new("invalid_channel_account_config", format!("invalid {provider} settings: '{field}': {reason}"))
                .with_param(field, reason)
        }
        AccountError::ProviderChannel { .. } => {
            let detail = e.to_string();
            ApiError::new("provider_channel_mismatch", detail.clone()).with_param("channel", detail)
        }
        AccountError::Invalid(detail) => {
            let (name, reason) = detail.split_once(": ").unwrap_or(("(account)", detail.as_str()));
            ApiError::new("validation_failed", detail.clone()).with_param(name, reason)
        }
        AccountError::NoSealingKey => ApiError::new("credentials_unavailable", e.to_string()),
    }
}

fn account_id(id: &str) -> ApiResult<ChannelAccountId> {
    ChannelAccountId::parse(id).map_err(|_| ApiError::not_found("channel account"))
}

/// Connect a provider. Its settings and credentials are checked locally (every field named on
/// error); `POST …/check` asks the provider.
#[utoipa::path(post, path = "/v1/channel-accounts", tag = "channel_accounts",
    request_body = CreateChannelAccountRequest,
    responses(
        (status = 201, description = "Created; give the provider its `callback_url`", body = ChannelAccountResource),
        (status = 403, description = "The key lacks admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown provider (`unknown_provider`), a provider that does not serve the \
            channel (`provider_channel_mismatch`), invalid settings or credentials (`invalid_channel_account_config`, \
            naming the field), limits out of range (`validation_failed`), or no sealing key on the server \
            (`credentials_unavailable`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_channel_account(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<CreateChannelAccountRequest>,
) -> ApiResult<impl IntoResponse> {
    auth.require(Scope::Admin)?;
    let new = NewChannelAccount {
        channel: req.channel,
        provider: req.provider,
        name: req.name,
        config: req.config,
        credentials: req.credentials,
        rate_limit_per_second: req.rate_limit_per_second,
        max_in_flight: req.max_in_flight,
        is_default: req.is_default,
    };
    let account = state.engine.create_channel_account(auth.workspace(), new).await?.map_err(account_error)?;
    let location = format!("/v1/channel-accounts/{}", account.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(resource(&state, account))))
}

/// The workspace's channel accounts, oldest first.
#[utoipa::path(get, path = "/v1/channel-accounts", tag = "channel_accounts",
    responses((status = 200, description = "Every channel account of the workspace", body = List<ChannelAccountResource>)),
    security(("api_key" = [])))]
async fn list_channel_accounts(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<axum::Json<List<ChannelAccountResource>>> {
    auth.require(Scope::MessagesRead)?;
    let accounts = state.engine.store().list_channel_accounts(auth.workspace()).await?;
    Ok(axum::Json(List { data: accounts.into_iter().map(|a| resource(&state, a)).collect(), next_cursor: None }))
}

/// One channel account.
#[utoipa::path(get, path = "/v1/channel-accounts/{id}", tag = "channel_accounts",
    params(("id" = String, Path, description = "The channel account id (`cha_…`)")),
    responses(
        (status = 200, description = "The channel account", body = ChannelAccountResource),
        (status = 404, description = "No such account in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn get_channel_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChannelAccountResource>> {
    auth.require(Scope::MessagesRead)?;
    let account = state.engine.store().get_channel_account(auth.workspace(), account_id(&id)?).await?;
    account.map(|a| axum::Json(resource(&state, a))).ok_or_else(|| ApiError::not_found("channel account"))
}

/// Change an account. Its connector is rebuilt with the new settings at once (an SMPP bind
/// reconnects); sends in flight finish on the old one.
#[utoipa::path(patch, path = "/v1/channel-accounts/{id}", tag = "channel_accounts",
    request_body = UpdateChannelAccountRequest,
    params(("id" = String, Path, description = "The channel account id (`cha_…`)")),
    responses(
        (status = 200, description = "The account as it is now", body = ChannelAccountResource),
        (status = 404, description = "No such account in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid settings or credentials", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn update_channel_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(req): Json<UpdateChannelAccountRequest>,
) -> ApiResult<axum::Json<ChannelAccountResource>> {
    auth.require(Scope::Admin)?;
    let patch = ChannelAccountPatch {
        name: req.name,
        config: req.config,
        credentials: req.credentials,
        rate_limit_per_second: req.rate_limit_per_second,
        max_in_flight: req.max_in_flight,
        is_default: req.is_default,
    };
    match state.engine.update_channel_account(auth.workspace(), account_id(&id)?, patch).await? {
        Some(result) => Ok(axum::Json(resource(&state, result.map_err(account_error)?))),
        None => Err(ApiError::not_found("channel account")),
    }
}

/// Delete an account. Its messages keep referring to it; messages still queued on it fail with
/// `channel_account_unavailable`; its callbacks are answered 404 from now on.
#[utoipa::path(delete, path = "/v1/channel-accounts/{id}", tag = "channel_accounts",
    params(("id" = String, Path, description = "The channel account id (`cha_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such account in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn delete_channel_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    if state.engine.delete_channel_account(auth.workspace(), account_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("channel account"))
    }
}

/// What a credentials check found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResource {
    /// `ok`: the provider accepted the credentials; `failed`: it refused them or could not be
    /// reached; `unsupported`: the protocol cannot check without sending a message.
    pub status: &'static str,
    /// The provider's error code, when `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub detail: String,
}

/// Check the account's credentials with its provider (WhatsApp: reads the phone number; RBM:
/// obtains a token; Twilio: reads the account; SMPP: whether the bind is up).
#[utoipa::path(post, path = "/v1/channel-accounts/{id}/check", tag = "channel_accounts",
    params(("id" = String, Path, description = "The channel account id (`cha_…`)")),
    responses(
        (status = 200, description = "What the provider said", body = CheckResource),
        (status = 404, description = "No such account in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn check_channel_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<CheckResource>> {
    auth.require(Scope::Admin)?;
    let result = state.engine.check_channel_account(auth.workspace(), account_id(&id)?).await?;
    let check = match result.ok_or_else(|| ApiError::not_found("channel account"))? {
        CheckResult::Ok { detail } => CheckResource { status: "ok", code: None, detail },
        CheckResult::Failed { code, detail } => CheckResource { status: "failed", code: Some(code), detail },
        CheckResult::Unsupported => CheckResource {
            status: "unsupported",
            code: None,
            detail: "this provider's protocol cannot check credentials without sending a message".into(),
        },
    };
    Ok(axum::Json(check))
}

/// A message to make a sandbox account receive.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "+4915123456789", "content": {"type": "text", "text": "STOP"}}))]
pub struct SimulateInboundRequest {
    /// The customer writing: a phone number (any common written form) or, for web chat, a
    /// visitor id.
    pub from: String,
    /// What they write (`text`, `location`, `media`, …).
    pub content: parley_domain::Content,
}

/// Make a sandbox account receive a message, as if a customer had written to it.
///
/// The message goes the way every received message goes (contact, conversation, keywords such as
/// STOP, `message.received`), so integrations can be tried end to end without a provider. Only
/// sandbox accounts take it.
#[utoipa::path(post, path = "/v1/channel-accounts/{id}/simulate-inbound", tag = "channel_accounts",
    params(("id" = String, Path, description = "A sandbox account's id (`cha_…`)")),
    request_body = SimulateInboundRequest,
    responses(
        (status = 201, description = "Received and stored", body = parley_domain::Message),
        (status = 404, description = "No such account in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "not_sandbox_account, invalid_phone_number or invalid content", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn simulate_inbound(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<(StatusCode, axum::Json<parley_domain::Message>)> {
    auth.require(Scope::MessagesWrite)?;
    let id = account_id(&id)?;
    let request: SimulateInboundRequest = crate::extract::parse_json(&body, "")?;
    if let Err(e) = request.content.validate() {
        let name = format!("content.{}", e.field);
        return Err(ApiError::new("validation_failed", e.reason.clone()).with_param(name, e.reason));
    }
    let account = state.engine.store().get_channel_account(auth.workspace(), id).await?;
    let account = account.ok_or_else(|| ApiError::not_found("channel account"))?;
    let from = parley_domain::Address::parse(account.channel, &request.from, None).map_err(|e| {
        ApiError::new("invalid_phone_number", e.to_string()).with_param("from", "not a valid address for the channel")
    })?;
    match state.engine.simulate_inbound(auth.workspace(), id, from.as_str(), request.content).await? {
        Ok(message) => Ok((StatusCode::CREATED, axum::Json(message))),
        Err(parley_engine::accounts::SimulateError::NotFound) => Err(ApiError::not_found("channel account")),
        Err(e @ parley_engine::accounts::SimulateError::NotSandbox) => {
            Err(ApiError::new("not_sandbox_account", e.to_string()))
        }
    }
}
