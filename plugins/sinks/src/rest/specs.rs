//! vAdvisor's `/api/v1.0/specs` over a cache of the latest `Record::Spec` per domain
//! (published by the `specs` collector). Only a cache miss reaches libvirt: one domain
//! listing, so that a domain whose spec is not collected yet (right after start, or
//! just defined) answers 503 with `Retry-After` instead of a false 404.
//!
//! - `GET /api/v1.0/specs/` → JSON array of the active (running or paused) domains'
//!   specs, ordered by domain name;
//! - `GET /api/v1.0/specs/<id>` → one domain's spec, active or not; `<id>` is a UUID in
//!   any of the spellings Python's `UUID()` takes (any case, dashed or not, `{…}`,
//!   `urn:uuid:…`) or a name; a UUID-looking id that matches no UUID is tried as a name;
//!   not cached but known to libvirt (or libvirt unreachable) → 503 JSON with
//!   `Retry-After: 1`; unknown → 404 JSON;
//! - `GET /api/v1.0/specs` → 308 to `/api/v1.0/specs/`, keeping the query.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use vadvisor_api::axum::extract::{Path, RawQuery};
use vadvisor_api::axum::http::{header, StatusCode};
use vadvisor_api::axum::response::{IntoResponse, Redirect, Response};
use vadvisor_api::axum::routing::get;
use vadvisor_api::{DomainSpec, HttpRoutes, Hypervisor};

use crate::http_util::{json_error, parse_query};
use vadvisor_api::normalize_uuid;

/// The latest spec of every domain, by UUID.
#[derive(Debug, Default)]
pub struct SpecCache {
    by_uuid: RwLock<HashMap<String, Arc<DomainSpec>>>,
}

impl SpecCache {
    /// Keeps a spec, or forgets the domain when the record says it was removed.
    pub fn ingest(&self, spec: &Arc<DomainSpec>) {
        let mut map = self.by_uuid.write().unwrap_or_else(|e| e.into_inner());
        let uuid = spec.domain.uuid.to_string();
        match spec.spec {
            Some(_) => {
                map.insert(uuid, spec.clone());
            }
            None => {
                map.remove(&uuid);
            }
        }
    }

    /// The active domains' specs, by name.
    pub fn active(&self) -> Vec<serde_json::Value> {
        let map = self.by_uuid.read().unwrap_or_else(|e| e.into_inner());
        let mut active: Vec<&Arc<DomainSpec>> = map.values().filter(|s| s.active).collect();
        active.sort_by(|a, b| {
            (&a.domain.name, &a.domain.uuid).cmp(&(&b.domain.name, &b.domain.uuid))
        });
        active.into_iter().filter_map(|s| s.spec.clone()).collect()
    }

    /// One domain's spec by UUID (any spelling) or name.
    pub fn find(&self, id: &str) -> Option<serde_json::Value> {
        let map = self.by_uuid.read().unwrap_or_else(|e| e.into_inner());
        let by_uuid = normalize_uuid(id).and_then(|u| map.get(&u));
        by_uuid
            .or_else(|| map.values().find(|s| &*s.domain.name == id))
            .and_then(|s| s.spec.clone())
    }
}

fn json_response(v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds the three routes; `hv` answers cache misses.
pub fn register_routes(
    http: &mut HttpRoutes,
    cache: Arc<SpecCache>,
    hv: Arc<dyn Hypervisor>,
) -> Result<(), String> {
    let c = cache.clone();
    http.route(
        "/api/v1.0/specs/",
        get(move |q: RawQuery| all(c.clone(), q)),
    )?;
    http.route(
        "/api/v1.0/specs/{id}",
        get(move |p: Path<String>, q: RawQuery| one(cache.clone(), hv.clone(), p, q)),
    )?;
    http.route("/api/v1.0/specs", get(redirect_slash))
}

async fn all(cache: Arc<SpecCache>, RawQuery(q): RawQuery) -> Response {
    if let Err(resp) = parse_query(q.as_deref(), &[]) {
        return resp;
    }
    json_response(&cache.active())
}

async fn one(
    cache: Arc<SpecCache>,
    hv: Arc<dyn Hypervisor>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(resp) = parse_query(q.as_deref(), &[]) {
        return resp;
    }
    if let Some(spec) = cache.find(&id) {
        return json_response(&spec);
    }
    // A miss: is it a domain whose spec has not arrived yet?
    let uuid = normalize_uuid(&id);
    let not_yet = match hv.list_domains().await {
        Ok(domains) => {
            let known = domains.iter().any(|d| {
                uuid.as_deref() == Some(&*d.domain.uuid) || &*d.domain.name == id.as_str()
            });
            if !known {
                return json_error(StatusCode::NOT_FOUND, format!("no such domain: `{id}`"));
            }
            format!(
                "the spec of domain `{id}` is not collected yet (the `specs` collector reads it \
                 after start and after lifecycle events); retry shortly"
            )
        }
        Err(e) => format!("no spec of `{id}` cached and libvirt cannot be asked: {e}"),
    };
    let mut resp = json_error(StatusCode::SERVICE_UNAVAILABLE, not_yet);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

async fn redirect_slash(RawQuery(q): RawQuery) -> Response {
    let target = match q {
        Some(q) if !q.is_empty() => format!("/api/v1.0/specs/?{q}"),
        _ => "/api/v1.0/specs/".to_string(),
    };
    Redirect::permanent(&target).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::SystemTime;
    use tower::ServiceExt;
    use vadvisor_api::axum::body::Body;
    use vadvisor_api::axum::http::Request;
    use vadvisor_api::DomainRef;

    const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
    const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";

    fn spec(uuid: &str, name: &str, active: bool, present: bool) -> Arc<DomainSpec> {
        Arc::new(DomainSpec {
            at: SystemTime::now(),
            domain: DomainRef::new(uuid, name),
            active,
            spec: present.then(|| serde_json::json!({"domain": {"name": {"value": name}}})),
        })
    }

    fn router_with(
        hv: Arc<vadvisor_api::FakeHypervisor>,
    ) -> (vadvisor_api::axum::Router, Arc<SpecCache>) {
        let cache = Arc::new(SpecCache::default());
        let mut http = HttpRoutes::new();
        register_routes(&mut http, cache.clone(), hv).unwrap();
        (http.into_router(), cache)
    }

    fn router() -> (vadvisor_api::axum::Router, Arc<SpecCache>) {
        router_with(Arc::new(vadvisor_api::FakeHypervisor::new()))
    }

    #[tokio::test]
    async fn a_known_domain_not_cached_yet_is_503_with_retry_after_never_404() {
        let hv = Arc::new(vadvisor_api::FakeHypervisor::new());
        hv.put_inactive(U1, "one");
        let (r, cache) = router_with(hv.clone());
        for id in [U1, "5ad0a0b0000040008000000000000001", "one"] {
            let resp = r
                .clone()
                .oneshot(
                    Request::get(format!("/api/v1.0/specs/{id}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{id}");
            assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        }
        let (status, _, body) = get(&r, "/api/v1.0/specs/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|e| e.contains("no such domain")),
            "{body}"
        );
        cache.ingest(&spec(U1, "one", false, true));
        assert_eq!(get(&r, "/api/v1.0/specs/one").await.0, StatusCode::OK);
        hv.set_down(Some("no libvirtd"));
        let (status, _, body) = get(&r, &format!("/api/v1.0/specs/{U2}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    async fn get(
        router: &vadvisor_api::axum::Router,
        uri: &str,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn lists_active_domains_and_finds_any_by_uuid_or_name() {
        let (r, cache) = router();
        assert_eq!(get(&r, "/api/v1.0/specs/").await.2, serde_json::json!([]));
        cache.ingest(&spec(U2, "two", false, true));
        cache.ingest(&spec(U1, "one", true, true));
        let (status, _, list) = get(&r, "/api/v1.0/specs/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            list,
            serde_json::json!([{"domain": {"name": {"value": "one"}}}])
        );
        for id in [
            U2,
            "5AD0A0B0-0000-4000-8000-000000000002",
            "5ad0a0b0000040008000000000000002",
            "two",
        ] {
            let (status, _, v) = get(&r, &format!("/api/v1.0/specs/{id}")).await;
            assert_eq!(
                (status, &v["domain"]["name"]["value"]),
                (StatusCode::OK, &serde_json::json!("two")),
                "{id}"
            );
        }
        let (status, _, v) = get(&r, "/api/v1.0/specs/nope").await;
        assert_eq!(
            (status, v["status"].as_u64()),
            (StatusCode::NOT_FOUND, Some(404))
        );
        // Removal.
        cache.ingest(&spec(U1, "one", false, false));
        assert_eq!(get(&r, "/api/v1.0/specs/").await.2, serde_json::json!([]));
        assert_eq!(
            get(&r, &format!("/api/v1.0/specs/{U1}")).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_name_that_looks_like_a_uuid_is_found_too() {
        let (r, cache) = router();
        let looks = "00000000-0000-0000-0000-0000000000aa";
        cache.ingest(&spec(U1, looks, true, true));
        assert_eq!(
            get(&r, &format!("/api/v1.0/specs/{looks}")).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn redirects_keep_the_query_and_unknown_parameters_are_400() {
        let (r, _) = router();
        let (status, location, _) = get(&r, "/api/v1.0/specs?x=1").await;
        assert_eq!(
            (status, location.as_deref()),
            (StatusCode::PERMANENT_REDIRECT, Some("/api/v1.0/specs/?x=1"))
        );
        let (status, location, _) = get(&r, "/api/v1.0/specs").await;
        assert_eq!(
            (status, location.as_deref()),
            (StatusCode::PERMANENT_REDIRECT, Some("/api/v1.0/specs/"))
        );
        assert_eq!(
            get(&r, "/api/v1.0/specs/?x=1").await.0,
            StatusCode::BAD_REQUEST
        );
    }
}
