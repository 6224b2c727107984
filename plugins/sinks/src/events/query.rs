//! The query parameters of `GET /api/v1.0/events`, checked strictly: vAdvisor's
//! `stream`, `start_time`, `end_time`, `max_events`, `all_events` and
//! `<type>_events`, plus `domain`. Any bad value is a 400 naming the parameter; an
//! unknown parameter is a 400 listing the valid ones.

use std::collections::BTreeMap;

use vadvisor_api::axum::http::StatusCode;
use vadvisor_api::axum::response::Response;

use super::timeparse::parse_time;
use crate::http_util::{json_error, parse_bool};
use vadvisor_api::event_names::EVENT_TYPES;
use vadvisor_api::normalize_uuid;

/// Every parameter the endpoint takes.
pub const ALLOWED: &[&str] = &[
    "stream",
    "start_time",
    "end_time",
    "max_events",
    "all_events",
    "defined_events",
    "undefined_events",
    "started_events",
    "suspended_events",
    "resumed_events",
    "stopped_events",
    "shutdown_events",
    "pmsuspended_events",
    "crashed_events",
    "domain",
];

/// vAdvisor's default `max_events`.
pub const DEFAULT_MAX_EVENTS: u64 = 10;

/// Which event types pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeSet {
    /// `all_events=true`: every event, unknown codes included.
    All,
    /// A bit per `virDomainEventType` code; `Only(0)` lets nothing pass (vAdvisor's rule
    /// when no type parameter is given).
    Only(u16),
}

impl TypeSet {
    pub fn contains(self, event: u32) -> bool {
        match self {
            TypeSet::All => true,
            TypeSet::Only(mask) => event < 16 && mask & (1 << event) != 0,
        }
    }

    pub fn is_empty(self) -> bool {
        self == TypeSet::Only(0)
    }
}

/// The `domain` parameter: a UUID (any case, dashed or not) or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMatch {
    pub text: String,
    /// The canonical UUID when `text` is one.
    pub uuid: Option<String>,
}

impl DomainMatch {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            uuid: normalize_uuid(text),
        }
    }

    pub fn matches(&self, uuid: &str, name: &str) -> bool {
        self.uuid.as_deref() == Some(uuid) || self.text == name
    }
}

/// What passes a stream or history request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub types: TypeSet,
    pub domain: Option<DomainMatch>,
}

impl Filter {
    pub fn all() -> Self {
        Self {
            types: TypeSet::All,
            domain: None,
        }
    }

    pub fn matches(&self, uuid: &str, name: &str, event: u32) -> bool {
        self.types.contains(event) && self.domain.as_ref().is_none_or(|d| d.matches(uuid, name))
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    pub stream: bool,
    /// Inclusive bounds, µs since the epoch.
    pub start_us: i64,
    pub end_us: i64,
    /// `None`: unlimited (`max_events=0`).
    pub limit: Option<u64>,
    pub filter: Filter,
}

/// A rejected request: the 400 to send (boxed: a `Response` is large).
pub type Rejection = Box<Response>;

fn bad(message: String) -> Rejection {
    Box::new(json_error(StatusCode::BAD_REQUEST, message))
}

fn flag(params: &BTreeMap<String, String>, name: &str) -> Result<bool, Rejection> {
    parse_bool(name, params.get(name)).map_err(Box::new)
}

/// Parses the parameters (already checked against [`ALLOWED`]); `now_us` is the
/// default `end_time`.
pub fn parse(params: &BTreeMap<String, String>, now_us: i64) -> Result<EventQuery, Rejection> {
    let stream = flag(params, "stream")?;
    let time = |name: &str, default: i64| match params.get(name) {
        None => Ok(default),
        Some(v) => parse_time(v).map_err(|e| bad(format!("`{name}`: {e}"))),
    };
    let start_us = time("start_time", 0)?;
    let end_us = time("end_time", now_us)?;
    let limit = match params.get("max_events") {
        None => Some(DEFAULT_MAX_EVENTS),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => {
                return Err(bad(format!(
                    "invalid value `{v}` for `max_events`: expected a non-negative integer (0 = unlimited)"
                )))
            }
        },
    };
    let types = if flag(params, "all_events")? {
        TypeSet::All
    } else {
        let mut mask = 0u16;
        for (code, name) in EVENT_TYPES.iter().enumerate() {
            let key = format!("{}_events", name.to_ascii_lowercase());
            if flag(params, &key)? {
                mask |= 1 << code;
            }
        }
        TypeSet::Only(mask)
    };
    let domain = match params.get("domain").map(String::as_str) {
        None => None,
        Some("") => {
            return Err(bad(
                "`domain` must not be empty: give a UUID or a name".to_string()
            ))
        }
        Some(d) => Some(DomainMatch::new(d)),
    };
    Ok(EventQuery {
        stream,
        start_us,
        end_us,
        limit,
        filter: Filter { types, domain },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<EventQuery, Rejection> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&map, 1_000)
    }

    #[test]
    fn defaults_are_vadvisors() {
        let got = q(&[]).unwrap();
        assert_eq!(
            got,
            EventQuery {
                stream: false,
                start_us: 0,
                end_us: 1_000,
                limit: Some(10),
                filter: Filter {
                    types: TypeSet::Only(0),
                    domain: None
                },
            }
        );
        assert!(got.filter.types.is_empty());
    }

    #[test]
    fn type_filters_build_a_set() {
        let got = q(&[
            ("started_events", "true"),
            ("crashed_events", "true"),
            ("stopped_events", "false"),
        ])
        .unwrap();
        assert!(got.filter.types.contains(2) && got.filter.types.contains(8));
        assert!(!got.filter.types.contains(5) && !got.filter.types.contains(9));
        let all = q(&[("all_events", "true"), ("started_events", "false")]).unwrap();
        assert!(all.filter.types.contains(2) && all.filter.types.contains(42));
    }

    #[test]
    fn limits_and_times() {
        assert_eq!(q(&[("max_events", "0")]).unwrap().limit, None);
        assert_eq!(q(&[("max_events", "3")]).unwrap().limit, Some(3));
        let got = q(&[
            ("start_time", "1970-01-01T00:00:01Z"),
            ("end_time", "1970-01-01 00:00:02"),
        ])
        .unwrap();
        assert_eq!((got.start_us, got.end_us), (1_000_000, 2_000_000));
        assert!(q(&[("stream", "true")]).unwrap().stream);
    }

    #[test]
    fn bad_values_are_400s_naming_the_parameter() {
        for (k, v) in [
            ("max_events", "-1"),
            ("max_events", "abc"),
            ("start_time", "June 20"),
            ("end_time", "2016-06-20T12:00:00+99:00"),
            ("stream", "yes"),
            ("all_events", "True"),
            ("started_events", "on"),
            ("domain", ""),
        ] {
            let resp = q(&[(k, v)]).unwrap_err();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{k}={v}");
        }
    }

    #[test]
    fn domains_match_by_uuid_in_any_spelling_or_by_name() {
        let u = "5ad0a0b0-0000-4000-8000-000000000001";
        for spelling in [
            u,
            "5AD0A0B0-0000-4000-8000-000000000001",
            "5ad0a0b0000040008000000000000001",
            "{5ad0a0b0-0000-4000-8000-000000000001}",
            "urn:uuid:5ad0a0b0-0000-4000-8000-000000000001",
        ] {
            assert!(DomainMatch::new(spelling).matches(u, "x"), "{spelling}");
        }
        assert!(DomainMatch::new("vadv-lab-1").matches(u, "vadv-lab-1"));
        assert!(!DomainMatch::new("vadv-lab-2").matches(u, "vadv-lab-1"));
        assert_eq!(normalize_uuid("not-a-uuid"), None);
        assert_eq!(normalize_uuid("5ad0a0b0-0000-4000-8000-00000000000g"), None);
    }
}
