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
/// A whole number is an integer however it is written (`725`, `725.0`, `7.25e2`), as JSON
/// Schema and so the OpenAPI document have it.
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
    let written_whole;
    let bytes = match whole_numbers(bytes) {
        Some(b) => {
            written_whole = b;
            &written_whole[..]
        }
        None => bytes,
    };
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

/// The body with every whole number written as an integer, when it has one written otherwise
/// (else `None`: the body is read as it came). Rewritten from its value, such a body takes
/// the last of a field given twice.
fn whole_numbers(bytes: &[u8]) -> Option<Vec<u8>> {
    fn walk(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().expect("a float");
                // Within the integers an f64 holds exactly, and those of i64.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *v = serde_json::Value::from(f as i64);
                    return true;
                }
                false
            }
            serde_json::Value::Array(a) => each(a.iter_mut()),
            serde_json::Value::Object(o) => each(o.values_mut()),
            _ => false,
        }
    }
    // Every value is rewritten, not only up to the first whole number.
    fn each<'a>(values: impl Iterator<Item = &'a mut serde_json::Value>) -> bool {
        let mut changed = false;
        for v in values {
            changed |= walk(v);
        }
        changed
    }
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    walk(&mut v).then(|| serde_json::to_vec(&v).expect("JSON"))
}

/// Parses a path or body value with a domain parser, naming the field.
pub fn parsed<T>(field: &str, r: Result<T, cc_contracts::domain::Invalid>) -> ApiResult<T> {
    r.map_err(|e| ApiError(CommandError::field("invalid_field", field, e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct B {
        n: i32,
        #[serde(default)]
        s: Option<String>,
    }

    fn code(r: ApiResult<B>) -> (String, Option<String>) {
        let e = r.expect_err("refused").0;
        (e.error, e.field)
    }

    #[test]
    fn a_whole_number_is_an_integer_however_written() {
        for text in [r#"{"n": 725}"#, r#"{"n": 725.0}"#, r#"{"n": 7.25e2}"#] {
            assert_eq!(
                body::<B>(text.as_bytes()).ok(),
                Some(B { n: 725, s: None }),
                "{text}"
            );
        }
        assert_eq!(
            code(body(br#"{"n": 7.5}"#)),
            ("invalid_field".into(), Some("n".into()))
        );
    }

    #[test]
    fn a_body_is_one_json_object_of_known_fields() {
        assert_eq!(code(body(b"")).0, "invalid_json");
        assert_eq!(code(body(b"[1]")).0, "invalid_json");
        assert_eq!(code(body(br#"{"n": 1} {}"#)).0, "invalid_json");
        assert_eq!(
            code(body(br#"{"n": 1, "x": 2}"#)),
            ("invalid_field".into(), Some("x".into()))
        );
        assert_eq!(
            code(body(br#"{"s": "a"}"#)),
            ("missing_field".into(), Some("n".into()))
        );
    }
}
