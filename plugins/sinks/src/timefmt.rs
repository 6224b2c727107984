//! Timestamps as vAdvisor prints them: naive UTC ISO-8601 with microseconds and a `Z`,
//! the fraction left out when it is zero (`2016-06-23T16:05:34.884821Z`).

use std::time::SystemTime;

use time::OffsetDateTime;

pub fn iso_utc(t: SystemTime) -> String {
    let dt = OffsetDateTime::from(t);
    let micros = dt.microsecond();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if micros == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{micros:06}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_like_vadvisor() {
        let t = UNIX_EPOCH + Duration::from_micros(1_466_697_934_884_821);
        assert_eq!(iso_utc(t), "2016-06-23T16:05:34.884821Z");
        assert_eq!(
            iso_utc(UNIX_EPOCH + Duration::from_secs(1_466_697_934)),
            "2016-06-23T16:05:34Z"
        );
    }
}
