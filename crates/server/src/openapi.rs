//! The OpenAPI 3.1 document: every `/v1` route with its schemas and error answers. Routes are
//! registered through [`api_router`] so that a route cannot exist without its documentation.

use crate::AppState;
use crate::routes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley API",
        description = "One API for customer conversations over SMS, RCS, WhatsApp and web chat. \
            Errors are RFC 9457 problem documents with a stable `code`; see /problems/{code}.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::InvalidParam)),
    tags(
        (name = "messages", description = "Send messages and follow their state"),
        (name = "api_keys", description = "API keys of the workspace (admin)"),
        (name = "channel_accounts", description = "Connections to providers"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pk_…").build()),
        );
    }
}

pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::messages::router())
        .merge(routes::message_events::router())
        .merge(routes::api_keys::router())
        .merge(routes::channel_accounts::router())
}

/// The document as served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}
