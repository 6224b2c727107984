//! Black-box tests of `/api/v1.0/specs` through the real agent against libvirt's
//! `test:///default` driver (one running domain, `test`): the `specs` collector lists
//! the domains and converts their XML, the `rest` sink serves the cache.

mod common;

use std::time::Duration;

use common::{wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: test:///default\nhttp:\n  listen: {listen}\ncollectors:\n  specs:\n    refresh: 2s\n\
                      sinks:\n  rest: {}\n";

#[test]
fn specs_of_the_test_driver_domain() {
    let agent = Agent::start(CONFIG);
    let list = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/specs/");
        v.as_array().is_some_and(|a| !a.is_empty()).then_some(v)
    })
    .expect("the running `test` domain is listed within 10 s");
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1, "{list:?}");
    let domain = &list[0]["domain"];
    assert_eq!(domain["name"]["value"], "test");
    assert!(domain["devices"].is_array(), "{domain}");
    assert!(domain["memory"]["value"].is_u64(), "{domain}");

    // By name, by UUID in canonical, upper-case and undashed spellings.
    let uuid = domain["uuid"]["value"].as_str().expect("uuid").to_string();
    for id in [
        "test".to_string(),
        uuid.clone(),
        uuid.to_uppercase(),
        uuid.replace('-', ""),
    ] {
        let one = agent.get_json(&format!("/api/v1.0/specs/{id}"));
        assert_eq!(one["domain"]["name"]["value"], "test", "{id}");
    }

    let r = agent.get("/api/v1.0/specs/no-such-domain").expect("GET");
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().expect("JSON 404");
    assert_eq!(v["status"], 404);

    let r = agent.get("/api/v1.0/specs?x=1").expect("GET");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/api/v1.0/specs/?x=1");
}
