//! The one date parser: FHIR `date`, `dateTime` and `instant` values (any precision, with or
//! without an offset) as the range of time they denote (FHIR R4 §2.24.0.3, "Date/Time" and
//! search §3.1.1.4.2, "date": a value stands for the whole period of its precision). The FHIR
//! search, the HTN expression language and the calculators' date inputs all read dates here,
//! each asking for the precision it needs.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// How much of a date-time was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYY-MM`
    Month,
    /// `YYYY-MM-DD`
    Day,
    /// `YYYY-MM-DDThh:mm`
    Minute,
    /// `YYYY-MM-DDThh:mm:ss`
    Second,
    /// `YYYY-MM-DDThh:mm:ss.f...` (kept to the millisecond)
    Fraction,
}

/// A parsed FHIR date-time: the range it denotes, in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FhirDate {
    /// First millisecond inside the range.
    pub start_ms: i64,
    /// First millisecond after the range.
    pub end_ms: i64,
    /// How much was given.
    pub precision: Precision,
    /// The offset written (`Z` is 0), in minutes east of UTC; `None` when there was none
    /// (the value is then taken as UTC).
    pub offset_minutes: Option<i32>,
}

/// Parse a FHIR date, dateTime or instant (any precision, with or without offset). Values
/// without an offset are taken as UTC; `None` for anything else.
pub fn parse(s: &str) -> Option<FhirDate> {
    let s = s.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let parts: Vec<&str> = date_part.split('-').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts[0].len() != 4
        || !parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let year: i32 = parts[0].parse().ok()?;
    let month: u32 = parts.get(1).map(|m| m.parse()).transpose().ok()?.unwrap_or(1);
    let day: u32 = parts.get(2).map(|d| d.parse()).transpose().ok()?.unwrap_or(1);
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let Some(t) = time_part else {
        let start = date.and_time(NaiveTime::MIN);
        let end = match parts.len() {
            1 => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            2 => {
                if month == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(year, month + 1, 1)?
                }
            }
            _ => date.succ_opt()?,
        }
        .and_time(NaiveTime::MIN);
        return Some(FhirDate {
            start_ms: start.and_utc().timestamp_millis(),
            end_ms: end.and_utc().timestamp_millis(),
            precision: [Precision::Year, Precision::Month, Precision::Day][parts.len() - 1],
            offset_minutes: None,
        });
    };
    if parts.len() != 3 {
        return None;
    }
    // split offset
    let (clock, offset_min, has_offset) = if let Some(c) = t.strip_suffix('Z') {
        (c, 0i64, true)
    } else if let Some(pos) = t.rfind(['+', '-']) {
        let (c, off) = t.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        let h: i64 = h.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        if h > 14 || m > 59 {
            return None;
        }
        (c, sign * (h * 60 + m), true)
    } else {
        (t, 0, false)
    };
    let mut hms = clock.split(':');
    let h: u32 = hms.next()?.parse().ok()?;
    let mi: u32 = hms.next()?.parse().ok()?;
    let (sec, frac, precision_ms, precision): (u32, u32, i64, Precision) = match hms.next() {
        None => (0, 0, 60_000, Precision::Minute),
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            if whole.len() != 2 {
                return None;
            }
            let sv: u32 = whole.parse().ok()?;
            match frac {
                None => (sv, 0, 1000, Precision::Second),
                Some(f) if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) => {
                    let digits = f.len().min(3);
                    let ms: u32 = f[..digits].parse().ok()?;
                    let scale = 10u32.pow(3 - digits as u32);
                    (sv, ms * scale, i64::from(scale), Precision::Fraction)
                }
                Some(_) => return None,
            }
        }
    };
    if hms.next().is_some() {
        return None;
    }
    let time = NaiveTime::from_hms_milli_opt(h, mi, sec, frac)?;
    let local = NaiveDateTime::new(date, time);
    let start = local.and_utc().timestamp_millis() - offset_min * 60_000;
    Some(FhirDate {
        start_ms: start,
        end_ms: start + precision_ms,
        precision,
        offset_minutes: has_offset.then_some(offset_min as i32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn each_precision_denotes_its_period() {
        let d = parse("2020").unwrap();
        assert_eq!(
            (d.start_ms, d.end_ms, d.precision),
            (ms("2020-01-01T00:00:00Z"), ms("2021-01-01T00:00:00Z"), Precision::Year)
        );
        assert_eq!(parse("2020-12").unwrap().end_ms, ms("2021-01-01T00:00:00Z"));
        assert_eq!(parse("2020-02-28").unwrap().end_ms, ms("2020-02-29T00:00:00Z"));
        let d = parse("2020-02-28T10:00-04:00").unwrap();
        assert_eq!(
            (d.start_ms, d.precision, d.offset_minutes),
            (ms("2020-02-28T14:00:00Z"), Precision::Minute, Some(-240))
        );
        let d = parse("2023-11-13T10:15:00.25Z").unwrap();
        assert_eq!(
            (d.start_ms, d.end_ms - d.start_ms, d.precision),
            (ms("2023-11-13T10:15:00.250Z"), 10, Precision::Fraction)
        );
        let d = parse("2023-11-13T10:15:00").unwrap();
        assert_eq!((d.precision, d.offset_minutes), (Precision::Second, None));
    }

    #[test]
    fn malformed_dates_are_refused() {
        for s in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2020-1x",
            "2020-01-01T25:00",
            "2020-01-01T10:00+15:00",
            "2020-01T10:00",
            "2020-01-01T10:00:0",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
