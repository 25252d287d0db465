//! The runvoy web app: a single-page log viewer, executions list and run form, embedded in the
//! `runvoyd` binary.
//!
//! [`router`] serves:
//! - `/` and `/executions/{id}`: the app's `index.html` (the client routes with the History API, so
//!   an execution's URL can be shared and reloaded);
//! - `/assets/...`: the JavaScript modules, CSS and icons, with their content type, a strong `ETag`
//!   and caching headers. `index.html` refers to them under `/assets/v-<hash>/`, where `<hash>`
//!   identifies the set of embedded files, so those URLs are cached as immutable; the unversioned
//!   `/assets/<file>` URLs are revalidated on every use.
//!
//! Nothing is served under `/api`; the server merges this router with its API. The app talks to
//! the API of the server that served it by default, or of any runvoyd URL given at sign-in.

#![deny(missing_docs)]

use std::sync::LazyLock;

use axum::{
    Router,
    body::Body,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Name of the HTML template among the embedded files; it is only served as a page.
const INDEX: &str = "index.html";

/// Placeholder in `index.html` replaced by the versioned assets prefix.
const ASSETS_PLACEHOLDER: &str = "%ASSETS%";

/// Content Security Policy of the page: scripts and styles only from this origin, API calls and
/// WebSockets to any server (the app can be pointed at another runvoyd).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self' http: https: ws: wss:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'; object-src 'none'";

/// Identifier of the embedded asset set (hex of a SHA-256 over every file's name and hash).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut names: Vec<_> = Assets::iter().collect();
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        if let Some(f) = Assets::get(&name) {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(f.metadata.sha256_hash());
        }
    }
    hex::encode(&h.finalize()[..8])
});

/// The rendered `index.html` with its `ETag`.
static INDEX_PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let raw = Assets::get(INDEX).map(|f| f.data).unwrap_or_default();
    let html = String::from_utf8_lossy(&raw).replace(ASSETS_PLACEHOLDER, &assets_prefix());
    let etag = format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(html.as_bytes())[..12])
    );
    (html, etag)
});

/// The versioned URL prefix of the assets, e.g. `/assets/v-0123456789abcdef`.
pub fn assets_prefix() -> String {
    format!("/assets/v-{}", *VERSION)
}

/// The web app's routes: `/`, `/executions/{id}` and `/assets/{*path}`.
///
/// Merge it into the server's router (or use it as the fallback); it defines nothing under `/api`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/executions/{id}", get(execution_page))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    page(&headers)
}

async fn execution_page(Path(_id): Path<String>, headers: HeaderMap) -> Response {
    page(&headers)
}

fn page(req: &HeaderMap) -> Response {
    let (html, etag) = &*INDEX_PAGE;
    let mut resp = if etag_matches(req, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(html.clone()))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // `v-<hash>/file` is the versioned form; an older hash still resolves, but is not immutable.
    let (name, immutable) = match path.strip_prefix("v-").and_then(|p| p.split_once('/')) {
        Some((version, rest)) => (rest, version == VERSION.as_str()),
        None => (path.as_str(), false),
    };
    if name == INDEX || name.is_empty() {
        return not_found();
    }
    let Some(file) = Assets::get(name) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let mut resp = if etag_matches(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

fn etag_matches(req: &HeaderMap, etag: &str) -> bool {
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// Content type of an embedded file, from its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> Response {
        router()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn ctype(r: &Response) -> &str {
        r.headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn index_at_root_and_execution_urls() {
        for uri in [
            "/",
            "/executions/abc",
            "/executions/0123456789abcdef0123456789abcdef",
        ] {
            let r = get(uri).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert!(ctype(&r).starts_with("text/html"), "{uri}");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let html = body(r).await;
            assert!(html.contains("<!doctype html>"), "{uri}");
            assert!(!html.contains(ASSETS_PLACEHOLDER));
            assert!(html.contains(&format!("{}/app.js", assets_prefix())));
        }
    }

    #[tokio::test]
    async fn assets_have_content_types_and_caching() {
        for (name, ct) in [
            ("app.js", "text/javascript"),
            ("api.js", "text/javascript"),
            ("ansi.js", "text/javascript"),
            ("logview.js", "text/javascript"),
            ("stream.js", "text/javascript"),
            ("app.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let r = get(&format!("/assets/{name}")).await;
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert!(ctype(&r).starts_with(ct), "{name}: {}", ctype(&r));
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
            assert!(r.headers().contains_key(header::ETAG));

            let r = get(&format!("{}/{name}", assets_prefix())).await;
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert!(ctype(&r).starts_with(ct));
            let cc = r.headers()[header::CACHE_CONTROL].to_str().unwrap();
            assert!(cc.contains("immutable"), "{cc}");
        }
    }

    #[tokio::test]
    async fn unknown_assets_and_other_paths_are_404() {
        for uri in [
            "/assets/nope.js",
            "/assets/index.html",
            "/assets/v-0000/nope.css",
            "/api/v1/health",
            "/executions",
        ] {
            assert_eq!(get(uri).await.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn conditional_requests_get_304() {
        let r = get("/assets/app.css").await;
        let etag = r.headers()[header::ETAG].clone();
        let r = router()
            .oneshot(
                Request::get("/assets/app.css")
                    .header(header::IF_NONE_MATCH, etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
}
