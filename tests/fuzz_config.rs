//! Property tests: the config loader never panics, whatever the file holds, and
//! always answers with a config or located errors (line ≥ 1).

use proptest::prelude::*;
use vadvisor::app;
use vadvisor::cli::Args;

fn check(text: &str) {
    let registry = vadvisor::builtins::registry();
    match app::load(text, "fuzz.yaml", &registry, &Args::default()) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.diagnostics.is_empty());
            for d in &errors.diagnostics {
                assert!(!d.message.is_empty());
            }
        }
    }
}

/// YAML-shaped text built from the config's own vocabulary, so the generator reaches
/// deep into the loader (sections, instances, core keys, plugin options).
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "libvirt",
        "http",
        "collectors",
        "sinks",
        "uri",
        "listen",
        "cpu",
        "memory",
        "block",
        "net",
        "rest",
        "statsd",
        "statsd/a",
        "prometheus",
        "events",
        "specs",
        "interval",
        "timeout",
        "enabled",
        "host",
        "port",
        "retention",
        "max_samples",
        "path",
        "per_vcpu",
        "refresh",
        "web_config_file",
        "x",
        "cpu/",
    ]);
    let scalar = prop::sample::select(vec![
        "1s",
        "0s",
        "-1",
        "8125",
        "true",
        "null",
        "~",
        "[]",
        "{}",
        "\"\"",
        "0.0.0.0:8181",
        "qemu:///system",
        "99999999999999999999",
        "1e400",
        "'a: b'",
        "&a x",
        "*a",
        "!!binary x",
        "10m",
        "1ms",
    ]);
    let line = (0usize..4, key, prop::option::of(scalar)).prop_map(|(indent, k, v)| match v {
        Some(v) => format!("{}{k}: {v}", "  ".repeat(indent)),
        None => format!("{}{k}:", "  ".repeat(indent)),
    });
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn loader_never_panics_on_config_shaped_yaml(text in yamlish()) {
        check(&text);
    }
}

#[test]
fn loader_survives_hostile_documents() {
    for text in [
        "a: &a [*a]",
        "&a a: *a",
        "- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -",
        "? [1, 2]\n: 3",
        "collectors: !!map {cpu: {interval: !!int 5}}",
        "\u{feff}sinks: {}",
        "sinks:\n\trest: {}",
        &"[".repeat(10_000),
        &format!(
            "collectors:\n{}",
            (0..2000)
                .map(|i| format!("  cpu/c{i}: {{}}\n"))
                .collect::<String>()
        ),
    ] {
        check(text);
    }
}
