//! Times as records show them (RFC 3339) and as readers give them (`--since`, `since=`).

/// Unix ms as RFC 3339 (the number itself if out of range).
/// Unix ms now (the writer's heartbeat).
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Parses `--since`/`since=`: RFC 3339 (`2026-11-28T10:00:00Z`) or a date (`2026-11-28`, UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(format!(
        "{s:?} is not a time: use 2026-11-28T10:00:00Z or 2026-11-28 (UTC)"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_date_is_its_midnight_utc_and_a_timestamp_its_instant() {
        assert_eq!(parse_time("2026-11-28"), Ok(1_795_824_000_000));
        assert_eq!(parse_time("2026-11-28T10:00:00Z"), Ok(1_795_860_000_000));
        assert_eq!(rfc3339(1_795_860_000_000), "2026-11-28T10:00:00Z");
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_that_work() {
        let err = parse_time("yesterday").unwrap_err();
        assert!(
            err.contains("use 2026-11-28T10:00:00Z or 2026-11-28"),
            "{err}"
        );
    }
}
