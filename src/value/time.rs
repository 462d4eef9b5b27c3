//! PostgreSQL's dates, times and timestamps as the numbers its binary forms hold (days and
//! microseconds since 2000-01-01), read from the ISO text streams carry. The COPY encoder writes
//! them; canonical comparison orders by them, so a date compares alike from every store.

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// PostgreSQL writes years before 1 as `0044-03-15 BC` (astronomical year -43).
fn split_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(t) => (t.trim_end(), true),
        None => (s, false),
    }
}

fn days_since_2000(d: jiff::civil::Date) -> Result<i64, String> {
    Ok(d.since(jiff::civil::date(2000, 1, 1))
        .map_err(|e| e.to_string())?
        .get_days() as i64)
}

/// Days from the ISO `YYYY-MM-DD` date to its BC reading.
fn bc_shift_days(iso: &str) -> Result<i64, String> {
    let d: jiff::civil::Date = iso
        .get(..10)
        .ok_or("too short")?
        .parse()
        .map_err(|e| format!("{iso:?} is not a date ({e})"))?;
    let bc = jiff::civil::Date::new(1 - d.year(), d.month(), d.day()).map_err(|e| e.to_string())?;
    Ok(days_since_2000(bc)? - days_since_2000(d)?)
}

/// A date as PostgreSQL's binary form: days since 2000-01-01 (`infinity`: i32::MAX).
pub(crate) fn pg_date(s: &str) -> Result<i32, String> {
    let s = s.trim();
    match s {
        "infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (t, bc) = split_bc(s);
    let d: jiff::civil::Date = t.parse().map_err(|e| format!("{s:?} is not a date ({e})"))?;
    let days = days_since_2000(d)? + if bc { bc_shift_days(t)? } else { 0 };
    i32::try_from(days).map_err(|_| format!("{s:?} is out of range"))
}

/// A timestamp as PostgreSQL's binary form: microseconds since 2000-01-01 (`infinity`:
/// i64::MAX). See [`timestamp_micros`] for offsets.
pub(crate) fn pg_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    match s {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let (t, bc) = split_bc(s);
    let shift = if bc { bc_shift_days(t)? * 86_400_000_000 } else { 0 };
    Ok(timestamp_micros(t)? - PG_EPOCH_MICROS + shift)
}

/// A time of day as microseconds (PostgreSQL allows `24:00:00`).
pub(crate) fn pg_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "24:00:00" || s == "24:00" {
        return Ok(86_400_000_000);
    }
    let time: jiff::civil::Time = s.parse().map_err(|e| format!("{s:?} is not a time ({e})"))?;
    if time.subsec_nanosecond() % 1000 != 0 {
        return Err(format!("{s:?} has more precision than PostgreSQL keeps (microseconds)"));
    }
    Ok(
        ((time.hour() as i64 * 60 + time.minute() as i64) * 60 + time.second() as i64) * 1_000_000
            + time.subsec_nanosecond() as i64 / 1000,
    )
}

/// Microseconds since 1970 of an ISO-8601 date-time. With an offset (or `Z`) the instant is kept
/// (converted to UTC); without one the wall-clock time is taken as it is, never reinterpreted in
/// some server's time zone.
pub(crate) fn timestamp_micros(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let nanos: i128 = if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        ts.as_nanosecond()
    } else {
        let dt: jiff::civil::DateTime = s.parse().map_err(|e| format!("{s:?} is not a date-time ({e})"))?;
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| e.to_string())?
            .timestamp()
            .as_nanosecond()
    };
    if nanos % 1000 != 0 {
        return Err(format!("{s:?} has more precision than PostgreSQL keeps (microseconds)"));
    }
    i64::try_from(nanos / 1000).map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_beyond_the_ordinary() {
        assert_eq!(pg_date("infinity"), Ok(i32::MAX));
        assert_eq!(pg_timestamp("-infinity"), Ok(i64::MIN));
        // 1 BC is year 0, the day before 0001-01-01.
        assert_eq!(pg_date("0001-12-31 BC").unwrap() + 1, pg_date("0001-01-01").unwrap());
        assert_eq!(
            pg_timestamp("0001-12-31T23:00:00 BC").unwrap() + 3_600_000_000,
            pg_timestamp("0001-01-01T00:00:00").unwrap()
        );
        assert_eq!(pg_time("24:00:00"), Ok(86_400_000_000));
    }
}
