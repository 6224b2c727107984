//! HTTP basic authentication against bcrypt hashes (`basic_auth_users` of the web
//! config). bcrypt is deliberately slow, so verified credentials are remembered (a
//! bounded set of hashes of `user:password`), and an unknown user costs the same
//! bcrypt work as a known one. `/healthz` stays open so container health checks work.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

const CACHE_LIMIT: usize = 256;
/// A valid bcrypt hash of a random string, verified against for unknown users.
const DUMMY_HASH: &str = "$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z0hYhVHw5Cv3zhqoJQ5M4b2S";

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<u64>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Arc<Self> {
        Arc::new(Self {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn key(user: &str, password: &str, hash: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (user, password, hash).hash(&mut h);
        h.finish()
    }

    /// Whether the `Authorization` header value holds valid credentials.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(encoded) = authorization.and_then(|v| v.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let key = Self::key(user, password, hash);
        if known
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

/// The middleware: 401 with a JSON body and a `WWW-Authenticate` challenge.
pub async fn require(auth: Arc<BasicAuth>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let header_value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // bcrypt runs off the async runtime.
    let checker = auth.clone();
    let ok = tokio::task::spawn_blocking(move || checker.check(header_value.as_deref()))
        .await
        .unwrap_or(false);
    if ok {
        return next.run(request).await;
    }
    let body = serde_json::json!({"error": "Unauthorized", "message": "valid basic-auth credentials required", "status": 401});
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"vadvisor\"")],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_string(), hash)]));
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.check(Some(&header("alice", "s3cret"))));
        assert!(auth.check(Some(&header("alice", "s3cret"))), "cached");
        assert!(!auth.check(Some(&header("alice", "wrong"))));
        assert!(!auth.check(Some(&header("mallory", "s3cret"))));
        assert!(!auth.check(Some("Basic !!!")));
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(None));
        assert!(
            bcrypt::verify("x", DUMMY_HASH).is_ok(),
            "the dummy hash is well-formed"
        );
    }
}
