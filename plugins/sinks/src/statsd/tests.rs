//! The sink as a whole: registered through the [`Registry`], fed through a real [`Bus`],
//! sending real datagrams to a `tokio::net::UdpSocket` on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use vadvisor_api::{
    Batch, Bus, CancellationToken, DomainRef, DomainSamples, DomainState, FakeHypervisor, Health,
    HttpRoutes, LiveCollect, MetricDesc, OptionError, PluginOptions, Record, Registry, Sample,
    Sink, SinkBuildContext, SinkInput,
};
use vadvisor_collectors::{cpu, net};

struct NoLive;

#[vadvisor_api::async_trait]
impl LiveCollect for NoLive {
    async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String> {
        Err("not in tests".into())
    }
}

fn build(options: serde_json::Value) -> Result<Box<dyn Sink>, Vec<OptionError>> {
    let mut registry = Registry::new();
    super::register(&mut registry);
    let factory = registry.sink("statsd").expect("registered as `statsd`");
    let mut http = HttpRoutes::new();
    let mut cx = SinkBuildContext {
        id: "statsd/test".into(),
        hypervisor: Arc::new(FakeHypervisor::new()),
        http: &mut http,
        live: Arc::new(NoLive),
        health: Health::new().into(),
    };
    factory.build(&PluginOptions::new(options), &mut cx)
}

/// A running sink, its bus and a receiver of what it sends.
struct Harness {
    bus: Bus,
    rx: UdpSocket,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Harness {
    async fn start(extra: serde_json::Value) -> Harness {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind receiver");
        let port = rx.local_addr().expect("addr").port();
        let mut options =
            serde_json::json!({"host": "127.0.0.1", "port": port, "interval": "100ms"});
        if let (Some(o), serde_json::Value::Object(e)) = (options.as_object_mut(), extra) {
            o.extend(e);
        }
        let sink = build(options).expect("valid options");
        let bus = Bus::new(64);
        let shutdown = CancellationToken::new();
        let input = SinkInput {
            id: "statsd/test".into(),
            records: bus.subscribe(Arc::new(Default::default())),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(sink.run(input));
        Harness {
            bus,
            rx,
            shutdown,
            task,
        }
    }

    fn publish(&self, batch: Batch) {
        self.bus.publish(Record::Batch(Arc::new(batch)));
    }

    /// Datagrams received until `until` holds for the lines so far (or 3 s pass).
    async fn datagrams_until(&self, until: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !until(&lines(&got)) {
            match tokio::time::timeout_at(deadline, self.rx.recv(&mut buf)).await {
                Ok(Ok(n)) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                _ => break,
            }
        }
        got
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the sink stops promptly and cleanly: {result:?}"
        );
    }
}

fn lines(datagrams: &[String]) -> Vec<String> {
    datagrams
        .iter()
        .flat_map(|d| d.split('\n'))
        .map(str::to_string)
        .collect()
}

fn has(line: &str) -> impl Fn(&[String]) -> bool + '_ {
    move |ls: &[String]| ls.iter().any(|l| l == line)
}

fn idx(metrics: &[MetricDesc], name: &str) -> u16 {
    metrics.iter().position(|m| m.name == name).expect("metric") as u16
}

fn uuid(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

/// `n` running VMs, each with CPU time `cpu_ns` and one interface `vnet.0` receiving `rx`.
fn vms(n: usize, cpu_ns: f64, rx: f64) -> (Batch, Batch) {
    let domains = |f: &dyn Fn(&mut DomainSamples)| -> Vec<DomainSamples> {
        (0..n)
            .map(|i| {
                let mut d = DomainSamples::new(DomainRef::new(uuid(i), format!("vm {i}")));
                d.state = Some(DomainState::new(DomainState::RUNNING, 1));
                f(&mut d);
                d
            })
            .collect()
    };
    let at = SystemTime::now();
    let cpu_batch = Batch {
        collector: "cpu".into(),
        metrics: Arc::from(cpu::METRICS),
        at,
        domains: domains(&|d| {
            d.samples.push(Sample::new(cpu::CPU_TIME, cpu_ns));
            d.samples.push(Sample::labelled(
                cpu::VCPU_TIME,
                vec!["0".into()],
                cpu_ns / 2.0,
            ));
            d.samples
                .push(Sample::labelled(cpu::VCPU_STATE, vec!["0".into()], 1.0));
        }),
        host: vec![],
    };
    let rx_bytes = idx(net::METRICS, "vm_network_receive_bytes_total");
    let net_batch = Batch {
        collector: "net".into(),
        metrics: Arc::from(net::METRICS),
        at,
        domains: domains(&|d| {
            d.samples
                .push(Sample::labelled(rx_bytes, vec!["vnet.0".into()], rx))
        }),
        host: vec![],
    };
    (cpu_batch, net_batch)
}

#[test]
fn option_errors_come_from_the_factory() {
    let err = |v| build(v).err().expect("an error");
    assert_eq!(err(serde_json::json!({}))[0].path, vec!["host"]);
    assert_eq!(err(serde_json::json!({"host": ""}))[0].path, vec!["host"]);
    assert_eq!(
        err(serde_json::json!({"host": "h", "bogus": 1}))[0].path,
        vec!["bogus"]
    );
    assert!(build(serde_json::json!({"host": "h", "port": 8125, "interval": "15s"})).is_ok());
}

#[tokio::test]
async fn sends_vadvisor_names_in_gauge_mode() {
    let h = Harness::start(serde_json::json!({})).await;
    let (cpu_b, net_b) = vms(1, 123_456_789_012.0, 1000.0);
    h.publish(cpu_b);
    h.publish(net_b);
    let u = uuid(0);
    let want = [
        format!("vm.{u}.up:1|g"),
        format!("vm.{u}.cpu.total:123456.789012|g"),
        format!("vm.{u}.0.vcpu.total:61728.394506|g"),
        format!("vm.{u}.vnet_0.network.receive.bytes.total:1000|g"),
    ];
    let got = lines(
        &h.datagrams_until(|ls| want.iter().all(|w| has(w)(ls)))
            .await,
    );
    for w in &want {
        assert!(got.contains(w), "missing {w} in {got:?}");
    }
    assert!(
        !got.iter()
            .any(|l| l.contains("vcpu_state") || l.contains("state")),
        "no StatsD name, not sent: {got:?}"
    );
    assert!(got.iter().all(|l| !l.contains("|c")), "{got:?}");

    h.stop().await;
}

#[tokio::test]
async fn shutdown_sends_once_more() {
    let h = Harness::start(serde_json::json!({"interval": "1h"})).await;
    let (cpu_b, _) = vms(1, 1e9, 1.0);
    h.publish(cpu_b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.shutdown.cancel();
    let want = format!("vm.{}.up:1|g", uuid(0));
    let got = lines(&h.datagrams_until(has(&want)).await);
    assert!(
        got.contains(&want),
        "a last send on shutdown, long before the interval: {got:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn delta_mode_sends_increases_as_counters() {
    let h = Harness::start(serde_json::json!({"counters": "delta", "interval": "150ms"})).await;
    let u = uuid(0);
    let (c1, n1) = vms(1, 5e9, 1000.0);
    h.publish(c1);
    h.publish(n1);
    // First sends: only gauges (up), no counters.
    let first = lines(&h.datagrams_until(has(&format!("vm.{u}.up:1|g"))).await);
    assert!(
        first
            .iter()
            .all(|l| !l.ends_with("|c") && !l.contains("cpu.total")),
        "{first:?}"
    );
    let (c2, n2) = vms(1, 7.5e9, 1600.0);
    h.publish(c2);
    h.publish(n2);
    let want_cpu = format!("vm.{u}.cpu.total:2500|c");
    let want_rx = format!("vm.{u}.vnet_0.network.receive.bytes.total:600|c");
    let got = lines(
        &h.datagrams_until(|ls| has(&want_cpu)(ls) && has(&want_rx)(ls))
            .await,
    );
    assert!(got.contains(&want_cpu) && got.contains(&want_rx), "{got:?}");
    // A restart (totals went down) sends no counter for it.
    let (c3, n3) = vms(1, 1e9, 10.0);
    h.publish(c3);
    h.publish(n3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut buf = vec![0u8; 65_536];
    while tokio::time::timeout(Duration::from_millis(10), h.rx.recv(&mut buf))
        .await
        .is_ok()
    {}
    let after = lines(&h.datagrams_until(has(&format!("vm.{u}.up:1|g"))).await);
    for l in after.iter().filter(|l| l.ends_with("|c")) {
        assert!(l.ends_with(":0|c"), "no delta across a restart: {after:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn dogstatsd_tags_over_udp() {
    let h = Harness::start(serde_json::json!({"tags": "dogstatsd", "prefix": "virt"})).await;
    let (cpu_b, net_b) = vms(1, 2e6, 5.0);
    h.publish(cpu_b);
    h.publish(net_b);
    let u = uuid(0);
    let want = format!("virt.network.receive.bytes.total:5|g|#uuid:{u},name:vm_0,interface:vnet.0");
    let got = lines(&h.datagrams_until(has(&want)).await);
    assert!(got.contains(&want), "{got:?}");
    assert!(
        got.contains(&format!("virt.up:1|g|#uuid:{u},name:vm_0")),
        "{got:?}"
    );
    assert!(
        got.contains(&format!("virt.vcpu.total:1|g|#uuid:{u},name:vm_0,vcpu:0")),
        "{got:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn many_vms_are_batched_within_the_packet_limit() {
    let h = Harness::start(serde_json::json!({"max_packet_size": 300})).await;
    let (cpu_b, net_b) = vms(40, 1e9, 1.0);
    h.publish(cpu_b);
    h.publish(net_b);
    // One whole send: 40 VMs × 4 lines.
    let complete = |ls: &[String]| {
        (0..40).all(|i| {
            ls.iter()
                .any(|l| l.starts_with(&format!("vm.{}.vnet_0", uuid(i))))
        })
    };
    let datagrams = h.datagrams_until(complete).await;
    assert!(complete(&lines(&datagrams)), "everything arrived");
    assert!(
        datagrams.len() > 10,
        "several datagrams: {}",
        datagrams.len()
    );
    for d in &datagrams {
        assert!(d.len() <= 300, "datagram of {} bytes", d.len());
        assert!(!d.is_empty() && !d.ends_with('\n'));
        for line in d.split('\n') {
            let (name, rest) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(name.starts_with("vm."), "{line:?}");
            let (value, kind) = rest
                .split_once('|')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(value.parse::<f64>().is_ok() && kind == "g", "{line:?}");
        }
    }
    // Datagrams are filled, not one line each.
    let bytes: usize = datagrams.iter().map(String::len).sum();
    assert!(
        bytes / datagrams.len() > 150,
        "{} datagrams for {bytes} bytes",
        datagrams.len()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_vanished_vm_gets_up_zero() {
    let h = Harness::start(serde_json::json!({})).await;
    let (cpu_b, _) = vms(2, 1e9, 1.0);
    h.publish(cpu_b);
    let gone = uuid(1);
    h.datagrams_until(has(&format!("vm.{gone}.up:1|g"))).await;
    let (cpu_b, _) = vms(1, 1e9, 1.0);
    h.publish(cpu_b);
    let got = lines(&h.datagrams_until(has(&format!("vm.{gone}.up:0|g"))).await);
    assert!(got.contains(&format!("vm.{gone}.up:0|g")), "{got:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_closed_port_or_unknown_host_never_stops_the_sink() {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    for host in ["127.0.0.1", "no-such-host.invalid"] {
        let sink = build(serde_json::json!({"host": host, "port": port, "interval": "50ms"}))
            .expect("valid");
        let bus = Bus::new(8);
        let shutdown = CancellationToken::new();
        let input = SinkInput {
            id: "s".into(),
            records: bus.subscribe(Arc::new(Default::default())),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(sink.run(input));
        let (cpu_b, _) = vms(3, 1e9, 1.0);
        bus.publish(Record::Batch(Arc::new(cpu_b)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!task.is_finished(), "{host}: still running");
        shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(3), task).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "{host}: {r:?}");
    }
}
