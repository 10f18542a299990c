//! `/hooks/{provider}/{channel_account_id}`: where providers send statuses and inbound
//! messages. No API key: the account's connector checks the provider's signature over the raw
//! body before anything is parsed. What the callback reports is committed before the answer,
//! so a provider that got a 2xx never needs to send it again, and one that did not retries.

use crate::AppState;
use crate::error::{ApiError, Problem};
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_channels::{IngressError, IngressRequest};
use parley_domain::Millis;
use parley_engine::accounts::CallbackError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_callback, receive_callback))
}

/// A provider's verification handshake (WhatsApp's `hub.challenge`). The answer is the
/// provider's, usually the challenge as plain text.
#[utoipa::path(get, path = "/hooks/{provider}/{channel_account_id}", tag = "provider_callbacks",
    params(
        ("provider" = String, Path, description = "The account's provider: `whatsapp`, `rbm`, `twilio`"),
        ("channel_account_id" = String, Path, description = "The channel account (`cha_…`)"),
    ),
    responses(
        (status = 200, description = "Verified; the body is what the provider expects back", content_type = "text/plain"),
        (status = 403, description = "Wrong verify token (`callback_forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account for this provider, or it takes no such callback", body = Problem, content_type = "application/problem+json"),
    ))]
async fn verify_callback(
    State(state): State<AppState>,
    Path((provider, account)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    handle(&state, Method::GET, &provider, &account, &uri, &headers, &Bytes::new()).await
}

/// A provider callback: delivery statuses, inbound messages, a registration handshake. Signed
/// the provider's way (WhatsApp `X-Hub-Signature-256`, RBM `X-Goog-Signature`, Twilio
/// `X-Twilio-Signature`); a callback that repeats one already stored is answered 200 and changes
/// nothing.
#[utoipa::path(post, path = "/hooks/{provider}/{channel_account_id}", tag = "provider_callbacks",
    params(
        ("provider" = String, Path, description = "The account's provider: `whatsapp`, `rbm`, `twilio`"),
        ("channel_account_id" = String, Path, description = "The channel account (`cha_…`)"),
    ),
    responses(
        (status = 200, description = "Stored (or a duplicate); the body is what the provider expects back"),
        (status = 400, description = "Signed, but not a payload of this provider (`callback_malformed`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong signature (`callback_signature_invalid`); nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account for this provider", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
    ))]
async fn receive_callback(
    State(state): State<AppState>,
    Path((provider, account)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::extract::MAX_BODY_BYTES).await else {
        return ApiError::new("payload_too_large", "provider callbacks are limited to 1 MiB").into_response();
    };
    handle(&state, Method::POST, &provider, &account, &uri, &parts.headers, &body).await
}

async fn handle(
    state: &AppState,
    method: Method,
    provider: &str,
    account: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let url = state.engine.public_url_of(path_and_query);
    let request = IngressRequest {
        method: method.as_str(),
        url: &url,
        query: uri.query().unwrap_or(""),
        headers: &headers,
        body,
        received_at: Millis::now(),
    };
    match state.engine.provider_callback(provider, account, &request).await {
        Ok(Ok(reply)) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            let mut response = (status, reply.body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
            response
        }
        Ok(Err(CallbackError::UnknownAccount { .. })) => {
            ApiError::new("not_found", format!("no {provider} channel account with this id")).into_response()
        }
        Ok(Err(CallbackError::Refused(e))) => {
            tracing::info!(provider, account, refused = e.code(), "provider callback refused");
            match e {
                IngressError::BadSignature(detail) => ApiError::new("callback_signature_invalid", detail),
                IngressError::Forbidden(detail) => ApiError::new("callback_forbidden", detail),
                IngressError::Malformed(detail) => ApiError::new("callback_malformed", detail),
                IngressError::NotSupported => {
                    ApiError::new("not_found", format!("{provider} accounts take no {method} callbacks"))
                }
            }
            .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
