//! VM metadata → labels on `vm_info` (never on other series). The `metadata_labels`
//! option maps label names to paths into the domain XML (relative to `<domain>`, with
//! namespace prefixes declared in `namespaces`), e.g. OpenStack Nova's
//! `metadata/nova:instance/nova:owner/nova:project` or `…/nova:flavor/@name`. The paths
//! are evaluated on the `specs` collector's records (the XML as JSON, namespaced names in
//! Clark notation `{uri}local`), so labels follow every spec refresh — including the one
//! libvirt's metadata-change event triggers. Cardinality control: only the mapped (and,
//! with `allow`, allowed) label names exist, and every value is cut to
//! `max_value_length` characters. A path that matches nothing gives no label.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use vadvisor_api::OptionError;

/// The `metadata_labels` option of the `prometheus` sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataLabels {
    /// Namespace prefixes used in `labels` paths → namespace URIs.
    pub namespaces: BTreeMap<String, String>,
    /// Label name → path (`a/b:c/@attr`; a leading `/domain/` is optional).
    pub labels: BTreeMap<String, String>,
    /// When set, only these of the mapped label names are exported.
    pub allow: Option<Vec<String>>,
    /// Longer values are cut to this many characters.
    pub max_value_length: usize,
}

impl Default for MetadataLabels {
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            labels: BTreeMap::new(),
            allow: None,
            max_value_length: 64,
        }
    }
}

/// One compiled label: JSON keys from `<domain>` down, and the attribute, if any.
#[derive(Clone, Debug, PartialEq)]
struct Compiled {
    label: String,
    keys: Vec<String>,
    attribute: Option<String>,
}

/// The compiled option, ready to evaluate specs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelPaths {
    labels: Vec<Compiled>,
    max_len: usize,
}

const RESERVED: &[&str] = &["uuid", "name", "instance", "job"];

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn valid_xml_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl MetadataLabels {
    /// Checks the option and compiles its paths.
    pub fn compile(&self) -> Result<LabelPaths, OptionError> {
        if !(1..=1024).contains(&self.max_value_length) {
            return Err(OptionError::at(
                &["metadata_labels", "max_value_length"],
                "must be between 1 and 1024",
            ));
        }
        if let Some(allow) = &self.allow {
            for a in allow {
                if !self.labels.contains_key(a) {
                    return Err(OptionError::at(
                        &["metadata_labels", "allow"],
                        format!("`{a}` is not one of the mapped labels ({})", self.mapped()),
                    ));
                }
            }
        }
        let mut labels = Vec::new();
        for (label, path) in &self.labels {
            let at = ["metadata_labels", "labels", label.as_str()];
            if !valid_label(label) || RESERVED.contains(&label.as_str()) {
                return Err(OptionError::at(
                    &at,
                    format!(
                        "`{label}` is not a usable label name (letters, digits, `_`; not {})",
                        RESERVED.join(", ")
                    ),
                ));
            }
            if self.allow.as_ref().is_some_and(|a| !a.contains(label)) {
                continue;
            }
            let (keys, attribute) = self
                .parse_path(path)
                .map_err(|e| OptionError::at(&at, format!("path `{path}`: {e}")))?;
            labels.push(Compiled {
                label: label.clone(),
                keys,
                attribute,
            });
        }
        Ok(LabelPaths {
            labels,
            max_len: self.max_value_length,
        })
    }

    fn mapped(&self) -> String {
        self.labels.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    fn name(&self, part: &str) -> Result<String, String> {
        match part.split_once(':') {
            Some((prefix, local)) => {
                let uri = self.namespaces.get(prefix).ok_or_else(|| {
                    format!("namespace prefix `{prefix}` is not declared in `namespaces`")
                })?;
                if !valid_xml_name(local) {
                    return Err(format!("`{part}` is not an element name"));
                }
                Ok(format!("{{{uri}}}{local}"))
            }
            None if valid_xml_name(part) => Ok(part.to_string()),
            None => Err(format!("`{part}` is not an element name")),
        }
    }

    fn parse_path(&self, path: &str) -> Result<(Vec<String>, Option<String>), String> {
        let path = path.trim();
        let path = path
            .strip_prefix("/domain/")
            .or_else(|| path.strip_prefix('/'))
            .unwrap_or(path);
        let mut keys = Vec::new();
        let mut attribute = None;
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if let Some(attr) = part.strip_prefix('@') {
                if i + 1 != parts.len() {
                    return Err("an attribute (`@name`) must come last".into());
                }
                attribute = Some(self.name(attr)?);
            } else {
                keys.push(self.name(part)?);
            }
        }
        if keys.is_empty() {
            return Err("names no element".into());
        }
        Ok((keys, attribute))
    }
}

/// The first element of a repeated one.
fn first(v: &Value) -> &Value {
    match v {
        Value::Array(items) => items.first().unwrap_or(&Value::Null),
        other => other,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl LabelPaths {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels of one domain's spec (`{"domain": {...}}`), sorted by name.
    pub fn extract(&self, spec: &Value) -> Vec<(String, String)> {
        let Some(domain) = spec.get("domain") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in &self.labels {
            let mut node = first(domain);
            for k in &c.keys {
                node = first(node.get(k).unwrap_or(&Value::Null));
            }
            let value = match &c.attribute {
                Some(a) => node
                    .get(format!("@{a}"))
                    .or_else(|| node.get(a))
                    .and_then(text),
                None => node.get("value").and_then(text).or_else(|| text(node)),
            };
            if let Some(v) = value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                out.push((c.label.clone(), v.chars().take(self.max_len).collect()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOVA: &str = "http://openstack.org/xmlns/libvirt/nova/1.1";

    fn nova() -> MetadataLabels {
        MetadataLabels {
            namespaces: BTreeMap::from([("nova".into(), NOVA.into())]),
            labels: BTreeMap::from([
                (
                    "display_name".into(),
                    "metadata/nova:instance/nova:name".into(),
                ),
                (
                    "project".into(),
                    "/domain/metadata/nova:instance/nova:owner/nova:project".into(),
                ),
                (
                    "project_id".into(),
                    "metadata/nova:instance/nova:owner/nova:project/@uuid".into(),
                ),
                (
                    "flavor".into(),
                    "metadata/nova:instance/nova:flavor/@name".into(),
                ),
                ("title".into(), "title".into()),
            ]),
            allow: None,
            max_value_length: 8,
        }
    }

    fn spec() -> Value {
        let k = |l: &str| format!("{{{NOVA}}}{l}");
        json!({"domain": {
            "title": {"value": "a title longer than eight"},
            "metadata": {
                k("instance"): {
                    k("name"): {"value": "web-1"},
                    k("owner"): {k("project"): [{"uuid": "p-1", "value": "demo"}, {"value": "x"}]},
                    k("flavor"): {"name": "m1.tiny", k("memory"): {"value": 512}}
                }
            }
        }})
    }

    #[test]
    fn nova_style_paths_give_labels_cut_to_the_cap() {
        let paths = nova().compile().expect("valid");
        let got = paths.extract(&spec());
        assert_eq!(
            got,
            vec![
                ("display_name".to_string(), "web-1".to_string()),
                ("flavor".to_string(), "m1.tiny".to_string()),
                ("project".to_string(), "demo".to_string()),
                ("project_id".to_string(), "p-1".to_string()),
                ("title".to_string(), "a title ".to_string()),
            ]
        );
        // Nothing matches: no labels, no panic.
        assert!(paths.extract(&json!({"domain": {}})).is_empty());
        assert!(paths.extract(&json!([])).is_empty());
    }

    #[test]
    fn allow_list_and_validation() {
        let mut o = nova();
        o.allow = Some(vec!["project".into()]);
        let got = o.compile().expect("valid").extract(&spec());
        assert_eq!(got, vec![("project".to_string(), "demo".to_string())]);

        let mut o = nova();
        o.allow = Some(vec!["nope".into()]);
        assert!(o
            .compile()
            .unwrap_err()
            .to_string()
            .contains("not one of the mapped"));
        let mut o = nova();
        o.labels.insert("uuid".into(), "title".into());
        assert!(o.compile().is_err(), "reserved label");
        let mut o = nova();
        o.labels.insert("bad-name".into(), "title".into());
        assert!(o.compile().is_err());
        let mut o = nova();
        o.labels.insert("x".into(), "metadata/ovirt:vm".into());
        assert!(o
            .compile()
            .unwrap_err()
            .to_string()
            .contains("`ovirt` is not declared"));
        let mut o = nova();
        o.labels.insert("x".into(), "@name/title".into());
        assert!(o.compile().is_err(), "attribute must come last");
        let mut o = nova();
        o.max_value_length = 0;
        assert!(o.compile().is_err());
        assert!(MetadataLabels::default()
            .compile()
            .expect("empty is fine")
            .is_empty());
    }
}
