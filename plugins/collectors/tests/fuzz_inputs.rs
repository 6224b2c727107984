//! Property tests: the XML → JSON converter and every built-in collector never panic on
//! arbitrary input — domain XML that is malformed, and statistics with arbitrary keys,
//! types, indices and gaps (as a broken driver or a racing domain could produce).

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vadvisor_api::{
    CollectContext, CollectorPlugin, FakeHypervisor, Hypervisor, Registry, StatsGroups, TypedValue,
};
use vadvisor_collectors::specs::xml_json;

fn typed_value() -> impl Strategy<Value = TypedValue> {
    prop_oneof![
        any::<i32>().prop_map(TypedValue::Int),
        any::<u32>().prop_map(TypedValue::UInt),
        any::<i64>().prop_map(TypedValue::LLong),
        any::<u64>().prop_map(TypedValue::ULLong),
        any::<f64>().prop_map(TypedValue::Double),
        any::<bool>().prop_map(TypedValue::Boolean),
        ".{0,12}".prop_map(TypedValue::String),
    ]
}

fn stats_key() -> impl Strategy<Value = String> {
    let group = prop::sample::select(vec![
        "state", "cpu", "balloon", "vcpu", "net", "block", "perf", "x",
    ]);
    let index = prop::option::of(prop_oneof![
        Just("0".to_string()),
        Just("4294967296".to_string()),
        "[0-9]{1,3}",
        ".{0,3}"
    ]);
    let field = prop::sample::select(vec![
        "time",
        "user",
        "system",
        "state",
        "reason",
        "current",
        "maximum",
        "name",
        "path",
        "count",
        "rd.bytes",
        "wr.reqs",
        "rx.drop",
        "tx.drop",
        "capacity",
        "wait",
        "delay",
        "last-update",
        "",
        ".",
    ]);
    (group, index, field).prop_map(|(g, i, f)| match i {
        Some(i) => format!("{g}.{i}.{f}"),
        None => format!("{g}.{f}"),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn xml_converter_never_panics(text in ".{0,300}") {
        let _ = xml_json::convert(&text);
        let _ = xml_json::convert(&format!("<domain>{text}</domain>"));
    }

    #[test]
    fn collectors_never_panic_on_arbitrary_statistics(
        params in prop::collection::vec((stats_key(), typed_value()), 0..40)
    ) {
        let hv = Arc::new(FakeHypervisor::new());
        let refs: Vec<(&str, TypedValue)> = params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        hv.put_domain("u1", "vm1", &refs);
        let mut registry = Registry::new();
        vadvisor_collectors::register_all(&mut registry);
        let rt = runtime();
        for kind in ["cpu", "memory", "block", "net"] {
            let factory = registry.collector(kind).expect("registered");
            let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
            let cx = vadvisor_api::CollectorBuildContext { id: kind.into(), hypervisor: dyn_hv.clone() };
            let Ok(CollectorPlugin::Polled(c)) = factory.build(&Default::default(), &cx) else { panic!("{kind}") };
            let run = CollectContext::new(dyn_hv, c.stats_groups() | StatsGroups::STATE, Instant::now() + Duration::from_secs(1));
            let out = rt.block_on(c.collect(&run)).expect("collect");
            prop_assert_eq!(out.domains.len(), 1);
            for s in &out.domains[0].samples {
                prop_assert!((s.metric as usize) < c.metrics().len());
                prop_assert_eq!(s.labels.len(), c.metrics()[s.metric as usize].labels.len());
            }
        }
    }
}
