//! Request extractors that answer bad input with upstream faults (never axum's plain-text rejections).

use std::collections::HashMap;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;
use trove_core::error::Error;
use trove_core::ports::RequestContext;

use super::fault::ApiError;
use super::AppState;

/// Decodes a JSON body into `T`, mapping malformed JSON and schema errors to 400 and an oversized body to 413.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body is `None`.
pub struct OptJsonBody<T>(pub Option<T>);

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    to_bytes(body, limit).await.map_err(|_| {
        ApiError(Error::OverLimit {
            message: format!("The request body is larger than the limit of {limit} bytes."),
            retry_after: None,
        })
    })
}

/// Parses `bytes` as a JSON object and decodes it into `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError(Error::bad_request(format!("Malformed request body: {e}."))))?;
    decode_value(value)
}

/// Decodes an already-parsed JSON value into `T` (400 `Validation error` on failure).
pub fn decode_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError(Error::validation(
            "the request body must be a JSON object",
        )));
    }
    serde_json::from_value(value).map_err(|e| ApiError(Error::validation(e.to_string())))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), state.config.max_body_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError(Error::bad_request(
                "The request body is empty; a JSON object is required.",
            )));
        }
        decode(&bytes).map(JsonBody)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for OptJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), state.config.max_body_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJsonBody(None));
        }
        decode(&bytes).map(|v| OptJsonBody(Some(v)))
    }
}

/// Path parameters; a parameter that does not decode is a 404 (the resource cannot exist).
pub struct P<T>(pub T);

impl<T, S> FromRequestParts<S> for P<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|e| ApiError(Error::not_found("Resource", e.body_text())))
    }
}

/// Query parameters as a map (repeated keys: the last wins).
pub struct Q(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| {
                ApiError(Error::bad_request(format!(
                    "Invalid query string: {}",
                    e.body_text()
                )))
            })
    }
}

impl Q {
    /// A query flag: `true`/`1`/`yes` (any case) is true.
    pub fn flag(&self, key: &str) -> bool {
        self.0
            .get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
    }
    /// A string parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Who is calling, and how links are rendered for them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Authenticated context.
    pub ctx: RequestContext,
    /// The tenant of the URL.
    pub tenant: String,
    /// Base URL (scheme + authority) for links.
    pub base: String,
    /// Path and query of the request (for `next` links).
    pub path_and_query: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError(Error::Unauthorized {
                message: "The request is not authenticated.".into(),
            })
        })
    }
}

/// Parses a UUID path segment; anything else is a 404 for `what`.
pub fn uuid_or_404(what: &'static str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError(Error::not_found(what, s)))
}

/// Decodes `%XX` escapes of a path segment (names such as `name@host` user ids); invalid escapes are kept as they
/// are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
