//! Timestamps as vAdvisor prints them: naive UTC ISO-8601 with microseconds and a `Z`,
//! the fraction left out when it is zero (`2016-06-23T16:05:34.884821Z`).

use std::cell::RefCell;
use std::time::SystemTime;

use time::OffsetDateTime;

pub fn iso_utc(t: SystemTime) -> String {
    // The samples of one tick share their timestamp: formatted once per thread and time.
    thread_local! {
        static LAST: RefCell<Option<(SystemTime, String)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((at, text)) if *at == t => text.clone(),
            _ => {
                let text = format_iso_utc(t);
                *last = Some((t, text.clone()));
                text
            }
        }
    })
}

fn format_iso_utc(t: SystemTime) -> String {
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
        // Asked again (the remembered text) and alternately: always the right time.
        for _ in 0..2 {
            assert_eq!(iso_utc(t), "2016-06-23T16:05:34.884821Z");
            assert_eq!(
                iso_utc(t + Duration::from_secs(1)),
                "2016-06-23T16:05:35.884821Z"
            );
        }
    }
}
