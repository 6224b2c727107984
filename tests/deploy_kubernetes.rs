//! `deploy/kubernetes/`: the Namespace, DaemonSet and Service validate against the
//! Kubernetes OpenAPI schemas (PyPI `kubernetes-validate`, pinned, strict mode: unknown
//! fields are errors) for the oldest and newest Kubernetes versions we claim; the
//! ServiceMonitor validates against the Prometheus Operator's monitoring.coreos.com/v1
//! schema (npm `@kubernetes-models/prometheus-operator`, pinned); both validators are
//! shown to reject broken copies; and the objects fit together (selectors, port names,
//! probes on /healthz, the read-only libvirt socket, the job name the alert rules use).
//!
//! The validators are installed by `bash scripts/install-test-peers.sh` (pins in
//! `scripts/k8s-validate/`) into `$VADVISOR_PEERS_DIR/k8s-validate` (default
//! `/opt/vadvisor-test-peers`). Ignored by a plain `cargo test`; `scripts/test.sh` runs
//! them with `--include-ignored`, and they fail when a validator is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const K8S_VERSIONS: [&str; 2] = ["1.28", "1.37"];
const CORE: [&str; 3] = ["namespace.yaml", "daemonset.yaml", "service.yaml"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn manifest(file: &str) -> Value {
    let path = repo(&format!("deploy/kubernetes/{file}"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validators_dir() -> PathBuf {
    let peers =
        std::env::var("VADVISOR_PEERS_DIR").unwrap_or_else(|_| "/opt/vadvisor-test-peers".into());
    Path::new(&peers).join("k8s-validate")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubernetes-validate --strict` for every claimed version on `files`.
fn kubernetes_validate(files: &[PathBuf]) -> Output {
    let bin = validators_dir().join("venv/bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/install-test-peers.sh`",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--strict");
    for v in K8S_VERSIONS {
        cmd.args(["-k", v]);
    }
    cmd.args(files).output().expect("run kubernetes-validate")
}

/// The Prometheus Operator schema check on `objects`.
fn operator_validate(objects: &[Value]) -> Output {
    let modules = validators_dir().join("npm/node_modules");
    assert!(
        modules
            .join("@kubernetes-models/prometheus-operator/package.json")
            .exists(),
        "{} has no @kubernetes-models/prometheus-operator: run `bash scripts/install-test-peers.sh`",
        modules.display()
    );
    let mut child = Command::new("node")
        .arg(repo("scripts/k8s-validate/prometheus-operator.mjs"))
        .arg(&modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is missing: run `bash scripts/install-test-peers.sh`");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(objects).expect("json").as_bytes())
        .expect("write objects");
    child.wait_with_output().expect("node output")
}

/// `value` written as YAML-compatible JSON into `dir/name`.
fn write_copy(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json")).expect("write");
    path
}

#[test]
#[ignore = "needs kubernetes-validate: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn the_core_objects_validate_against_the_kubernetes_openapi_schema() {
    let files: Vec<PathBuf> = CORE
        .iter()
        .map(|f| repo(&format!("deploy/kubernetes/{f}")))
        .collect();
    let out = kubernetes_validate(&files);
    let report = text(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{report}");
    for f in CORE {
        for v in K8S_VERSIONS {
            assert!(
                report.lines().any(|l| l.starts_with(&format!(
                    "INFO {}",
                    repo("deploy/kubernetes").join(f).display()
                )) && l.contains("passed")
                    && l.ends_with(&format!("against version {v}"))),
                "{f} not validated against {v}:\n{report}"
            );
        }
    }
    assert!(
        !report.contains("WARN") && !report.contains("ERROR"),
        "{report}"
    );
}

#[test]
#[ignore = "needs kubernetes-validate: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn kubernetes_validate_rejects_broken_copies_of_the_daemonset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ds = manifest("daemonset.yaml");
    // An unknown (misspelt) field: strict mode reports it.
    let mut misspelt = ds.clone();
    let mount = &mut misspelt["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0];
    let ro = mount
        .as_object_mut()
        .expect("volume mount")
        .remove("readOnly")
        .expect("the libvirt socket is mounted readOnly");
    mount["readonly"] = ro;
    // A wrong type.
    let mut wrong_type = ds.clone();
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        json!("8181");
    // A required field missing.
    let mut no_selector = ds.clone();
    no_selector["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("selector");
    for (name, broken, expect) in [
        ("misspelt.yaml", misspelt, "readonly"),
        ("wrong-type.yaml", wrong_type, "is not of type 'integer'"),
        (
            "no-selector.yaml",
            no_selector,
            "'selector' is a required property",
        ),
    ] {
        let path = write_copy(dir.path(), name, &broken);
        let out = kubernetes_validate(&[path]);
        let report = text(&out);
        assert!(!out.status.success(), "{name} passed:\n{report}");
        assert!(
            report.contains(expect),
            "{name}: expected {expect:?}:\n{report}"
        );
    }
}

#[test]
#[ignore = "needs node + @kubernetes-models/prometheus-operator: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn the_servicemonitor_validates_against_the_prometheus_operator_schema() {
    let sm = manifest("servicemonitor.yaml");
    let out = operator_validate(std::slice::from_ref(&sm));
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.starts_with("ok ServiceMonitor/vadvisor"), "{report}");

    // Broken copies are rejected: a malformed duration, a numeric port name, a
    // relabel action that does not exist.
    let mut bad_interval = sm.clone();
    bad_interval["spec"]["endpoints"][0]["interval"] = json!("15 seconds");
    let mut numeric_port = sm.clone();
    numeric_port["spec"]["endpoints"][0]["port"] = json!(8181);
    let mut bad_action = sm.clone();
    bad_action["spec"]["endpoints"][0]["relabelings"][0]["action"] = json!("rename");
    for (what, broken, expect) in [
        ("interval", bad_interval, "interval must match pattern"),
        ("port", numeric_port, "port must be string"),
        (
            "action",
            bad_action,
            "action must be equal to one of the allowed values",
        ),
    ] {
        let out = operator_validate(&[broken]);
        let report = text(&out);
        assert!(!out.status.success(), "broken {what} passed:\n{report}");
        assert!(
            report.contains(expect),
            "broken {what}: expected {expect:?}:\n{report}"
        );
    }
}

/// Not gated: needs no tool. The objects reference each other correctly.
#[test]
fn the_kubernetes_objects_fit_together() {
    let ns = manifest("namespace.yaml");
    let ds = manifest("daemonset.yaml");
    let svc = manifest("service.yaml");
    let sm = manifest("servicemonitor.yaml");
    let namespace = ns["metadata"]["name"].as_str().expect("namespace name");
    for o in [&ds, &svc, &sm] {
        assert_eq!(o["metadata"]["namespace"], namespace, "{}", o["kind"]);
    }

    // DaemonSet: its selector matches its pods; the Service selects those pods.
    let pod = &ds["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    let matches = |selector: &Value| {
        selector
            .as_object()
            .expect("selector")
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(matches(&ds["spec"]["selector"]["matchLabels"]));
    assert!(matches(&svc["spec"]["selector"]));

    // The container's port, probes and the Service's port.
    let c = &pod["spec"]["containers"][0];
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"], 8181, "the agent's default port");
    let port_name = port["name"].as_str().expect("port name");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port_name, "{probe}");
    }

    // The libvirt socket: read-only, the host's read-only socket, checked to be a socket.
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    let sock = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/run/libvirt/libvirt-sock-ro")
        .expect("the libvirt read-only socket is mounted");
    assert_eq!(sock["readOnly"], true);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == sock["name"])
        .expect("its volume");
    assert_eq!(
        volume["hostPath"]["path"],
        "/var/run/libvirt/libvirt-sock-ro"
    );
    assert_eq!(volume["hostPath"]["type"], "Socket");
    // The events database survives pod restarts (default path /var/lib/vadvisor).
    assert!(mounts.iter().any(|m| m["mountPath"] == "/var/lib/vadvisor"));

    // Hardening and resources.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }

    // ServiceMonitor -> Service: labels, namespace, port name; its job label is the
    // Service's `app.kubernetes.io/name`, which must be the job the alert rules select.
    let svc_labels = svc["metadata"]["labels"]
        .as_object()
        .expect("service labels");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("servicemonitor selector")
    {
        assert_eq!(svc_labels.get(k), Some(v), "ServiceMonitor selects {k}");
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([namespace])
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let job_label = sm["spec"]["jobLabel"].as_str().expect("jobLabel");
    let job = svc_labels
        .get(job_label)
        .and_then(Value::as_str)
        .expect("the Service has the job label");
    let rules =
        std::fs::read_to_string(repo("deploy/prometheus/vadvisor-rules.yml")).expect("alert rules");
    assert!(
        rules.contains(&format!("job=\"{job}\"")),
        "the alert rules do not select job=\"{job}\""
    );
}
