//! Times in the `start_time`/`end_time` query parameters, as microseconds since the
//! epoch: RFC 3339 with `Z` or an offset (`2016-06-20T12:00:00.5+02:00`, the format
//! the API itself emits), and vAdvisor's naive forms interpreted as UTC
//! (`2016-06-20`, `2016-06-20 12:00`, `2016-06-20T12:00:00`, optional fraction).
//!
//! An unencoded `+` in a query string arrives as a space, so `…12:00:00 02:00` is read
//! as `…12:00:00+02:00`. dateutil's free-form dates (`June 20 2016`) are not accepted.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// What the parameter must look like (for error messages).
pub const EXPECTED: &str =
    "expected RFC 3339 (2016-06-20T12:00:00Z, 2016-06-20T12:00:00.5+02:00) or a UTC date/time \
     (2016-06-20, 2016-06-20 12:00, 2016-06-20T12:00:00.123456)";

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn number(&mut self, len: usize) -> Option<u32> {
        let end = self.at.checked_add(len)?;
        let part = self.s.get(self.at..end)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at = end;
        Some(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, choices: &[u8]) -> Option<u8> {
        let c = *self.s.get(self.at)?;
        if choices.contains(&c) {
            self.at += 1;
            Some(c)
        } else {
            None
        }
    }

    fn done(&self) -> bool {
        self.at == self.s.len()
    }
}

/// Microseconds since the epoch of a time parameter.
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse(text.trim()).ok_or_else(|| format!("invalid time `{text}`: {EXPECTED}"))
}

fn parse(text: &str) -> Option<i64> {
    let mut c = Cursor {
        s: text.as_bytes(),
        at: 0,
    };
    let year = c.number(4)?;
    c.eat(b"-")?;
    let month = c.number(2)?;
    c.eat(b"-")?;
    let day = c.number(2)?;
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if !c.done() {
        c.eat(b"Tt ")?;
        hour = c.number(2)?;
        c.eat(b":")?;
        minute = c.number(2)?;
        if c.eat(b":").is_some() {
            second = c.number(2)?;
            if c.eat(b".,").is_some() {
                nanos = fraction(&mut c)?;
            }
        }
    }
    let offset = offset(&mut c)?;
    if !c.done() {
        return None;
    }
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos() / 1000).ok()
}

/// Digits after the decimal point, as nanoseconds (digits past the ninth are ignored).
fn fraction(c: &mut Cursor<'_>) -> Option<u32> {
    let start = c.at;
    let mut nanos = 0u32;
    let mut scale = 100_000_000u32;
    while let Some(d) = c.eat(b"0123456789") {
        nanos += u32::from(d - b'0') * scale;
        scale /= 10;
    }
    (c.at > start).then_some(nanos)
}

fn offset(c: &mut Cursor<'_>) -> Option<UtcOffset> {
    if c.done() {
        return Some(UtcOffset::UTC);
    }
    if c.eat(b"Zz").is_some() {
        return Some(UtcOffset::UTC);
    }
    let sign: i8 = if c.eat(b"+ ").is_some() {
        1
    } else {
        c.eat(b"-")?;
        -1
    };
    let hours = i8::try_from(c.number(2)?).ok()?;
    let minutes = if c.done() {
        0
    } else {
        c.eat(b":");
        i8::try_from(c.number(2)?).ok()?
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_466_424_000_000_000; // 2016-06-20T12:00:00Z in µs

    #[test]
    fn rfc3339_with_z_or_offset() {
        assert_eq!(parse_time("2016-06-20T12:00:00Z"), Ok(T));
        assert_eq!(parse_time("2016-06-20t12:00:00z"), Ok(T));
        assert_eq!(parse_time("2016-06-20T14:00:00+02:00"), Ok(T));
        assert_eq!(parse_time("2016-06-20T14:00:00+0200"), Ok(T));
        assert_eq!(parse_time("2016-06-20T10:30:00-01:30"), Ok(T));
        assert_eq!(parse_time("2016-06-20T12:00:00.884821Z"), Ok(T + 884_821));
        assert_eq!(parse_time("2016-06-20T12:00:00.5+00:00"), Ok(T + 500_000));
    }

    #[test]
    fn the_api_own_timestamps_parse() {
        // What the events API emits (timefmt::iso_utc) is accepted back.
        assert_eq!(
            parse_time("2016-06-23T16:05:34.313348Z"),
            Ok(1_466_697_934_313_348)
        );
    }

    #[test]
    fn naive_forms_are_utc() {
        assert_eq!(parse_time("2016-06-20"), Ok(T - 12 * 3_600_000_000));
        assert_eq!(parse_time("2016-06-20 12:00"), Ok(T));
        assert_eq!(parse_time("2016-06-20T12:00"), Ok(T));
        assert_eq!(parse_time("2016-06-20T12:00:00"), Ok(T));
        assert_eq!(parse_time("2016-06-20 12:00:00.000001"), Ok(T + 1));
        assert_eq!(parse_time(" 2016-06-20T12:00:00 "), Ok(T));
        assert_eq!(parse_time("1970-01-01T00:00:00"), Ok(0));
    }

    #[test]
    fn unencoded_plus_arrives_as_a_space() {
        assert_eq!(parse_time("2016-06-20T14:00:00 02:00"), Ok(T));
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "",
            "yesterday",
            "June 20 2016",
            "2016-6-20",
            "2016-13-01",
            "2016-02-30",
            "2016-06-20T25:00",
            "2016-06-20T12",
            "2016-06-20T12:00:00.",
            "2016-06-20T12:00:00+25:00",
            "2016-06-20T12:00:00Zjunk",
            "2016-06-20T12:00:00+02:0",
            "1466424000",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
