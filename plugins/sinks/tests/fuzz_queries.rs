//! Property tests: query-string and parameter parsing never panic and reject bad
//! values with a 400, whatever the request carries.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vadvisor_sinks::events::{query, timeparse};
use vadvisor_sinks::http_util::{parse_bool, parse_query};

const EVENT_PARAMS: &[&str] = query::ALLOWED;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn raw_query_strings_never_panic(raw in ".{0,200}") {
        let _ = parse_query(Some(&raw), &["live"]);
        let _ = parse_query(Some(&raw), EVENT_PARAMS);
    }

    #[test]
    fn bad_booleans_are_400s(value in ".{0,20}") {
        match parse_bool("live", Some(&value)) {
            Ok(_) => prop_assert!(["true", "false", "1", "0"].contains(&value.as_str())),
            Err(resp) => prop_assert_eq!(resp.status().as_u16(), 400),
        }
    }

    #[test]
    fn event_queries_never_panic(
        params in prop::collection::btree_map(prop::sample::select(EVENT_PARAMS.to_vec()), ".{0,40}", 0..8)
    ) {
        let params: BTreeMap<String, String> = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = query::parse(&params, 1_700_000_000_000_000);
    }

    #[test]
    fn times_never_panic(text in ".{0,60}", digits in "[0-9:TZ+. -]{0,40}") {
        let _ = timeparse::parse_time(&text);
        let _ = timeparse::parse_time(&digits);
        let _ = vadvisor_api::normalize_uuid(&text);
    }
}
