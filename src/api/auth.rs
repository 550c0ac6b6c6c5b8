//! Authentication: workspace API keys for the public API, a bearer token for the admin API.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// The workspace whose API key authenticated the request.
pub struct Workspace(pub String);

impl FromRequestParts<AppState> for Workspace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Spektr reads `x-api-key` and also accepts the key as a bearer token.
        let mut headers = parts.headers.get_all("x-api-key").iter();
        let key = match (headers.next(), headers.next()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::unauthorized(
                    "Send one 'x-api-key' header, not several",
                ));
            }
            (Some(value), None) => {
                let key = value.to_str().map_err(|_| invalid_key())?;
                // Both headers may carry the key, but not two different keys. Another scheme
                // (a proxy's Basic credentials) is not ours to judge and is ignored.
                if bearer(parts)
                    .ok()
                    .flatten()
                    .is_some_and(|other| other != key.trim())
                {
                    return Err(ApiError::unauthorized(
                        "'x-api-key' and 'Authorization' name different keys: send one",
                    ));
                }
                Some(key)
            }
            _ => bearer(parts)?,
        };
        let Some(key) = key.map(str::trim).filter(|key| !key.is_empty()) else {
            return Err(ApiError::unauthorized(
                "Missing API key: send it in the 'x-api-key' header",
            ));
        };
        if key.len() > 512 {
            return Err(invalid_key());
        }
        match state.engine.authenticate(key).await? {
            Some(workspace) => Ok(Workspace(workspace)),
            None => Err(invalid_key()),
        }
    }
}

/// An admin request, authenticated with `ADMIN_TOKEN`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.admin_token.as_deref() else {
            // With no token configured the admin API does not exist.
            return Err(ApiError::not_found(
                "The admin API is disabled (ADMIN_TOKEN is not set)",
            ));
        };
        let given = bearer(parts)?.unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized(
                "Missing or invalid admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'",
            ))
        }
    }
}

pub(super) fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::unauthorized(
            "Send one 'Authorization' header, not several",
        ));
    }
    let value = value.to_str().map_err(|_| invalid_key())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::unauthorized(
            "The Authorization header must be 'Bearer <token>'",
        )),
    }
}

fn invalid_key() -> ApiError {
    ApiError::unauthorized("Invalid API key")
}
