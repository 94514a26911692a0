//! `GET /`: the status page. One self-contained HTML document (styles and
//! script inline, nothing fetched from elsewhere) that polls `/status`
//! and renders it; the dead-letter view calls `/dead-letters`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("page.html");

pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}
