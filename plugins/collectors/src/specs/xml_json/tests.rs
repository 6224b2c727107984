//! Tests of the XML → JSON rules: vAdvisor's own example (reference §6) modulo the
//! documented differences, a lab-like fixture with everything vAdvisor lost, each rule
//! on its own, malformed input, and a mutation run that must never panic.

use serde_json::{json, Value};

use super::*;

const EXAMPLE_XML: &str = include_str!("../../../tests/fixtures/vadvisor-example.xml");
const EXAMPLE_JSON: &str = include_str!("../../../tests/fixtures/vadvisor-example.json");
const LAB_XML: &str = include_str!("../../../tests/fixtures/lab-domain.xml");
const LAB_JSON: &str = include_str!("../../../tests/fixtures/lab-domain.json");

fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

#[test]
fn vadvisor_example_matches_modulo_documented_differences() {
    let mut got = convert(EXAMPLE_XML).unwrap();
    let domain = got["domain"].as_object_mut().unwrap();
    // Difference 2: <clock>'s attributes are kept beside vAdvisor's list.
    assert_eq!(
        domain.remove("clock_attributes"),
        Some(json!({"offset": "utc"}))
    );
    // Difference 3: the `listen` attribute shadowed by the <listen> child is kept.
    let graphics = domain["devices"][1].as_object_mut().unwrap();
    assert_eq!(graphics.remove("@listen"), Some(json!("127.0.0.1")));
    // Everything else is exactly vAdvisor's output.
    assert_eq!(got, parse_json(EXAMPLE_JSON));
}

#[test]
fn lab_fixture_keeps_every_disk_boot_timer_and_namespace() {
    let got = convert(LAB_XML).unwrap();
    let want = parse_json(LAB_JSON);
    assert_eq!(
        got,
        want,
        "got:\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
    let devices = got["domain"]["devices"].as_array().unwrap();
    let disks: Vec<&Value> = devices.iter().filter(|d| d["family"] == "disk").collect();
    assert_eq!(disks.len(), 2);
    assert_eq!(
        got["domain"]["os"]["boot"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(got["domain"]["clock"].as_array().map(Vec::len), Some(3));
}

#[test]
fn integers_only_where_vadvisor_has_them() {
    let v = convert(
        "<domain id='3'><memory unit='KiB'> 1024 </memory><currentMemory>big</currentMemory>\
         <vcpu>2</vcpu><devices><controller index='x' port='7' startport='0' vram='9'/></devices></domain>",
    )
    .unwrap();
    let d = &v["domain"];
    assert_eq!(d["id"], json!("3"));
    assert_eq!(d["memory"]["value"], json!(1024));
    assert_eq!(d["currentMemory"]["value"], json!("big"));
    assert_eq!(d["vcpu"]["value"], json!("2"));
    let c = &d["devices"][0];
    assert_eq!(
        (c["index"].clone(), c["port"].clone()),
        (json!("x"), json!(7))
    );
    assert_eq!(
        (c["startport"].clone(), c["vram"].clone()),
        (json!(0), json!(9))
    );
}

#[test]
fn empty_elements_are_empty_objects_and_blank_text_is_ignored() {
    let v = convert("<domain>\n  <features>\n    <acpi/>\n  </features>\n  <x></x>\n</domain>")
        .unwrap();
    assert_eq!(v, json!({"domain": {"features": {"acpi": {}}, "x": {}}}));
}

#[test]
fn text_is_whole_across_entities_cdata_and_char_refs() {
    let v = convert("<d><t>a &amp; b &#x41;&#66;<![CDATA[ <c> ]]></t></d>").unwrap();
    assert_eq!(v["d"]["t"]["value"], json!("a & b AB <c> "));
}

#[test]
fn value_attribute_and_family_are_not_lost() {
    let v = convert(
        "<d><opt value='a'>text</opt><devices><disk family='x'><family/></disk></devices></d>",
    )
    .unwrap();
    assert_eq!(v["d"]["opt"], json!({"@value": "a", "value": "text"}));
    assert_eq!(
        v["d"]["devices"][0],
        json!({"family": "disk", "@family": {}})
    );
}

#[test]
fn repeated_devices_children_and_emulator_hoisting() {
    let v = convert(
        "<domain><devices><emulator>/e</emulator><disk><host name='a'/><host name='b'/></disk></devices></domain>",
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"domain": {"emulator": {"value": "/e"},
            "devices": [{"family": "disk", "host": [{"name": "a"}, {"name": "b"}]}]}})
    );
}

#[test]
fn namespaces_use_clark_notation_for_elements_and_attributes() {
    let v =
        convert("<d xmlns:a='urn:a'><a:x a:k='1' k='2'/><y xmlns='urn:b'><z/></y></d>").unwrap();
    assert_eq!(
        v,
        json!({"d": {"{urn:a}x": {"{urn:a}k": "1", "k": "2"}, "{urn:b}y": {"{urn:b}z": {}}}})
    );
}

#[test]
fn malformed_documents_are_errors() {
    for bad in [
        "",
        "   ",
        "not xml",
        "<domain>",
        "<domain></devices>",
        "<a/><b/>",
        "<a>x</a>trailing",
        "<a b='1' b='2'/>",
        "<p:a/>",
        "<a>&nope;</a>",
        "<a>&#0;</a>",
        "<a x=1/>",
    ] {
        assert!(convert(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
    assert!(convert(&deep).unwrap_err().0.contains("deeper"));
    let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
    assert!(convert(&ok).is_ok());
}

#[test]
fn mutated_documents_never_panic() {
    // xorshift: deterministic, no extra dependency.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = LAB_XML.as_bytes();
    let alphabet = b"<>/='\"&;#x:! abc\n]";
    for round in 0..3000 {
        let mut bytes = base.to_vec();
        for _ in 0..=(next() % 6) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 3 {
                0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = convert(&text).map_err(|e| assert!(!e.0.is_empty(), "round {round}"));
    }
}

#[test]
fn the_example_of_docs_api_md() {
    let xml = "<domain type='kvm' id='1'><name>debian8</name><memory unit='KiB'>1048576</memory>
 <os><type arch='x86_64' machine='pc-i440fx-2.4'>hvm</type><boot dev='hd'/><boot dev='cdrom'/></os>
 <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='hpet' present='no'/></clock>
 <devices><emulator>/usr/bin/qemu-kvm</emulator>
  <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
 </devices></domain>";
    let want = json!({"domain": {"type": "kvm", "id": "1", "name": {"value": "debian8"},
      "memory": {"unit": "KiB", "value": 1048576},
      "os": {"type": {"arch": "x86_64", "machine": "pc-i440fx-2.4", "value": "hvm"},
             "boot": [{"dev": "hd"}, {"dev": "cdrom"}]},
      "clock": [{"name": "rtc", "tickpolicy": "catchup"}, {"name": "hpet", "present": "no"}],
      "clock_attributes": {"offset": "utc"},
      "devices": [{"family": "graphics", "type": "vnc", "port": 5900, "autoport": "yes",
                   "@listen": "127.0.0.1", "listen": {"type": "address", "address": "127.0.0.1"}}],
      "emulator": {"value": "/usr/bin/qemu-kvm"}}});
    assert_eq!(convert(xml).unwrap(), want);
}
