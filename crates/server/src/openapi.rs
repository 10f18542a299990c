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
        (name = "analytics", description = "Delivery, read and reply figures of messages"),
        (name = "api_keys", description = "API keys of the workspace (admin)"),
        (name = "channel_accounts", description = "Connections to providers, with their credentials sealed at rest"),
        (name = "contacts", description = "The workspace's customers: identities on each channel, attributes, tags, merge and import"),
        (name = "conversations", description = "One thread per contact across every channel: timeline, replies, assignment and hand-over"),
        (name = "consents", description = "Consent ledger, opt-outs, keywords, quiet hours and frequency caps (the messaging policy)"),
        (name = "provider_callbacks", description = "Where providers send statuses and inbound messages (signed, no API key)"),
        (name = "webhooks", description = "Endpoints that receive the workspace's events, signed per Standard Webhooks (admin)"),
        (name = "ops", description = "Health, readiness and metrics"),
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

/// What every secured operation can answer whatever its own documentation says (401, 429), and the
/// list of every error code on the `Problem` schema, so that the document names them all.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, schema::Schema};
        let unauthorized = ResponseBuilder::new()
            .description("Missing, invalid or revoked API key (code `unauthorized`)")
            .content(
                crate::error::PROBLEM_JSON,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        let rate_limited = ResponseBuilder::new()
            .description(
                "The key's request limit is spent (code `rate_limited`); wait for `Retry-After` seconds. Every \
                 authenticated answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.",
            )
            .content(
                crate::error::PROBLEM_JSON,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
            {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses.responses.entry("401".into()).or_insert_with(|| RefOr::T(unauthorized.clone()));
                    op.responses.responses.entry("429".into()).or_insert_with(|| RefOr::T(rate_limited.clone()));
                }
            }
        }
        let codes: Vec<serde_json::Value> =
            crate::error::CODES.iter().map(|(code, ..)| serde_json::json!(code)).collect();
        if let Some(RefOr::T(Schema::Object(problem))) =
            openapi.components.as_mut().and_then(|c| c.schemas.get_mut("Problem"))
            && let Some(RefOr::T(Schema::Object(code))) = problem.properties.get_mut("code")
        {
            code.enum_values = Some(codes);
        }
    }
}

pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::messages::router())
        .merge(routes::analytics::router())
        .merge(routes::message_events::router())
        .merge(routes::stream::router())
        .merge(routes::api_keys::router())
        .merge(routes::webhooks::router())
        .merge(routes::channel_accounts::router())
        .merge(routes::contacts::router())
        .merge(routes::conversations::router())
        .merge(routes::consents::router())
        .merge(routes::hooks::router())
        .merge(routes::ops::documented_router())
}

/// Complete a document built from the routes: what applies to every operation is added once the
/// routes are merged.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    CommonResponses.modify(doc);
    SmsSegments.modify(doc);
}

/// `Message` is written by hand so that outbound SMS carry `segments` and `encoding`, which are
/// worked out, not stored; its derived schema lacks them, so they are added here.
struct SmsSegments;

impl Modify for SmsSegments {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let Some(components) = openapi.components.as_mut() else { return };
        let Some(RefOr::T(Schema::Object(message))) = components.schemas.get_mut("Message") else { return };
        let segments = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .description(Some(
                "Outbound SMS only: how many SMS the text takes (160/153 GSM-7 characters, or 70/67 UCS-2 units, \
                 per part; GSM-7 extension characters count twice).",
            ))
            .build();
        let encoding = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["gsm7", "ucs2"]))
            .description(Some(
                "Outbound SMS only: `gsm7` when every character is in the GSM 03.38 alphabet, `ucs2` otherwise.",
            ))
            .build();
        message.properties.insert("segments".into(), RefOr::T(Schema::Object(segments)));
        message.properties.insert("encoding".into(), RefOr::T(Schema::Object(encoding)));
    }
}

/// The document as served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    finish(&mut doc);
    doc
}
