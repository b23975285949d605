//! The students' ordering page: one HTML document, one script and one stylesheet,
//! embedded in the binary so the box serves them with the uplink down.
//!
//! The assets live under `/assets/{version}/…`, where the version is a hash of their
//! bytes: a browser may keep them forever (`immutable`), and a new build changes the
//! path. The HTML names that path, so it is revalidated on every load (`no-cache` and
//! an `ETag`); a phone on the canteen Wi-Fi then downloads only a `304`.

use crate::app::App;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const INDEX_TEMPLATE: &str = include_str!("../../assets/student/index.html");
const APP_JS: &str = include_str!("../../assets/student/app.js");
const APP_CSS: &str = include_str!("../../assets/student/app.css");

/// What the HTML template says where the asset version goes.
const VERSION_PLACEHOLDER: &str = "__ASSET_VERSION__";

/// Cache headers of the versioned assets: their path changes with their bytes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Security headers of the HTML. The page needs nothing but the box itself, and the
/// policy makes the browser refuse anything else (no CDN, fonts or analytics can creep in).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

struct Page {
    version: String,
    html: String,
    etag: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    hasher.update(APP_JS.as_bytes());
    hasher.update([0]);
    hasher.update(APP_CSS.as_bytes());
    let version = hex::encode(&hasher.finalize()[..6]);
    let html = INDEX_TEMPLATE.replace(VERSION_PLACEHOLDER, &version);
    // Weak: the compression layer may send other bytes for the same document.
    let etag = format!(
        "W/\"{}\"",
        hex::encode(&Sha256::digest(html.as_bytes())[..8])
    );
    Page {
        version,
        html,
        etag,
    }
});

/// The version segment of the asset paths the page uses now.
pub fn asset_version() -> &'static str {
    &PAGE.version
}

/// Bytes of script and stylesheet the page ships (uncompressed).
pub fn asset_bytes() -> usize {
    APP_JS.len() + APP_CSS.len()
}

pub(super) fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/assets/{version}/{file}", axum::routing::get(asset))
}

/// True when an `If-None-Match` header lists `etag` (weak comparison, or `*`).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

async fn index(headers: HeaderMap) -> Response {
    let page = &*PAGE;
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&page.etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
    ];
    if matches(&headers, &page.etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        page.html.clone(),
    )
        .into_response()
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let body = match file.as_str() {
        "app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Some((APP_CSS, "text/css; charset=utf-8")),
        _ => None,
    };
    // Another version's path is not answered with these bytes: a cache would keep them
    // forever under the wrong name.
    match body {
        Some((bytes, content_type)) if version == PAGE.version => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, IMMUTABLE),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        _ => super::error::ApiError::not_found(super::error::ErrorCode::NotFound, "no such asset")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phones on a crowded canteen Wi-Fi download this; keep it small.
    const ASSET_BUDGET_BYTES: usize = 100_000;

    #[test]
    fn script_and_stylesheet_fit_the_budget() {
        let total = asset_bytes();
        assert_eq!(total, APP_JS.len() + APP_CSS.len());
        assert!(
            total <= ASSET_BUDGET_BYTES,
            "app.js ({}) + app.css ({}) = {total} bytes > {ASSET_BUDGET_BYTES}",
            APP_JS.len(),
            APP_CSS.len()
        );
        assert!(total > 1_000, "the assets are embedded, not empty");
    }

    #[test]
    fn the_html_names_the_current_asset_paths_and_nothing_from_outside() {
        let html = &PAGE.html;
        assert!(!html.contains(VERSION_PLACEHOLDER));
        assert!(html.contains(&format!("/assets/{}/app.js", PAGE.version)));
        assert!(html.contains(&format!("/assets/{}/app.css", PAGE.version)));
        for text in [html.as_str(), APP_JS, APP_CSS] {
            assert!(!text.contains("http://"), "no absolute URLs");
            assert!(!text.contains("https://"), "no absolute URLs");
            assert!(!text.contains("//cdn"), "no CDN");
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(matches(&h, "W/\"abc\""));
        assert!(matches(&h, "\"abc\""));
        assert!(!matches(&h, "W/\"abd\""));
        assert!(!matches(&HeaderMap::new(), "W/\"abc\""));
    }
}
