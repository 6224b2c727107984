//! HTTP basic authentication against bcrypt hashes (`basic_auth_users` of the web
//! config), built so that it cannot be used to burn CPU or to enumerate users:
//! - at most [`max_verifications`] bcrypt verifications run at once (others wait,
//!   without a thread);
//! - successful verifications are remembered by an HMAC-SHA256 of `user:password`
//!   under a random per-process key (never the password itself), for [`CACHE_TTL`];
//! - a client address that keeps failing is answered 429 with `Retry-After`, without
//!   any bcrypt work, for a delay that doubles with each failure (see [`Throttle`]);
//! - an unknown user is verified against a dummy hash of the highest cost among the
//!   configured users, so it costs what a wrong password costs.
//!
//! `/healthz` stays open for container health checks but only says up/down; its
//! inventory (`?verbose=true`) needs credentials.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ring::hmac;
use tokio::sync::Semaphore;
use vadvisor_api::Health;

/// Successful verifications remembered at most this long.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_LIMIT: usize = 1024;
/// bcrypt only reads the first 72 bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// `limit` label of `vadvisor_http_limit_hits_total` for throttled requests.
pub const THROTTLED: &str = "auth_throttled";

/// Concurrent bcrypt verifications: half the CPUs, at least one.
pub fn max_verifications() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1)
}

/// Whether `hash` is a well-formed bcrypt hash: `$2a$`, `$2b$`, `$2x$` or `$2y$`, a
/// two-digit cost from 04 to 31, and 53 characters of bcrypt's base64.
pub fn check_hash(hash: &str) -> Result<u32, String> {
    let expected = "expected a bcrypt hash like `$2y$10$` followed by 53 characters; make one with `vadvisor --hash-password`";
    let parts: Vec<&str> = hash.split('$').collect();
    let [empty, version, cost, rest] = parts.as_slice() else {
        return Err(expected.into());
    };
    if !empty.is_empty() || !matches!(*version, "2a" | "2b" | "2x" | "2y") {
        return Err(expected.into());
    }
    let cost: u32 = match cost.parse() {
        Ok(c) if cost.len() == 2 && (4..=31).contains(&c) => c,
        _ => {
            return Err(format!(
                "invalid bcrypt cost `{cost}` (04 to 31); {expected}"
            ))
        }
    };
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    if rest.len() != 53 || !rest.chars().all(alphabet) {
        return Err(format!(
            "the salt and hash part has {} characters, not 53 of [./A-Za-z0-9]; {expected}",
            rest.len()
        ));
    }
    Ok(cost)
}

/// The user and password of a `Basic` `Authorization` header (scheme matched
/// case-insensitively, RFC 7235).
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let value = value.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Per-address failure tracking: from the third failure in a row, the address is
/// refused for 250 ms, doubling with each further failure up to 30 s. A success, or
/// ten minutes without failure, forgets the address.
#[derive(Default)]
pub struct Throttle {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

const FREE_FAILURES: u32 = 2;
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);
const FORGET_AFTER: Duration = Duration::from_secs(600);
const MAX_CLIENTS: usize = 10_000;

impl Throttle {
    /// How long `ip` must still wait, if it is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let until = clients.get(&ip)?.blocked_until?;
        until.checked_duration_since(Instant::now())
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if clients.len() >= MAX_CLIENTS {
                // Under a spread-out attack: forget the calmest half.
                let mut lasts: Vec<Instant> = clients.values().map(|f| f.last).collect();
                lasts.sort();
                let cutoff = lasts[lasts.len() / 2];
                clients.retain(|_, f| f.last > cutoff);
            }
        }
        let f = clients.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
            f.blocked_until = Some(now + delay);
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// What [`BasicAuth::authorize`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// Too many failures from this address: try again after this long.
    Throttled(Duration),
}

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    dummy_hash: String,
    key: hmac::Key,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    permits: Semaphore,
    pub throttle: Throttle,
    health: Option<Arc<Health>>,
    /// Most verifications seen running at once (for tests and figures).
    peak: Mutex<(usize, usize)>,
    verifications: std::sync::atomic::AtomicU64,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Arc<Self> {
        Self::with_health(users, None)
    }

    pub fn with_health(users: BTreeMap<String, String>, health: Option<Arc<Health>>) -> Arc<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &random_fallback()));
        // The dummy hash costs what the most expensive configured user costs.
        let cost = users
            .values()
            .filter_map(|h| check_hash(h).ok())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let secret = hex(hmac::sign(&key, b"dummy").as_ref());
        let dummy_hash = bcrypt::hash(secret, cost).unwrap_or_else(|_| {
            "$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z0hYhVHw5Cv3zhqoJQ5M4b2S".into()
        });
        Arc::new(Self {
            users,
            dummy_hash,
            key,
            verified: Mutex::new(HashMap::new()),
            permits: Semaphore::new(max_verifications()),
            throttle: Throttle::default(),
            health,
            peak: Mutex::new((0, 0)),
            verifications: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The cost of the hash unknown users are checked against.
    pub fn dummy_cost(&self) -> Option<u32> {
        check_hash(&self.dummy_hash).ok()
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(b":");
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_LIMIT {
                if let Some(oldest) = cache.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(key, Instant::now());
    }

    /// Entries of the verification cache (each 32 bytes of HMAC).
    pub fn cache_len(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The most bcrypt verifications seen running at once.
    pub fn peak_verifications(&self) -> usize {
        self.peak.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// bcrypt verifications run so far.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks an `Authorization` header value from client address `ip`.
    pub async fn authorize(
        self: &Arc<Self>,
        authorization: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Outcome {
        if let Some(wait) = ip.and_then(|ip| self.throttle.blocked(ip)) {
            if let Some(h) = &self.health {
                h.record_limit_hit(THROTTLED, 1);
            }
            return Outcome::Throttled(wait);
        }
        // No or unreadable credentials cost nothing and are not counted as failures
        // (a browser's first request carries none).
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Outcome::Denied;
        };
        let key = self.cache_key(&user, &password);
        let known = self.users.contains_key(&user);
        let ok = if known && self.cached(&key) {
            true
        } else {
            self.verify(user, password).await
        };
        if ok {
            self.remember(key);
            if let Some(ip) = ip {
                self.throttle.succeeded(ip);
            }
            Outcome::Allowed
        } else {
            if let Some(ip) = ip {
                self.throttle.failed(ip);
            }
            Outcome::Denied
        }
    }

    /// One bcrypt verification, on a blocking thread, at most `max_verifications` at once.
    async fn verify(self: &Arc<Self>, user: String, password: String) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        {
            let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
            peak.0 += 1;
            peak.1 = peak.1.max(peak.0);
        }
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let this = self.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let (hash, known) = match this.users.get(&user) {
                Some(h) => (h.as_str(), true),
                None => (this.dummy_hash.as_str(), false),
            };
            bcrypt::verify(&password, hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false);
        self.peak.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        ok
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Key material when the system RNG fails (it does not on Linux): time and address
/// entropy, still never derived from a password.
fn random_fallback() -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let local = 0u8;
    format!("{now}:{:p}:{}", &local, std::process::id()).into_bytes()
}

fn json(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "message": message,
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

/// Marks a `/healthz` request that did not authenticate: it gets up/down only.
#[derive(Clone, Copy, Debug)]
pub struct BriefHealth;

/// The middleware: 401 with a JSON body and a `WWW-Authenticate` challenge, 429 with
/// `Retry-After` for a throttled address.
pub async fn require(auth: Arc<BasicAuth>, mut request: Request, next: Next) -> Response {
    let verbose = request.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "verbose" && v == "true")
    });
    if request.uri().path() == "/healthz" && !verbose {
        request.extensions_mut().insert(BriefHealth);
        return next.run(request).await;
    }
    let header_value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match auth.authorize(header_value.as_deref(), ip).await {
        Outcome::Allowed => next.run(request).await,
        Outcome::Denied => {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                "valid basic-auth credentials required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"vadvisor\""),
            );
            r
        }
        Outcome::Throttled(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed logins from this address; retry in {secs} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests;
