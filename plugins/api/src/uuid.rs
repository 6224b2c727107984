//! UUID spelling: one normalisation for every plugin, so that an id names the same
//! domain in the REST API, the event API and the libvirt lookups.

/// `s` as a lower-case dashed UUID, if it is one: 32 hex digits, either undashed or
/// dashed 8-4-4-4-12, any case, optionally in braces and/or after `urn:uuid:`.
pub fn normalize_uuid(s: &str) -> Option<String> {
    const URN: &str = "urn:uuid:";
    let s = match s.get(..URN.len()) {
        Some(p) if p.eq_ignore_ascii_case(URN) => &s[URN.len()..],
        _ => s,
    };
    let s = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let hex: String = match s.len() {
        32 => s.to_string(),
        36 => {
            let b = s.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            s.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_recognised_and_normalised() {
        let canonical = Some("6695eb01-f6a4-8304-79aa-97f2502e193f".to_string());
        for s in [
            "6695eb01-f6a4-8304-79aa-97f2502e193f",
            "6695EB01-F6A4-8304-79AA-97F2502E193F",
            "6695eb01f6a4830479aa97f2502e193f",
            "6695EB01F6A4830479AA97F2502E193F",
            "{6695eb01-f6a4-8304-79aa-97f2502e193f}",
            "urn:uuid:6695eb01-f6a4-8304-79aa-97f2502e193f",
            "URN:UUID:{6695EB01F6A4830479AA97F2502E193F}",
        ] {
            assert_eq!(normalize_uuid(s), canonical, "{s}");
        }
        for s in [
            "",
            "test",
            "{bad-uuid}",
            "{}",
            "6695eb01-f6a4-8304-79aa-97f2502e193",
            "6695eb01-f6a4-8304-79aa-97f2502e193f0",
            "6695eb01f6a4-8304-79aa-97f2502e193f-",
            "6695eb01-f6a48304-79aa-97f2502e193f0",
            "g695eb01-f6a4-8304-79aa-97f2502e193f",
            "6695eb01-f6a4-8304-79aa-97f2502e193f}",
            "{6695eb01-f6a4-8304-79aa-97f2502e193f",
            "6695eb01 f6a4 8304 79aa 97f2502e193f",
            "ééééééééééééééééé",
            "urn:uuid:",
            "urn:uu",
            "\u{0}695eb01f6a4830479aa97f2502e193f",
        ] {
            assert_eq!(normalize_uuid(s), None, "{s:?}");
        }
    }
}
