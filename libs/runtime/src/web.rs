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
