//! Delivery: the HTTP client (TLS, auth, headers) and the sender loop. The loop takes
//! the oldest entries from the buffer (up to `max_samples_per_send` samples, once that
//! many wait or the oldest has waited `batch_send_deadline`), sends them as one
//! remote-write 1.0 request, and acknowledges them when the receiver accepted them or
//! rejected them for good (4xx other than 429: counted and dropped). Connection
//! errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter
//! (`Retry-After` honoured), forever: the buffer's bound is what limits an outage.
//! One request is in flight at a time, so every series' samples arrive in order.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Notify;
use vadvisor_api::CancellationToken;

use super::buffer::{Buffer, Entry};
use super::config::{RemoteWriteOptions, Secret};
use super::proto::{MetricMetadata, WriteRequest};
use super::series::unix_ms;
use super::stats::Stats;

/// How often metadata rides along with a request (as Prometheus' default).
const METADATA_EVERY: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub type SharedBuffer = Arc<Mutex<Box<dyn Buffer>>>;

/// Runs `f` on the buffer off the async workers (the disk buffer does file I/O).
pub async fn with_buffer<T: Send + 'static>(
    buffer: &SharedBuffer,
    stats: &Arc<Stats>,
    f: impl FnOnce(&mut dyn Buffer) -> T + Send + 'static,
) -> T {
    let buffer = buffer.clone();
    let stats = stats.clone();
    let run = move || {
        let mut b = buffer.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut **b);
        stats.set_buffer(b.stats(), b.lost());
        out
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Builds the HTTP client from the TLS options and timeout.
pub fn client(o: &RemoteWriteOptions) -> Result<reqwest::Client, String> {
    let tls = &o.tls_config;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(o.remote_timeout)
        .connect_timeout(o.remote_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("vadvisor/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(2);
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", ca.display()));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem =
            std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("client certificate or key is not valid PEM: {e}"))?;
        b = b.identity(id);
    }
    if tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// How requests are addressed and authenticated.
pub struct Target {
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    basic: Option<(String, Option<Secret>, Option<std::path::PathBuf>)>,
    authorization: Option<(String, Option<Secret>, Option<std::path::PathBuf>)>,
}

impl Target {
    pub fn new(url: reqwest::Url, o: &RemoteWriteOptions) -> Self {
        let mut headers = HeaderMap::new();
        for (k, v) in &o.headers {
            // Checked by RemoteWriteOptions::check.
            if let (Ok(k), Ok(mut v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v.0),
            ) {
                v.set_sensitive(true);
                headers.insert(k, v);
            }
        }
        Self {
            url,
            headers,
            basic: o.basic_auth.as_ref().map(|b| {
                (
                    b.username.clone(),
                    b.password.clone(),
                    b.password_file.clone(),
                )
            }),
            authorization: o.authorization.as_ref().map(|a| {
                (
                    a.kind.clone(),
                    a.credentials.clone(),
                    a.credentials_file.clone(),
                )
            }),
        }
    }

    /// A secret from the options or, re-read on every request (rotation), its file.
    fn secret(
        inline: &Option<Secret>,
        file: &Option<std::path::PathBuf>,
    ) -> Result<String, String> {
        match (inline, file) {
            (Some(s), _) => Ok(s.0.clone()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", f.display())),
            (None, None) => Ok(String::new()),
        }
    }

    fn request(
        &self,
        client: &reqwest::Client,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let mut r = client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some((user, pw, file)) = &self.basic {
            r = r.basic_auth(user, Some(Self::secret(pw, file)?));
        }
        if let Some((kind, cred, file)) = &self.authorization {
            let mut v = HeaderValue::from_str(&format!("{kind} {}", Self::secret(cred, file)?))
                .map_err(|_| {
                    "authorization credentials are not a valid header value".to_string()
                })?;
            v.set_sensitive(true);
            r = r.header(reqwest::header::AUTHORIZATION, v);
        }
        Ok(r)
    }
}

/// What became of one request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Accepted,
    /// May pass later; wait at least this long if the receiver said so.
    Retry(String, Option<Duration>),
    /// The receiver refused the data; retrying cannot help.
    Rejected(String),
}

/// `Retry-After` in seconds (an HTTP date is rare from receivers and treated as absent).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// An error with its causes (`error sending request: … : connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Sends one compressed body.
pub async fn post(client: &reqwest::Client, target: &Target, body: Vec<u8>) -> Outcome {
    let request = match target.request(client, body) {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(e, None),
    };
    let resp = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(chain(&e.without_url()), None),
    };
    let status = resp.status();
    let after = retry_after(resp.headers());
    if status.is_success() {
        return Outcome::Accepted;
    }
    let mut text = resp.text().await.unwrap_or_default();
    text.truncate(text.trim_end().len().min(300));
    let what = format!("HTTP {}: {}", status.as_u16(), text);
    if status.as_u16() == 429 || status.is_server_error() {
        Outcome::Retry(what, after)
    } else {
        Outcome::Rejected(what)
    }
}

/// Exponential backoff with jitter: `min·2^attempt` capped at `max`, then a random
/// point in its upper half.
pub fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The request body: the entries' series (concatenated protobuf is one message) and,
/// when due, the metadata; snappy raw block.
pub fn body(entries: &[Entry], metadata: Option<&[MetricMetadata]>) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut dec = snap::raw::Decoder::new();
    for e in entries {
        raw.extend(
            dec.decompress_vec(&e.data)
                .map_err(|err| format!("entry {}: {err}", e.seq))?,
        );
    }
    if let Some(md) = metadata {
        WriteRequest {
            timeseries: Vec::new(),
            metadata: md.to_vec(),
        }
        .encode(&mut raw)
        .map_err(|e| e.to_string())?;
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| e.to_string())
}

pub struct Sender {
    pub id: Arc<str>,
    pub client: reqwest::Client,
    pub target: Target,
    pub buffer: SharedBuffer,
    pub stats: Arc<Stats>,
    pub wake: Arc<Notify>,
    pub metadata: Arc<Mutex<Arc<[MetricMetadata]>>>,
    pub max_samples: usize,
    pub deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Set at exit: send whatever waits without waiting for the deadline.
    pub flush: Arc<std::sync::atomic::AtomicBool>,
}

impl Sender {
    /// Sends until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_metadata: Option<Instant> = None;
        let mut failing_since: Option<(Instant, u64)> = None;
        let mut last_reject_log: Option<Instant> = None;
        loop {
            // Wait for a full request's worth, or for the oldest to reach the deadline.
            let (samples, oldest) = {
                let s = self
                    .stats
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                (s.samples, s.oldest_ms)
            };
            let waited = oldest
                .map(|o| Duration::from_millis((unix_ms(SystemTime::now()) - o).max(0) as u64));
            let ready = samples as usize >= self.max_samples
                || waited.is_some_and(|w| w >= self.deadline)
                || (samples > 0 && self.flush.load(Ordering::Relaxed));
            if !ready {
                let nap = match waited {
                    Some(w) => self.deadline - w,
                    None => self.deadline,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
                continue;
            }
            let max = self.max_samples;
            let entries = with_buffer(&self.buffer, &self.stats, move |b| {
                let entries = b.peek(max);
                if let Some(last) = entries.last() {
                    b.sending(last.seq);
                }
                entries
            })
            .await;
            let Some(last) = entries.last().map(|e| e.seq) else {
                continue;
            };
            let n: u64 = entries.iter().map(|e| u64::from(e.samples)).sum();
            let metadata = if last_metadata.is_none_or(|t| t.elapsed() >= METADATA_EVERY) {
                Some(
                    self.metadata
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                )
            } else {
                None
            };
            let body = match body(&entries, metadata.as_deref()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %self.id, error = %e, "remote_write: unreadable buffer entry dropped");
                    self.stats.samples_rejected.fetch_add(n, Ordering::Relaxed);
                    with_buffer(&self.buffer, &self.stats, move |b| b.ack(last)).await;
                    continue;
                }
            };
            let size = body.len() as u64;
            let mut attempt: u32 = 0;
            loop {
                let started = Instant::now();
                let outcome = tokio::select! {
                    _ = stop.cancelled() => return,
                    o = post(&self.client, &self.target, body.clone()) => o,
                };
                let took = started.elapsed().as_micros() as u64;
                self.stats.send_micros.fetch_add(took, Ordering::Relaxed);
                self.stats.last_send_micros.store(took, Ordering::Relaxed);
                match outcome {
                    Outcome::Accepted => {
                        self.stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                        self.stats.samples_sent.fetch_add(n, Ordering::Relaxed);
                        self.stats.bytes_sent.fetch_add(size, Ordering::Relaxed);
                        self.stats
                            .last_success_ms
                            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
                        if metadata.is_some() {
                            last_metadata = Some(Instant::now());
                        }
                        if let Some((since, failures)) = failing_since.take() {
                            tracing::info!(sink = %self.id, failed_attempts = failures,
                                down_for = %humantime_serde::re::humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                                "remote_write: the receiver accepts samples again");
                        }
                        self.stats.set_error(None);
                        break;
                    }
                    Outcome::Retry(why, after) => {
                        self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                        self.stats.samples_failed.fetch_add(n, Ordering::Relaxed);
                        self.stats.samples_retried.fetch_add(n, Ordering::Relaxed);
                        match &mut failing_since {
                            None => {
                                tracing::warn!(sink = %self.id, error = %why,
                                    "remote_write: send failed; retrying with backoff (samples wait in the buffer)");
                                failing_since = Some((Instant::now(), 1));
                            }
                            Some((_, n)) => *n += 1,
                        }
                        self.stats.set_error(Some(why));
                        let wait = after.unwrap_or_else(|| {
                            backoff(self.min_backoff, self.max_backoff, attempt)
                        });
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    Outcome::Rejected(why) => {
                        self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                        self.stats.samples_failed.fetch_add(n, Ordering::Relaxed);
                        self.stats.samples_rejected.fetch_add(n, Ordering::Relaxed);
                        if last_reject_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(sink = %self.id, error = %why, samples = n,
                                "remote_write: the receiver rejected a request; its samples are dropped (further rejections within a minute are only counted)");
                            last_reject_log = Some(Instant::now());
                        }
                        self.stats.set_error(Some(why));
                        break;
                    }
                }
            }
            with_buffer(&self.buffer, &self.stats, move |b| b.ack(last)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let (min, max) = (Duration::from_millis(30), Duration::from_secs(5));
        for attempt in 0..30 {
            let exp = min.saturating_mul(1 << attempt.min(20)).min(max);
            let d = backoff(min, max, attempt);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(min, max, 3)).collect();
        assert!(spread.len() > 1, "jitter");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("99999"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
