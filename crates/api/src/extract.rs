//! Request bodies: size-limited, JSON only, unknown fields refused, and every
//! failure mapped to a stable code instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use ordermq_domain::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body accepted, in bytes. Orders and payment notices are tiny.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body parsed into `T`, with the raw bytes kept (signatures are over the raw body).
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

/// The raw body of a JSON request, after the media type and size checks.
pub async fn raw_json_body(req: Request) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                rejection.body_text(),
            )
        }
    })
}

/// Parses JSON, telling a broken document (400) from a well-formed one with wrong fields (422).
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            e.to_string(),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            e.to_string(),
        ),
    })
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = raw_json_body(req).await?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}
