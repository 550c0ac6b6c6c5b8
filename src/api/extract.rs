//! Extractors whose rejections are `ApiError`, so malformed requests get the same envelope as
//! everything else.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON request body, parsed into a `Value` after its content type and size are checked.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if request
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .count()
            > 1
        {
            return Err(ApiError::bad_request(
                "Send one 'Content-Type' header, not several",
            ));
        }
        if !is_json(request.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected a request body with 'Content-Type: application/json'",
            ));
        }
        if !is_utf8(request.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Only the UTF-8 charset is supported; send 'charset=utf-8' or no charset",
            ));
        }
        if let Some(encoding) = unsupported_encoding(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding '{encoding}' is not supported; send the body uncompressed"
                ),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
                } else {
                    ApiError::bad_request(format!("Could not read the request body: {rejection}"))
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether the content type's `charset` parameter, if any, names UTF-8: JSON is read as UTF-8
/// only, so a body declared in another charset would be misread.
fn is_utf8(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    value
        .split(';')
        .skip(1)
        .all(|parameter| match parameter.split_once('=') {
            Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => charset
                .trim()
                .trim_matches('"')
                .eq_ignore_ascii_case("utf-8"),
            _ => true,
        })
}

/// The request's `Content-Encoding` unless it is absent or only `identity`: bodies are never
/// decompressed, so a compressed one would otherwise be reported as invalid JSON.
fn unsupported_encoding(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .find(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        })
}

/// How deeply arrays and objects may nest in a request body (the body itself is level 1).
/// Stored values are read back inside events, webhooks and feeds that wrap them a few levels
/// deeper, and those must stay well within the JSON reader's own limit of 128.
pub const MAX_JSON_DEPTH: usize = 64;

/// Parses a JSON body strictly: UTF-8 without a byte-order mark, one value, no duplicate keys,
/// at most [`MAX_JSON_DEPTH`] levels deep.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(ApiError::bad_request("Request body is not valid UTF-8"));
    };
    if text.starts_with('\u{FEFF}') {
        return Err(ApiError::bad_request(
            "Request body is not valid JSON: it starts with a byte-order mark",
        ));
    }
    if text.bytes().all(|byte| byte.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "Request body is empty; expected a JSON value",
        ));
    }
    // The text is UTF-8 already, so `from_str` does not check it again.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde::de::DeserializeSeed::deserialize(Strict { depth: 1 }, &mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| {
            ApiError::bad_request(format!("Request body is not valid JSON: {error}"))
        })?;
    Ok(value)
}

/// Reads one JSON value strictly: an object with a repeated key (which plain `serde_json`
/// would silently resolve to the last one) and nesting deeper than [`MAX_JSON_DEPTH`] are
/// refused while parsing. `depth` is the level the value sits at; the body is level 1.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    /// Refuses an array or object at a level past the limit; returns the seed of its items.
    fn nested<E: serde::de::Error>(&self) -> Result<Strict, E> {
        if self.depth > MAX_JSON_DEPTH {
            return Err(E::custom(format!(
                "nested more than {MAX_JSON_DEPTH} levels deep"
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        // `-0` becomes `0`: Postgres cannot store a negative zero, so no backend keeps one.
        let value = if value == 0.0 { 0.0 } else { value };
        serde_json::Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Value, E> {
        check_nul(value)?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Value, E> {
        check_nul(&value)?;
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let seed = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(seed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let seed = self.nested()?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            check_nul(&key)?;
            let value = map.next_value_seed(seed)?;
            if object.insert(key.clone(), value).is_some() {
                return Err(serde::de::Error::custom(format!("duplicate key '{key}'")));
            }
        }
        Ok(Value::Object(object))
    }
}

/// Postgres text cannot hold U+0000, so no backend gets one: refused the same everywhere.
fn check_nul<E: serde::de::Error>(text: &str) -> Result<(), E> {
    if text.contains('\0') {
        Err(E::custom(
            "strings must not contain the NUL character (\\u0000)",
        ))
    } else {
        Ok(())
    }
}

/// The optional `idempotency-key` header, checked for length and characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let Some(value) = values.next() else {
            return Ok(IdempotencyKey(None));
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "Send one 'idempotency-key' header, not several",
            ));
        }
        let key = value
            .to_str()
            .ok()
            .filter(|key| (1..=255).contains(&key.len()))
            .filter(|key| key.bytes().all(|byte| (0x21..=0x7e).contains(&byte)))
            .ok_or_else(|| {
                ApiError::bad_request("'idempotency-key' must be 1 to 255 visible ASCII characters")
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The body as a JSON object with no properties but `allowed`.
pub fn json_object(body: &Value, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The body must be a JSON object"))?;
    if let Some(key) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::bad_request(format!("unknown property '{key}'")));
    }
    Ok(object.clone())
}
