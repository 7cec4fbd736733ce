//! Every refusal is one HTTP status and a body `{ "error", "message", "field" }`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cc_bus::{CommandError, RequestError};

pub struct ApiError(pub CommandError);

pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status of an error code: its kind in the one table of codes
/// ([`cc_bus::codes::CODES`]). A code that table does not know is a fault of ours (500).
pub fn status_of(code: &str) -> StatusCode {
    match cc_bus::codes::kind_of(code) {
        Some(kind) => StatusCode::from_u16(kind.status()).expect("a valid status"),
        None => {
            tracing::error!(code, "an error code missing from cc_bus::codes::CODES");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(&self.0.error), Json(self.0)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        ApiError(e)
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError(e.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(e.into())
    }
}

pub fn forbidden(message: &str) -> ApiError {
    ApiError(CommandError::new("forbidden", message))
}

pub fn not_found(message: String) -> ApiError {
    ApiError(CommandError::new("not_found", message))
}

/// Parses a JSON body, naming the field at fault: the body must be a JSON object (an array is
/// not taken as the fields in order), every field must have its type, and a field the route
/// does not know is refused (a misspelt optional field would otherwise be silently ignored).
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError(CommandError::new(
            "invalid_json",
            "the request needs a JSON body",
        )));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError(
            match cc_bus::parse_json::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => CommandError::new(
                    "invalid_json",
                    "the body must be a JSON object ({\"field\": value, ...})",
                ),
                Err(e) => e,
            },
        ));
    }
    let mut unknown: Vec<String> = vec![];
    let mut note = |p: serde_ignored::Path| unknown.push(cc_bus::field_name(&p.to_string()));
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: T =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut *de, &mut note))
            .map_err(|e| ApiError(CommandError::from_json(e)))?;
    de.end().map_err(|e| ApiError(CommandError::trailing(e)))?;
    if let Some(f) = unknown.first() {
        return Err(ApiError(CommandError::field(
            "invalid_field",
            f,
            format!("{f}: no such field here (see /api/docs)"),
        )));
    }
    Ok(parsed)
}

/// Parses a path or body value with a domain parser, naming the field.
pub fn parsed<T>(field: &str, r: Result<T, cc_contracts::domain::Invalid>) -> ApiResult<T> {
    r.map_err(|e| ApiError(CommandError::field("invalid_field", field, e.message)))
}
