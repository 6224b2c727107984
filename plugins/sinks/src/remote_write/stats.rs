//! The sink's own figures (`vadvisor_remote_write_*`), kept in atomics and a small
//! snapshot of the buffer so that a scrape or `/healthz` never waits on the buffer or
//! the network. Registered with the agent's `Health` as a `SinkReport`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use vadvisor_api::{MetricKind, SinkFigure, SinkReport};

use super::buffer::{BufferStats, Lost};
use super::series::unix_ms;

#[derive(Default)]
pub struct Stats {
    /// Where samples go, without credentials or query string.
    pub endpoint: String,
    pub buffer_kind: &'static str,
    pub samples_sent: AtomicU64,
    pub samples_failed: AtomicU64,
    pub samples_retried: AtomicU64,
    pub samples_rejected: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Sum of request latencies in microseconds (successful and failed).
    pub send_micros: AtomicU64,
    pub last_send_micros: AtomicU64,
    /// ms since the epoch; 0: never.
    pub last_success_ms: AtomicI64,
    pub series_tracked: AtomicU64,
    pub buffer: Mutex<(BufferStats, Lost)>,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn set_buffer(&self, s: BufferStats, lost: Lost) {
        *self.buffer.lock().unwrap_or_else(|e| e.into_inner()) = (s, lost);
    }

    fn buffer(&self) -> (BufferStats, Lost) {
        *self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    fn oldest_age(&self, b: &BufferStats) -> f64 {
        b.oldest_ms
            .map(|o| ((unix_ms(SystemTime::now()) - o) as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0)
    }
}

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

impl SinkReport for Stats {
    fn figures(&self) -> Vec<SinkFigure> {
        use MetricKind::{Counter, Gauge};
        let (b, lost) = self.buffer();
        let f = |name, help, kind, labels: Vec<(&'static str, String)>, value| SinkFigure {
            name,
            help,
            kind,
            labels,
            value,
        };
        let last_ok = self.last_success_ms.load(Ordering::Relaxed);
        let dropped = |reason: &str, n: u64| {
            f(
                "vadvisor_remote_write_samples_dropped_total",
                "Samples the remote-write sink gave up on, by reason: rejected (the receiver answered 4xx), buffer_full (oldest dropped to stay within the bound), corrupt (unreadable on disk), write_error (could not be written to disk)",
                Counter,
                vec![("reason", reason.to_string())],
                n as f64,
            )
        };
        vec![
            f("vadvisor_remote_write_samples_sent_total", "Samples the receiver accepted", Counter, vec![], load(&self.samples_sent)),
            f("vadvisor_remote_write_samples_failed_total", "Samples in requests that failed (connection error, timeout, 5xx, 429 or 4xx)", Counter, vec![], load(&self.samples_failed)),
            f("vadvisor_remote_write_samples_retried_total", "Samples sent again after a failure that may pass on retry (connection error, timeout, 5xx, 429)", Counter, vec![], load(&self.samples_retried)),
            dropped("rejected", self.samples_rejected.load(Ordering::Relaxed)),
            dropped("buffer_full", lost.full),
            dropped("corrupt", lost.corrupt),
            dropped("write_error", lost.write_error),
            f("vadvisor_remote_write_requests_total", "Remote-write requests by result", Counter, vec![("result", "success".into())], load(&self.requests_ok)),
            f("vadvisor_remote_write_requests_total", "Remote-write requests by result", Counter, vec![("result", "failure".into())], load(&self.requests_failed)),
            f("vadvisor_remote_write_sent_bytes_total", "Compressed request bytes the receiver accepted", Counter, vec![], load(&self.bytes_sent)),
            f("vadvisor_remote_write_buffer_bytes", "Bytes the buffer holds (memory, or segment files on disk)", Gauge, vec![], b.bytes as f64),
            f("vadvisor_remote_write_buffer_samples", "Unsent samples in the buffer", Gauge, vec![], b.samples as f64),
            f("vadvisor_remote_write_oldest_unsent_sample_age_seconds", "Age of the oldest unsent sample (0 when all is sent)", Gauge, vec![], self.oldest_age(&b)),
            f("vadvisor_remote_write_last_success_timestamp_seconds", "When the receiver last accepted a request (0: never)", Gauge, vec![], last_ok as f64 / 1000.0),
            f("vadvisor_remote_write_send_duration_seconds_total", "Time spent in remote-write requests", Counter, vec![], load(&self.send_micros) / 1e6),
            f("vadvisor_remote_write_last_send_duration_seconds", "Latency of the last remote-write request", Gauge, vec![], load(&self.last_send_micros) / 1e6),
            f("vadvisor_remote_write_series", "Series the sink tracks (for per-series timestamp order)", Gauge, vec![], load(&self.series_tracked)),
        ]
    }

    fn health(&self) -> serde_json::Value {
        let (b, lost) = self.buffer();
        let last_ok = self.last_success_ms.load(Ordering::Relaxed);
        let requests = load(&self.requests_ok) + load(&self.requests_failed);
        serde_json::json!({
            "kind": "remote_write",
            "endpoint": self.endpoint,
            "buffer": self.buffer_kind,
            "samples_sent": self.samples_sent.load(Ordering::Relaxed),
            "samples_failed": self.samples_failed.load(Ordering::Relaxed),
            "samples_retried": self.samples_retried.load(Ordering::Relaxed),
            "samples_dropped": {
                "rejected": self.samples_rejected.load(Ordering::Relaxed),
                "buffer_full": lost.full,
                "corrupt": lost.corrupt,
                "write_error": lost.write_error,
            },
            "buffer_bytes": b.bytes,
            "buffer_samples": b.samples,
            "oldest_unsent_sample_age_seconds": self.oldest_age(&b),
            "last_success_age_seconds": (last_ok > 0).then(|| (unix_ms(SystemTime::now()) - last_ok) as f64 / 1000.0),
            "mean_send_duration_seconds": if requests > 0.0 { load(&self.send_micros) / 1e6 / requests } else { 0.0 },
            "last_error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}
