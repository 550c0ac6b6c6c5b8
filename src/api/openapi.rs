//! The OpenAPI 3.1 document. Paths come from the handlers' `#[utoipa::path]` annotations,
//! which `utoipa_axum::routes!` also uses to register the routes, so the document and the
//! router cannot list different routes; schemas come from the serde types the handlers send.
//! This module adds what no single handler owns: the document's header, the security schemes,
//! the error responses shared by many routes, and the `x-request-id` header on every answer.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use super::error::Envelope;

/// Security scheme names, as handlers list them in `security(...)`.
const API_KEY: &str = "apiKey";
const API_KEY_BEARER: &str = "apiKeyBearer";
const ADMIN_TOKEN: &str = "adminToken";

/// The document's fixed parts; `router()` adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "spektr-server",
        description = "Spektr's public External Step API (start a process, read the step it \
                       waits on, submit external data), its event feed, and the admin API of \
                       this self-hosted server. Every error answer is the `ErrorEnvelope`."
    ),
    components(schemas(Envelope)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "actions", description = "The guide's public actions; workspace API key"),
        (name = "events", description = "Event feed and execution look-up; workspace API key"),
        (name = "admin", description = "Workspaces, API keys, processes, customers, activity; admin token"),
        (name = "webhooks", description = "Webhook endpoints and deliveries; admin token"),
        (name = "health", description = "Probes; no authentication"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The workspace's API key",
            ))),
        );
        components.add_security_scheme(
            API_KEY_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The workspace's API key as a bearer token (read when x-api-key is absent)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "ADMIN_TOKEN; without it configured the admin API answers 404",
                    ))
                    .build(),
            ),
        );
    }
}

/// Errors any route can answer, whatever it does: checks that run before routing (hostile
/// headers, a body's declared length), the request timeout, and a caught panic.
const ANY_ROUTE_ERRORS: [(u16, &str); 4] = [
    (
        400,
        "A malformed or ambiguous header, a NUL in the path or query, or another invalid \
         request",
    ),
    (
        413,
        "A body (declared or sent) larger than SPEKTR_MAX_BODY_BYTES, on any route, \
         whether or not it takes a body",
    ),
    (
        500,
        "An unexpected failure; the body reveals nothing internal",
    ),
    (
        503,
        "The database is unreachable or busy, or the request took longer than \
         SPEKTR_REQUEST_TIMEOUT_SECS; retry later",
    ),
];

/// Completes the document once every route is in: every operation lists the errors any route
/// can answer, and every answer, success or error, carries the request's id.
pub fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let header = HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
        ))
        .description(Some(
            "The request's id (the caller's x-request-id, or a new UUID); quote it when reporting a problem",
        ))
        .build();
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            for (status, description) in ANY_ROUTE_ERRORS {
                if !responses.contains_key(&status.to_string()) {
                    responses.extend(error_response(status, description));
                }
            }
            for response in responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .insert("x-request-id".to_owned(), RefOr::T(header.clone()));
                }
            }
        }
    }
    openapi
}

/// One error answer: the envelope, with a description of when it happens.
fn error_response(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let content = ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "ErrorEnvelope",
        ))))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

/// Declares error answers usable in `responses(...)` of `#[utoipa::path]`.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_response($status, $description)
            }
        }
    )*};
}

error_responses! {
    BadRequest = 400, "The request is invalid: a malformed body, header, path or query \
        value, a payload that fails validation (`details` lists the problems), or a state that \
        does not allow it";
    Unauthorized = 401, "Missing or invalid credentials";
    NotFound = 404, "No such resource in this workspace (or the admin API is disabled)";
    Conflict = 409, "A request with this idempotency-key is still running, or a concurrent \
        request changed the resource; retry";
    PayloadTooLarge = 413, "The body is larger than SPEKTR_MAX_BODY_BYTES";
    UnsupportedMediaType = 415, "The body is not sent as `application/json`";
    Unprocessable = 422, "This idempotency-key was already used with a different request";
    Internal = 500, "An unexpected failure; the body reveals nothing internal";
    Unavailable = 503, "The database is unreachable or busy, or the request took longer than \
        SPEKTR_REQUEST_TIMEOUT_SECS; retry later";
}
