//! The web portal (`web/`, React + TypeScript, built by `make web` into `web/dist`),
//! embedded in the binary and served at `/`.
//!
//! * Every GET/HEAD that matches no API route lands here (it is the router's fallback).
//!   Paths under `/api` and non-GET methods answer the usual 404 problem.
//! * A file of `web/dist` is served with its content type; a precompressed `.gz` twin is
//!   preferred when the client accepts gzip. Hashed files under `assets/` are cached for a
//!   year (`immutable`), everything else is revalidated (`no-cache` + `ETag`).
//! * Any other path that accepts `text/html` gets `index.html` (client-side routing).
//! * When `web/dist` was missing at build time (release) or is missing on disk (debug
//!   builds read the folder at run time), a small page says how to build the portal.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../../web/dist"]
#[allow_missing = true]
struct Assets;

/// Content Security Policy of the portal's pages: nothing is loaded from elsewhere
/// (factories are often offline), so a stray CDN reference fails loudly in development.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>FactoryOps</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}
code{background:#8882;padding:.1rem .3rem;border-radius:.2rem}</style></head>
<body><h1>FactoryOps</h1>
<p>The web portal is not built into this binary. Run <code>make web</code> (or <code>make run</code>) and
rebuild, or use the API directly: <a href="/api/docs">API docs</a>.</p></body></html>
"#;

/// The router's fallback: a portal file, the SPA's `index.html`, or a 404 problem.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") || (method != Method::GET && method != Method::HEAD) {
        return crate::layers::not_found().await.into_response();
    }
    let relative = path.trim_start_matches('/');
    if !relative.is_empty()
        && !relative.ends_with('/')
        && let Some(response) = asset(relative, &headers)
    {
        return response;
    }
    if !accepts_html(&headers) {
        return crate::layers::not_found().await.into_response();
    }
    index(&headers)
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"))
}

fn index(headers: &HeaderMap) -> Response {
    match asset("index.html", headers) {
        Some(mut response) => {
            response.headers_mut().insert("content-security-policy", HeaderValue::from_static(CSP));
            response
        }
        None => {
            let mut response =
                (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    }
}

/// One embedded file, or `None` when there is no such file.
fn asset(relative: &str, headers: &HeaderMap) -> Option<Response> {
    let file = Assets::get(relative)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    let mime = mime_guess::from_path(relative).first_or_octet_stream();
    let content_type = if mime.type_() == mime_guess::mime::TEXT || mime.subtype() == "javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    let cache = if relative.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));

    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, &etag)
        .header(header::VARY, "accept-encoding")
        .header("x-content-type-options", "nosniff");
    if not_modified {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).ok();
    }
    builder = builder.header(header::CONTENT_TYPE, content_type);
    let gzipped = if accepts_gzip(headers) { Assets::get(&format!("{relative}.gz")) } else { None };
    let body = match gzipped {
        Some(gz) => {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            gz.data
        }
        None => file.data,
    };
    builder.status(StatusCode::OK).body(Body::from(body.into_owned())).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[tokio::test]
    async fn api_paths_and_other_methods_stay_problems() {
        for (method, path) in [(Method::GET, "/api/v1/nope"), (Method::GET, "/api"), (Method::POST, "/devices")] {
            let response = fallback(method, path.parse().unwrap(), headers(&[(header::ACCEPT, "text/html")])).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], crate::problem::CONTENT_TYPE);
        }
    }

    #[tokio::test]
    async fn html_navigations_get_the_portal_and_others_a_problem() {
        let page = fallback(
            Method::GET,
            "/f/plant-1/devices/press-1".parse().unwrap(),
            headers(&[(header::ACCEPT, "text/html,application/xhtml+xml")]),
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");

        let missing = fallback(Method::GET, "/assets/nope.js".parse().unwrap(), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
