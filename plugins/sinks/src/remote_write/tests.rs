//! Tests of the sink through the registry with hand-made batches and a small HTTP
//! receiver that decodes every request (snappy + protobuf) and answers with scripted
//! statuses: the series equal the `prometheus` sink's `/metrics`, headers and
//! authentication, retries (5xx, 429 with `Retry-After`), rejections dropped and
//! counted, per-series timestamp order, the disk buffer across a restart, and secrets
//! kept out of the health report. The real receiver (Prometheus) is in the lab tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use prost::Message;
use tower::ServiceExt;
use vadvisor_api::axum::body::{Body, Bytes};
use vadvisor_api::axum::http::{HeaderMap, Request, StatusCode};
use vadvisor_api::axum::response::IntoResponse;
use vadvisor_api::axum::routing::post;
use vadvisor_api::axum::Router;
use vadvisor_api::{
    Batch, Bus, CancellationToken, DomainRef, DomainSamples, DomainState, FakeHypervisor, Health,
    HttpRoutes, LiveCollect, PluginOptions, Record, Registry, Sample, SinkBuildContext, SinkInput,
};
use vadvisor_collectors::cpu;

use super::proto::WriteRequest;

const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";

struct NoLive;
#[vadvisor_api::async_trait]
impl LiveCollect for NoLive {
    async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String> {
        Err("not in these tests".into())
    }
}

fn cpu_batch(at: SystemTime, ns: f64) -> Arc<Batch> {
    let dom = |u: &str, n: &str| {
        let mut d = DomainSamples::new(DomainRef::new(u, n));
        d.state = Some(DomainState::new(DomainState::RUNNING, 1));
        d.samples = vec![
            Sample::new(cpu::CPU_TIME, ns),
            Sample::new(cpu::CPU_USER, ns / 4.0),
            Sample::labelled(cpu::VCPU_TIME, vec![Arc::from("0")], ns / 3.0),
            Sample::new(cpu::VCPUS_CURRENT, 2.0),
        ];
        d
    };
    Arc::new(Batch {
        collector: "cpu".into(),
        metrics: Arc::from(cpu::METRICS),
        at,
        domains: vec![dom(U1, "one"), dom(U2, "two \"q\" two")],
        host: Vec::new(),
    })
}

/// What the receiver got.
#[derive(Clone, Debug)]
struct Got {
    at: Instant,
    headers: HeaderMap,
    request: WriteRequest,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Got>,
    /// Statuses to answer, in order (then 204), with an optional Retry-After.
    script: VecDeque<(u16, Option<&'static str>)>,
}

struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(script: Vec<(u16, Option<&'static str>)>) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            got: Vec::new(),
            script: script.into(),
        }));
        let s = state.clone();
        let app = Router::new().route(
            "/api/v1/write",
            post(move |headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let raw = snap::raw::Decoder::new()
                        .decompress_vec(&body)
                        .expect("snappy block");
                    let request = WriteRequest::decode(&raw[..]).expect("protobuf WriteRequest");
                    let mut st = s.lock().unwrap();
                    st.got.push(Got {
                        at: Instant::now(),
                        headers,
                        request,
                    });
                    let (code, after) = st.script.pop_front().unwrap_or((204, None));
                    let mut h = HeaderMap::new();
                    if let Some(a) = after {
                        h.insert("retry-after", a.parse().unwrap());
                    }
                    (StatusCode::from_u16(code).unwrap(), h, "scripted").into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { vadvisor_api::axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/api/v1/write"),
            state,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    async fn wait_for(&self, what: &str, mut f: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.got();
            if f(&got) {
                return got;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; got {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Agent {
    bus: Bus,
    health: Arc<Health>,
    router: Router,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

/// A `prometheus` and a `remote_write/test` sink on one bus.
fn agent(rw: serde_json::Value) -> Agent {
    let mut registry = Registry::new();
    crate::register_all(&mut registry);
    let mut http = HttpRoutes::new();
    let hv = Arc::new(FakeHypervisor::new());
    let health = Health::new();
    let bus = Bus::new(64);
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for (kind, id, options) in [
        ("prometheus", "prometheus", serde_json::json!({})),
        ("remote_write", "remote_write/test", rw),
    ] {
        let mut cx = SinkBuildContext {
            id: id.into(),
            hypervisor: hv.clone(),
            http: &mut http,
            live: Arc::new(NoLive),
            health: health.clone().into(),
        };
        let sink = registry
            .sink(kind)
            .unwrap()
            .build(&PluginOptions::new(options), &mut cx)
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        let input = SinkInput {
            id: id.into(),
            records: bus.subscribe(health.sink(id)),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(sink.run(input)));
    }
    Agent {
        bus,
        health,
        router: http.into_router(),
        shutdown,
        tasks,
    }
}

impl Agent {
    fn publish(&self, b: Arc<Batch>) {
        self.health
            .record_run(&b.collector, Duration::from_millis(1), true, 0);
        self.bus.publish(Record::Batch(b));
    }

    async fn metrics(&self) -> String {
        let resp = self
            .router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    fn figure(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.health
            .reports()
            .iter()
            .flat_map(|(_, r)| r.figures())
            .find(|f| {
                f.name == name
                    && label.is_none_or(|(k, v)| f.labels.iter().any(|(a, b)| *a == k && b == v))
            })
            .map(|f| f.value)
            .unwrap_or_else(|| panic!("no figure {name}"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

fn fast(url: &str) -> serde_json::Value {
    serde_json::json!({
        "url": url,
        "external_labels": {"host": "h1", "dc": "x"},
        "queue_config": {"batch_send_deadline": "50ms", "min_backoff": "10ms", "max_backoff": "100ms"},
    })
}

/// `name{k="v",…} value` lines of a classic exposition (unescaping `\"` and `\\`),
/// keyed with their labels sorted by name.
fn parse_text(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let series = series.replace("\\\"", "\"").replace("\\\\", "\\");
        let key = match series.split_once('{') {
            None => series,
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let mut labels: Vec<String> = inner
                    .split("\",")
                    .map(|l| {
                        if l.ends_with('"') {
                            l.to_string()
                        } else {
                            format!("{l}\"")
                        }
                    })
                    .collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().unwrap());
    }
    out
}

/// A received sample: value, timestamp, labels.
type Sent = (f64, i64, Vec<(String, String)>);

/// The same rendering for received series, without the external labels.
fn key(ts: &super::proto::TimeSeries, external: &[&str]) -> String {
    let name = &ts
        .labels
        .iter()
        .find(|l| l.name == "__name__")
        .unwrap()
        .value;
    let labels: Vec<String> = ts
        .labels
        .iter()
        .filter(|l| l.name != "__name__" && !external.contains(&l.name.as_str()))
        .map(|l| format!("{}=\"{}\"", l.name, l.value))
        .collect();
    if labels.is_empty() {
        name.clone()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

#[tokio::test]
async fn series_are_the_metrics_endpoints_with_external_labels_and_metadata() {
    let rx = Receiver::start(vec![]).await;
    let a = agent(fast(&rx.url));
    let t0 = SystemTime::now() - Duration::from_secs(2);
    a.publish(cpu_batch(t0, 5e9));
    let got = rx
        .wait_for("the vm_ series", |g| {
            g.iter().any(|r| {
                r.request
                    .timeseries
                    .iter()
                    .any(|t| key(t, &[]).starts_with("vm_cpu"))
            })
        })
        .await;
    let metrics = parse_text(&a.metrics().await);
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    for ts in got.iter().flat_map(|g| &g.request.timeseries) {
        let labels = ts
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        sent.insert(
            key(ts, &["host", "dc"]),
            (ts.samples[0].value, ts.samples[0].timestamp, labels),
        );
    }
    // Every per-VM series of /metrics is sent with the same value, and no other.
    let vm_metrics: BTreeMap<_, _> = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("vm_"))
        .collect();
    let vm_sent: BTreeMap<_, _> = sent.iter().filter(|(k, _)| k.starts_with("vm_")).collect();
    assert_eq!(
        vm_metrics.keys().collect::<Vec<_>>(),
        vm_sent.keys().collect::<Vec<_>>()
    );
    for (k, v) in &vm_metrics {
        assert_eq!(vm_sent[*k].0, **v, "{k}");
    }
    assert!(vm_metrics.len() >= 10, "{vm_metrics:?}");
    // Collector values carry the batch's time; labels sorted; external labels added.
    let cpu = &sent[&format!("vm_cpu_time_seconds_total{{name=\"one\",uuid=\"{U1}\"}}")];
    assert_eq!(cpu.1, super::series::unix_ms(t0));
    assert_eq!(cpu.0, 5.0);
    let names: Vec<&str> = cpu.2.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["__name__", "dc", "host", "name", "uuid"]);
    assert!(
        sent.keys()
            .any(|k| k.starts_with("vadvisor_remote_write_samples_sent_total")),
        "self-metrics too"
    );
    // Headers of protocol 1.0, and metadata with the first request.
    let h = &got[0].headers;
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert!(h["user-agent"].to_str().unwrap().starts_with("vadvisor/"));
    let md = &got[0].request.metadata;
    let cpu_md = md
        .iter()
        .find(|m| m.metric_family_name == "vm_cpu_time_seconds")
        .expect("metadata");
    assert_eq!((cpu_md.r#type, cpu_md.unit.as_str()), (1, "seconds"));
    assert!(!cpu_md.help.is_empty());
    a.stop().await;
}

#[tokio::test]
async fn retries_5xx_and_429_honouring_retry_after_and_keeps_order() {
    let rx = Receiver::start(vec![(503, None), (429, Some("1")), (500, None)]).await;
    let a = agent(fast(&rx.url));
    let t0 = SystemTime::now() - Duration::from_secs(10);
    for i in 0..3u64 {
        a.publish(cpu_batch(t0 + Duration::from_secs(i), 1e9 * (i + 1) as f64));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let got = rx
        .wait_for("three rounds delivered", |g| {
            g.iter()
                .skip(3)
                .flat_map(|r| &r.request.timeseries)
                .filter(|t| key(t, &[]).starts_with("vm_cpu_time_seconds_total"))
                .count()
                >= 6
        })
        .await;
    // The 429 said "wait 1 s": the next attempt came no sooner.
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(990),
        "{:?}",
        got[2].at - got[1].at
    );
    // Per series, accepted timestamps strictly increase.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for ts in got.iter().skip(3).flat_map(|r| &r.request.timeseries) {
        let k = key(ts, &[]);
        for s in &ts.samples {
            if let Some(prev) = last.get(&k) {
                assert!(s.timestamp > *prev, "{k}: {} after {prev}", s.timestamp);
            }
            last.insert(k.clone(), s.timestamp);
        }
    }
    assert!(a.figure("vadvisor_remote_write_samples_retried_total", None) > 0.0);
    assert_eq!(
        a.figure(
            "vadvisor_remote_write_samples_dropped_total",
            Some(("reason", "rejected"))
        ),
        0.0
    );
    a.stop().await;
}

#[tokio::test]
async fn a_4xx_drops_the_batch_counts_it_and_moves_on() {
    let rx = Receiver::start(vec![(400, None)]).await;
    let a = agent(fast(&rx.url));
    let t0 = SystemTime::now() - Duration::from_secs(10);
    a.publish(cpu_batch(t0, 1e9));
    let first = rx.wait_for("the first request", |g| !g.is_empty()).await;
    let rejected: usize = first[0].request.timeseries.len();
    a.publish(cpu_batch(t0 + Duration::from_secs(1), 2e9));
    rx.wait_for("the second round", |g| g.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.got();
    let cpu_values: Vec<f64> = got
        .iter()
        .skip(1)
        .flat_map(|r| &r.request.timeseries)
        .filter(|t| {
            key(t, &[])
                == format!(
                    "vm_cpu_time_seconds_total{{dc=\"x\",host=\"h1\",name=\"one\",uuid=\"{U1}\"}}"
                )
        })
        .map(|t| t.samples[0].value)
        .collect();
    assert_eq!(
        cpu_values,
        vec![2.0],
        "the rejected round is not sent again"
    );
    assert_eq!(
        a.figure(
            "vadvisor_remote_write_samples_dropped_total",
            Some(("reason", "rejected"))
        ),
        rejected as f64
    );
    a.stop().await;
}

#[tokio::test]
async fn authentication_headers_and_no_secret_in_health() {
    let rx = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let mut o = fast(&rx.url);
    o["authorization"] = serde_json::json!({"credentials_file": token});
    o["headers"] = serde_json::json!({"X-Scope-OrgID": "tenant-1"});
    let a = agent(o);
    a.publish(cpu_batch(SystemTime::now(), 1e9));
    let got = rx.wait_for("a request", |g| !g.is_empty()).await;
    assert_eq!(got[0].headers["authorization"], "Bearer s3cr3t-token");
    assert_eq!(got[0].headers["x-scope-orgid"], "tenant-1");
    let health = a.health.reports()[0].1.health().to_string();
    assert!(
        !health.contains("s3cr3t") && health.contains("remote_write"),
        "{health}"
    );
    a.stop().await;

    let rx = Receiver::start(vec![]).await;
    let mut o = fast(&rx.url);
    o["basic_auth"] = serde_json::json!({"username": "u", "password": "hunter2"});
    let a = agent(o);
    a.publish(cpu_batch(SystemTime::now(), 1e9));
    let got = rx.wait_for("a request", |g| !g.is_empty()).await;
    assert_eq!(got[0].headers["authorization"], "Basic dTpodW50ZXIy");
    let figures = format!("{:?}", a.health.reports()[0].1.figures());
    assert!(!figures.contains("hunter2"));
    a.stop().await;
}

#[tokio::test]
async fn disk_buffer_keeps_unsent_samples_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A receiver that is down (503 forever for the first agent).
    let down = Receiver::start(vec![(503, None); 1000]).await;
    let mut o = fast(&down.url);
    o["buffer"] = serde_json::json!({"type": "disk", "path": dir.path(), "max_size": "4MiB"});
    let a = agent(o.clone());
    let t0 = SystemTime::now() - Duration::from_secs(30);
    for i in 0..3u64 {
        a.publish(cpu_batch(t0 + Duration::from_secs(i), 1e9 * (i + 1) as f64));
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    down.wait_for("attempts", |g| g.len() >= 2).await;
    assert!(a.figure("vadvisor_remote_write_buffer_samples", None) > 0.0);
    assert!(
        a.figure(
            "vadvisor_remote_write_oldest_unsent_sample_age_seconds",
            None
        ) >= 25.0
    );
    a.stop().await;

    let up = Receiver::start(vec![]).await;
    o["url"] = serde_json::json!(up.url);
    let b = agent(o);
    let got = up
        .wait_for("the buffered rounds", |g| {
            g.iter()
                .flat_map(|r| &r.request.timeseries)
                .filter(|t| {
                    key(t, &[])
                        .starts_with("vm_cpu_time_seconds_total{dc=\"x\",host=\"h1\",name=\"one\"")
                })
                .count()
                >= 3
        })
        .await;
    let values: Vec<f64> = got
        .iter()
        .flat_map(|r| &r.request.timeseries)
        .filter(|t| {
            key(t, &[]).starts_with("vm_cpu_time_seconds_total{dc=\"x\",host=\"h1\",name=\"one\"")
        })
        .map(|t| t.samples[0].value)
        .collect();
    assert_eq!(values, vec![1.0, 2.0, 3.0]);
    b.stop().await;
}
