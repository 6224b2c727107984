//! StatsD series names, as vAdvisor forms them: `<uuid>.<metric>` for a per-VM metric,
//! `<uuid>.<first label value>.<metric>` for a per-device one (interface, disk, vCPU),
//! `host[.<first label value>].<metric>` for host-level samples — or, with DogStatsD
//! tags, `<metric>` plus `uuid`, `name` and label tags. The prefix is added by the
//! encoder. Every part is sanitised so that no value can break the line format.

use serde::Deserialize;
use vadvisor_api::DomainRef;

/// How labels and the domain identity are carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagStyle {
    /// Folded into the name: `<prefix>.<uuid>[.<label>].<metric>` (vAdvisor's names).
    #[default]
    None,
    /// DogStatsD tags: `<prefix>.<metric>|#uuid:…,name:…,<label>:<value>`.
    Dogstatsd,
}

/// A series: its name without the prefix, and its DogStatsD tags (empty without tags).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId {
    pub key: String,
    pub tags: Vec<(&'static str, String)>,
}

/// One name part: ASCII letters, digits, `_` and `-` are kept, everything else (`.`, `:`,
/// `|`, `@`, `#`, `/`, whitespace, non-ASCII, …) becomes `_`; an empty part becomes `_`.
pub fn sanitize_part(part: &str) -> String {
    if part.is_empty() {
        return "_".into();
    }
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A dotted path (a declared StatsD name): each segment sanitised, the dots kept.
pub fn sanitize_path(path: &str) -> String {
    path.split('.')
        .map(sanitize_part)
        .collect::<Vec<_>>()
        .join(".")
}

/// A DogStatsD tag value: the separators of the line format (`,`, `|`, `#`, `@`),
/// whitespace and control characters become `_`; `:`, `.`, `/` are allowed in values.
pub fn sanitize_tag(value: &str) -> String {
    if value.is_empty() {
        return "_".into();
    }
    value
        .chars()
        .map(|c| {
            if matches!(c, ',' | '|' | '#' | '@') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The configured prefix: empty, or dot-separated words of `[A-Za-z0-9_-]`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty()
        || prefix
            .split('.')
            .all(|p| !p.is_empty() && sanitize_part(p) == p)
    {
        Ok(())
    } else {
        Err(format!("`{prefix}`: use dot-separated words of letters, digits, `_` and `-` (or an empty prefix)"))
    }
}

/// Names series for one tag style.
#[derive(Clone, Copy, Debug)]
pub struct Namer {
    pub style: TagStyle,
}

impl Namer {
    /// A per-VM sample of a metric whose StatsD name is `metric`.
    pub fn domain(
        &self,
        domain: &DomainRef,
        metric: &str,
        labels: &[&'static str],
        values: &[impl AsRef<str>],
    ) -> SeriesId {
        match self.style {
            TagStyle::None => {
                let mut key = sanitize_part(&domain.uuid);
                if let Some(first) = values.first() {
                    key.push('.');
                    key.push_str(&sanitize_part(first.as_ref()));
                }
                key.push('.');
                key.push_str(&sanitize_path(metric));
                SeriesId {
                    key,
                    tags: Vec::new(),
                }
            }
            TagStyle::Dogstatsd => {
                let mut tags = vec![
                    ("uuid", sanitize_tag(&domain.uuid)),
                    ("name", sanitize_tag(&domain.name)),
                ];
                tags.extend(label_tags(labels, values));
                SeriesId {
                    key: sanitize_path(metric),
                    tags,
                }
            }
        }
    }

    /// A host-level sample: `host[.<first label value>].<metric>`.
    pub fn host(
        &self,
        metric: &str,
        labels: &[&'static str],
        values: &[impl AsRef<str>],
    ) -> SeriesId {
        let mut key = String::from("host");
        let tags = match self.style {
            TagStyle::None => {
                if let Some(first) = values.first() {
                    key.push('.');
                    key.push_str(&sanitize_part(first.as_ref()));
                }
                Vec::new()
            }
            TagStyle::Dogstatsd => label_tags(labels, values).collect(),
        };
        key.push('.');
        key.push_str(&sanitize_path(metric));
        SeriesId { key, tags }
    }

    /// The `up` gauge of a VM.
    pub fn up(&self, domain: &DomainRef) -> SeriesId {
        self.domain(domain, "up", &[], &[] as &[&str])
    }
}

fn label_tags<'a>(
    labels: &'a [&'static str],
    values: &'a [impl AsRef<str>],
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    labels
        .iter()
        .zip(values)
        .map(|(l, v)| (*l, sanitize_tag(v.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "eb9750b3-82e1-4afd-8a00-5efd63a36832";

    fn dom() -> DomainRef {
        DomainRef::new(UUID, "web 1|prod")
    }

    #[test]
    fn vadvisor_names_per_vm_and_per_device() {
        let n = Namer {
            style: TagStyle::None,
        };
        assert_eq!(n.up(&dom()).key, format!("{UUID}.up"));
        assert_eq!(
            n.domain(&dom(), "memory.bytes", &[], &[] as &[&str]).key,
            format!("{UUID}.memory.bytes")
        );
        let s = n.domain(
            &dom(),
            "network.receive.bytes.total",
            &["interface"],
            &["vnet0"],
        );
        assert_eq!(s.key, format!("{UUID}.vnet0.network.receive.bytes.total"));
        assert!(s.tags.is_empty());
        assert_eq!(
            n.domain(&dom(), "vcpu.total", &["vcpu"], &["0"]).key,
            format!("{UUID}.0.vcpu.total")
        );
        assert_eq!(
            n.host("pool.free.bytes", &["pool"], &["default"]).key,
            "host.default.pool.free.bytes"
        );
        assert_eq!(n.host("cpus", &[], &[] as &[&str]).key, "host.cpus");
    }

    #[test]
    fn sanitises_label_values_but_keeps_metric_dots() {
        let n = Namer {
            style: TagStyle::None,
        };
        let s = n.domain(
            &dom(),
            "disk.read.bytes.total",
            &["device"],
            &["eth0.100:a|b@c d/e\tf#g"],
        );
        assert_eq!(
            s.key,
            format!("{UUID}.eth0_100_a_b_c_d_e_f_g.disk.read.bytes.total")
        );
        assert_eq!(sanitize_part(""), "_");
        assert_eq!(sanitize_part("vnet0#2"), "vnet0_2");
        assert_eq!(sanitize_part("dísk"), "d_sk");
        assert_eq!(sanitize_path("a.b:c.d e"), "a.b_c.d_e");
    }

    #[test]
    fn dogstatsd_names_and_tags() {
        let n = Namer {
            style: TagStyle::Dogstatsd,
        };
        let s = n.domain(&dom(), "disk.read.bytes.total", &["device"], &["vda"]);
        assert_eq!(s.key, "disk.read.bytes.total");
        assert_eq!(
            s.tags,
            vec![
                ("uuid", UUID.to_string()),
                ("name", "web_1_prod".to_string()),
                ("device", "vda".to_string())
            ]
        );
        let up = n.up(&dom());
        assert_eq!(up.key, "up");
        assert_eq!(up.tags.len(), 2);
        assert_eq!(sanitize_tag("a,b|c#d@e f:g.h/i"), "a_b_c_d_e_f:g.h/i");
        let h = n.host("pool.free.bytes", &["pool"], &["default"]);
        assert_eq!(
            (h.key.as_str(), h.tags),
            (
                "host.pool.free.bytes",
                vec![("pool", "default".to_string())]
            )
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(check_prefix("vm").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("prod.vm-1").is_ok());
        assert!(check_prefix("a..b").is_err());
        assert!(check_prefix("a:b").is_err());
        assert!(check_prefix("vm.").is_err());
    }
}
