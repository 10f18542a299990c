//! `/v1/channel-accounts`: the workspace's connections to providers (read-only for now; every
//! new workspace has a sandbox account per channel).

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Auth;
use crate::routes::List;
use axum::extract::{Path, State};
use parley_domain::{Channel, ChannelAccountId, Millis, Scope};
use parley_store::ChannelAccount;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_channel_accounts)).routes(routes!(get_channel_account))
}

/// A channel account. Its provider settings are not shown: they may hold credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelAccountResource {
    pub id: ChannelAccountId,
    pub channel: Channel,
    /// The connector: `sandbox`, …
    pub provider: String,
    pub name: String,
    pub rate_limit_per_second: u32,
    pub max_in_flight: u32,
    /// Used for its channel when a send names no account.
    pub is_default: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl From<ChannelAccount> for ChannelAccountResource {
    fn from(a: ChannelAccount) -> Self {
        ChannelAccountResource {
            id: a.id,
            channel: a.channel,
            provider: a.provider,
            name: a.name,
            rate_limit_per_second: a.rate_limit_per_second,
            max_in_flight: a.max_in_flight,
            is_default: a.is_default,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
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
    Ok(axum::Json(List { data: accounts.into_iter().map(Into::into).collect(), next_cursor: None }))
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
    let id = ChannelAccountId::parse(&id).map_err(|_| ApiError::not_found("channel account"))?;
    let account = state.engine.store().get_channel_account(auth.workspace(), id).await?;
    account.map(|a| axum::Json(a.into())).ok_or_else(|| ApiError::not_found("channel account"))
}
