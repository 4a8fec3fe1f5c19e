//! The web page: five files built into the binary (no CDN, nothing fetched from elsewhere).

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const CHAT_JS: &str = include_str!("../../web/chat.js");
const CHAT_CSS: &str = include_str!("../../web/chat.css");

/// The page's security headers: only same-origin scripts, styles, images and API calls.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob: https:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "style.css" => page("text/css; charset=utf-8", STYLE_CSS),
        "chat.js" => page("text/javascript; charset=utf-8", CHAT_JS),
        "chat.css" => page("text/css; charset=utf-8", CHAT_CSS),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
