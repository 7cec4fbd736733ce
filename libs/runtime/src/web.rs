//! Static web pages (the Agent Portal, the demo phone) compiled into the binary.
//!
//! Pages are plain HTML, CSS and JavaScript with no build step. For front-end work, set
//! `CC_WEB_DIR` to the repository root: files are then read from disk on every request
//! (`<CC_WEB_DIR>/<embedded path>`), so a page can be edited without rebuilding.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A file served at a fixed path: its repository path (for `CC_WEB_DIR`) and its embedded bytes.
#[derive(Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub body: &'static str,
}

/// `Asset { path, body: include_str!(path relative to the crate) }`, with the repository path
/// spelled once.
#[macro_export]
macro_rules! asset {
    ($crate_dir:literal, $file:literal) => {
        $crate::web::Asset {
            path: concat!($crate_dir, "/", $file),
            body: include_str!(concat!("../", $file)),
        }
    };
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

impl IntoResponse for Asset {
    fn into_response(self) -> Response {
        let body = match std::env::var_os("CC_WEB_DIR") {
            Some(dir) => {
                match std::fs::read_to_string(std::path::Path::new(&dir).join(self.path)) {
                    Ok(s) => s,
                    Err(e) => {
                        return (StatusCode::NOT_FOUND, format!("{}: {e}", self.path))
                            .into_response()
                    }
                }
            }
            None => self.body.to_string(),
        };
        (
            [
                (header::CONTENT_TYPE, content_type(self.path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    }
}

/// The Content-Security-Policy of every page: scripts, styles and connections only from the
/// page's own origin (no inline script, so markup smuggled into a page cannot run), no plugins,
/// and no framing by any site (`frame-ancestors 'none'`: clickjacking an agent's buttons).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the browser hardening headers to a response (for `axum::middleware::map_response`):
/// the CSP above, `X-Frame-Options: DENY` for browsers without `frame-ancestors`,
/// `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` (URLs carry tenant and
/// agent numbers; no other site needs them).
pub async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// A span per HTTP request, a child of the client's `traceparent` header when it sends one
/// (the portal's pages do: one trace from the click). For `axum::middleware::from_fn`.
pub async fn trace(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let span = cc_trace::following(
        tracing::info_span!(
            "http request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        ),
        request
            .headers()
            .get(cc_trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
