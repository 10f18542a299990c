//! `/v1/api-keys`: keys of the caller's workspace (admin scope). A key's secret is returned once,
//! when it is created.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Auth, Invalid, Json};
use crate::routes::List;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parley_domain::{ApiKeyId, Millis, Scope, WorkspaceId};
use parley_store::ApiKey;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_api_key, list_api_keys)).routes(routes!(revoke_api_key))
}

/// An API key as the API shows it: never its secret, except once at creation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyResource {
    pub id: ApiKeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// The start of the key, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Millis>,
    /// The whole key. Only in the answer to its creation: store it now, it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<ApiKey> for ApiKeyResource {
    fn from(k: ApiKey) -> Self {
        ApiKeyResource {
            id: k.id,
            workspace_id: k.workspace_id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.as_slice().to_vec(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            secret: None,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What the key is for (1 to 100 characters).
    pub name: String,
    /// `messages:write`, `messages:read`, `admin`.
    pub scopes: Vec<Scope>,
}

/// Create an API key. The answer holds its secret, shown this once.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api_keys", request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = ApiKeyResource),
        (status = 403, description = "The key lacks admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or scopes", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn create_api_key(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<CreateApiKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    auth.require(Scope::Admin)?;
    let mut invalid = Invalid::default();
    if req.name.trim().is_empty() || req.name.chars().count() > 100 || req.name.chars().any(char::is_control) {
        invalid.add("name", "must be 1 to 100 characters without control characters");
    }
    if req.scopes.is_empty() {
        invalid.add("scopes", "at least one scope");
    }
    invalid.into_result()?;
    let created = state.engine.create_api_key(auth.workspace(), req.name.trim(), req.scopes).await?;
    let location = format!("/v1/api-keys/{}", created.key.id);
    let mut resource = ApiKeyResource::from(created.key);
    resource.secret = Some(created.secret);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(resource)))
}

/// The workspace's API keys, newest first, revoked ones included.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api_keys",
    responses((status = 200, description = "Every key of the workspace", body = List<ApiKeyResource>)),
    security(("api_key" = [])))]
async fn list_api_keys(State(state): State<AppState>, auth: Auth) -> ApiResult<axum::Json<List<ApiKeyResource>>> {
    auth.require(Scope::Admin)?;
    let keys = state.engine.store().list_api_keys(auth.workspace()).await?;
    Ok(axum::Json(List { data: keys.into_iter().map(ApiKeyResource::from).collect(), next_cursor: None }))
}

/// Revoke an API key; it stops working at once in this process (within seconds elsewhere).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api_keys",
    params(("id" = String, Path, description = "The key id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
async fn revoke_api_key(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    let id = ApiKeyId::parse(&id).map_err(|_| ApiError::not_found("API key"))?;
    match state.engine.revoke_api_key(auth.workspace(), id).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("API key")),
    }
}
