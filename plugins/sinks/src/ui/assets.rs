//! The UI's files, compiled into the binary (`include_bytes!`): pages, styles, scripts
//! and the vendored uPlot chart library (`assets/vendor`, copied there by
//! `scripts/vendor-ui.sh` with its licence and checksums). Served with a content type,
//! an `ETag` (a hash of the content) for cheap revalidation, and a Content Security
//! Policy that only allows this origin, so a page can never load anything from
//! elsewhere.

use vadvisor_api::axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use vadvisor_api::axum::response::{IntoResponse, Response};

use crate::http_util::json_error;

macro_rules! asset {
    ($name:literal) => {
        ($name, include_bytes!(concat!("assets/", $name)) as &[u8])
    };
}

/// Every file of the UI, by its path under `/ui/assets/`.
pub const ASSETS: &[(&str, &[u8])] = &[
    asset!("index.html"),
    asset!("vm.html"),
    asset!("events.html"),
    asset!("style.css"),
    asset!("favicon.svg"),
    asset!("common.js"),
    asset!("rates.js"),
    asset!("charts.js"),
    asset!("overview.js"),
    asset!("vm.js"),
    asset!("events.js"),
    asset!("vendor/uPlot.iife.min.js"),
    asset!("vendor/uPlot.min.css"),
    asset!("vendor/LICENSE"),
    asset!("vendor/VENDORED"),
];

/// The policy sent with every file: scripts, styles, data and connections from this
/// origin only (uPlot sets inline styles on its elements).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

pub fn find(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

/// FNV-1a of the content, as a strong `ETag`.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Serves one file; unknown paths are a JSON 404 like every other endpoint.
pub fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(body) = find(path) else {
        return json_error(StatusCode::NOT_FOUND, format!("no such UI file: {path}"));
    };
    let tag = etag(body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type(path))], body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(find(path).expect(path)).expect("UTF-8")
    }

    /// Every `/ui/assets/...` reference in the pages, styles and scripts, and every
    /// relative module import, names an embedded file.
    #[test]
    fn every_referenced_asset_is_embedded() {
        let mut checked = 0;
        for (path, _) in ASSETS.iter().filter(|(p, _)| !p.starts_with("vendor/")) {
            let body = text(path);
            for (i, _) in body.match_indices("/ui/assets/") {
                let rest = &body[i + "/ui/assets/".len()..];
                let end = rest
                    .find(|c: char| c == '"' || c == '\'' || c == ')' || c.is_whitespace())
                    .unwrap_or(rest.len());
                let target = &rest[..end];
                assert!(find(target).is_some(), "{path} references missing {target}");
                checked += 1;
            }
            for (i, _) in body.match_indices("from './") {
                let rest = &body[i + "from './".len()..];
                let target = &rest[..rest.find('\'').unwrap_or(rest.len())];
                assert!(find(target).is_some(), "{path} imports missing {target}");
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} references found");
    }

    /// Nothing is loaded from the network: no `http(s)://` URL in our own files (the
    /// SVG namespace is an identifier, not a fetch), and the CSP forbids other origins.
    #[test]
    fn no_external_urls() {
        for (path, _) in ASSETS.iter().filter(|(p, _)| !p.starts_with("vendor/")) {
            let body = text(path).replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
                "{path} contains an external URL"
            );
        }
        assert!(CSP.starts_with("default-src 'self'"));
        assert!(!CSP.contains("http"));
        // The vendored library is the file the vendor script recorded.
        assert!(text("vendor/VENDORED").contains("uPlot.iife.min.js"));
        assert!(text("vendor/LICENSE").contains("MIT"));
    }

    #[test]
    fn pages_have_accessibility_basics() {
        for page in ["index.html", "vm.html", "events.html"] {
            let body = text(page);
            assert!(body.contains("<html lang=\"en\">"), "{page}: lang");
            assert!(body.contains("<title>"), "{page}: title");
            assert!(body.contains("<main"), "{page}: main landmark");
            assert!(body.contains("<nav"), "{page}: nav landmark");
            assert!(
                body.contains("rel=\"icon\""),
                "{page}: icon (no /favicon.ico request)"
            );
            assert!(
                body.contains("name=\"color-scheme\""),
                "{page}: color scheme"
            );
        }
        let css = text("style.css");
        assert!(css.contains("prefers-color-scheme: dark"));
        assert!(css.contains(":focus-visible"));
    }

    #[test]
    fn serving_sets_type_etag_and_revalidates() {
        let r = serve("style.css", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        let tag = r.headers()[header::ETAG].clone();
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("style.css", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(content_type("vm.js"), "text/javascript; charset=utf-8");
    }
}
