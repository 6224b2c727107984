//! HTTP helpers shared by the built-in sinks: JSON error bodies and query parsing (with
//! `form_urlencoded`) that turns unknown, repeated or bad parameters into 400s.

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

/// Parses a raw query string (`application/x-www-form-urlencoded`) into a map,
/// rejecting parameters not in `allowed` and parameters given more than once. The
/// error is the ready 400 response (a `Response` is large, but this runs once per
/// request and keeps handlers short).
#[allow(clippy::result_large_err)]
pub fn parse_query(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Response> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            let valid = if allowed.is_empty() {
                "this endpoint takes no query parameters".to_string()
            } else {
                format!("valid parameters: {}", allowed.join(", "))
            };
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                format!("unknown query parameter `{k}`; {valid}"),
            ));
        }
        if out.contains_key(k.as_ref()) {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                format!("query parameter `{k}` is given more than once"),
            ));
        }
        out.insert(k.into_owned(), v.into_owned());
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn message(r: Response) -> String {
        let body = vadvisor_api::axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["message"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn repeated_and_unknown_parameters_are_named() {
        let err = parse_query(Some("live=true&live=false"), &["live"]).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            message(err).await,
            "query parameter `live` is given more than once"
        );
        let err = parse_query(Some("li%76e=1&live=0"), &["live"]).unwrap_err();
        assert!(
            message(err).await.contains("`live`"),
            "decoded names count too"
        );
        let err = parse_query(Some("x=1"), &[]).unwrap_err();
        assert_eq!(
            message(err).await,
            "unknown query parameter `x`; this endpoint takes no query parameters"
        );
        let err = parse_query(Some("x=1"), &["live", "since"]).unwrap_err();
        assert!(message(err)
            .await
            .ends_with("valid parameters: live, since"));
    }

    #[test]
    fn query_parsing() {
        let q = parse_query(Some("live=true&x=%41b+c"), &["live", "x"]).unwrap();
        assert_eq!(q["live"], "true");
        assert_eq!(q["x"], "Ab c");
        assert!(parse_query(Some("nope=1"), &["live"]).is_err());
        assert!(parse_query(Some("x=%"), &["x"]).is_ok());
        assert!(parse_query(Some("x=%4"), &["x"]).is_ok());
        // `%+1` is not an escape: it stays as written (`+` is a space).
        assert_eq!(parse_query(Some("x=%+1"), &["x"]).unwrap()["x"], "% 1");
        assert_eq!(parse_query(Some("x=%zz"), &["x"]).unwrap()["x"], "%zz");
        assert_eq!(
            parse_query(Some("x=caf%C3%A9"), &["x"]).unwrap()["x"],
            "café"
        );
        assert!(parse_query(Some("&&x=1&"), &["x"]).is_ok());
        assert!(parse_bool("live", Some(&"yes".to_string())).is_err());
        assert!(parse_bool("live", Some(&"true".to_string())).unwrap());
        assert!(!parse_bool("live", None).unwrap());
    }
}
