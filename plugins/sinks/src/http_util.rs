//! HTTP helpers shared by the built-in sinks: JSON error bodies and query parsing that
//! turns bad parameters into 400s instead of panics.

use std::collections::BTreeMap;

use vadvisor_api::axum::http::StatusCode;
use vadvisor_api::axum::response::{IntoResponse, Response};
use vadvisor_api::axum::Json;

/// A JSON error response: `{"error": <reason phrase>, "message": <details>, "status": N}`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "message": message.into(),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// Parses a raw query string into a map, rejecting parameters not in `allowed`.
/// The error is the ready 400 response (a `Response` is large, but this runs once per
/// request and keeps handlers short).
#[allow(clippy::result_large_err)]
pub fn parse_query(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Response> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        if !allowed.contains(&k.as_str()) {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown query parameter `{k}`; valid parameters: {}",
                    allowed.join(", ")
                ),
            ));
        }
        out.insert(k, percent_decode(v));
    }
    Ok(out)
}

/// Parses a boolean parameter: `true`/`false` (and `1`/`0`); anything else is a 400.
#[allow(clippy::result_large_err)]
pub fn parse_bool(name: &str, value: Option<&String>) -> Result<bool, Response> {
    match value.map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("invalid value `{other}` for `{name}`: expected true or false"),
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some("live=true&x=%41b+c"), &["live", "x"]).unwrap();
        assert_eq!(q["live"], "true");
        assert_eq!(q["x"], "Ab c");
        assert!(parse_query(Some("nope=1"), &["live"]).is_err());
        assert!(parse_query(Some("x=%"), &["x"]).is_ok());
        assert!(parse_query(Some("x=%4"), &["x"]).is_ok());
        assert!(parse_bool("live", Some(&"yes".to_string())).is_err());
        assert!(parse_bool("live", Some(&"true".to_string())).unwrap());
        assert!(!parse_bool("live", None).unwrap());
    }
}
