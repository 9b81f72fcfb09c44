//! The injectable clock: wall time for a live server, a fixed or ticking instant for tests
//! and scenarios (a scenario's clinical "now").

use chrono::{DateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Source of "now" for `meta.lastUpdated`, `ap` date searches and cohort load times.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real wall-clock time.
    System,
    /// Always the same instant.
    Fixed(DateTime<Utc>),
    /// Starts at an instant and advances by `step_ms` on every read, so writes are ordered
    /// yet fully deterministic.
    Ticking {
        /// First instant handed out.
        start: DateTime<Utc>,
        /// Milliseconds added per read.
        step_ms: i64,
        /// Reads so far (shared between clones).
        reads: Arc<AtomicI64>,
    },
}

impl Clock {
    /// A clock frozen at `t`.
    pub fn fixed(t: DateTime<Utc>) -> Self {
        Clock::Fixed(t)
    }

    /// A clock that starts at `t` and moves `step_ms` per read.
    pub fn ticking(t: DateTime<Utc>, step_ms: i64) -> Self {
        Clock::Ticking {
            start: t,
            step_ms,
            reads: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The current instant. Ticking clocks advance.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => *t,
            Clock::Ticking { start, step_ms, reads } => {
                let n = reads.fetch_add(1, Ordering::Relaxed);
                advance(*start, n, *step_ms)
            }
        }
    }

    /// The current instant without advancing a ticking clock.
    pub fn peek(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => *t,
            Clock::Ticking { start, step_ms, reads } => {
                let n = reads.load(Ordering::Relaxed);
                advance(*start, n, *step_ms)
            }
        }
    }
}

/// The latest instant a clock hands out: 9999-12-31T23:59:59.999Z, the last FHIR `instant`
/// (four-digit years). A ticking clock that would pass it stops there.
pub fn latest() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(253_402_300_799_999)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest instant a clock hands out: 0001-01-01T00:00:00Z.
pub(crate) fn earliest() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(-62_135_596_800_000)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `start + reads × step_ms`, in checked arithmetic, clamped to [`earliest`]..=[`latest`]:
/// never panics, whatever a sandbox's `now`, `tick_ms` or number of writes.
fn advance(start: DateTime<Utc>, reads: i64, step_ms: i64) -> DateTime<Utc> {
    let past_end = || if step_ms >= 0 { latest() } else { earliest() };
    let Some(ms) = reads.checked_mul(step_ms) else { return past_end() };
    let Some(delta) = TimeDelta::try_milliseconds(ms) else {
        return past_end();
    };
    match start.checked_add_signed(delta) {
        Some(t) => t.clamp(earliest(), latest()),
        None => past_end(),
    }
}

/// Format an instant as a FHIR `instant` with millisecond precision and `Z`.
pub(crate) fn fhir_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A text that is not an RFC 3339 instant ([`parse_instant`]); each variant carries the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    /// Not a date at all.
    #[error("'{0}' is not an RFC 3339 instant like 2023-11-13T10:15:00Z")]
    NotADate(String),
    /// A date without its seconds or its offset.
    #[error("'{0}' is not an RFC 3339 instant like 2023-11-13T10:15:00Z: it needs seconds and an offset (Z or ±hh:mm)")]
    Imprecise(String),
    /// A date outside what an instant can hold.
    #[error("'{0}' is out of range")]
    OutOfRange(String),
}

/// Parse an RFC 3339 instant (as given on the command line or in scenarios).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, InstantError> {
    // the one date parser; an instant has its seconds and its offset
    let d = emrgym_core::date::parse(s).ok_or_else(|| InstantError::NotADate(s.to_string()))?;
    if d.precision < emrgym_core::date::Precision::Second || d.offset_minutes.is_none() {
        return Err(InstantError::Imprecise(s.to_string()));
    }
    DateTime::from_timestamp_millis(d.start_ms).ok_or_else(|| InstantError::OutOfRange(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_needs_its_seconds_and_an_offset() {
        let t = parse_instant("2023-11-13T10:15:00+01:00").unwrap();
        assert_eq!(fhir_instant(t), "2023-11-13T09:15:00.000Z");
        for bad in ["2023-11-13", "2023-11-13T10:15Z", "2023-11-13T10:15:00", "yesterday"] {
            let e = parse_instant(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn ticking_clock_advances_and_peek_does_not() {
        let t = parse_instant("2023-11-13T10:15:00Z").unwrap();
        let c = Clock::ticking(t, 1000);
        assert_eq!(c.peek(), t);
        assert_eq!(c.now(), t);
        assert_eq!(c.now(), t + TimeDelta::seconds(1));
        assert_eq!(fhir_instant(c.peek()), "2023-11-13T10:15:02.000Z");
    }

    /// Regression (issue 16): `DateTime + TimeDelta` overflowed and panicked for sandbox
    /// `now`/`tick_ms` values near the edges.
    #[test]
    fn clock_arithmetic_never_panics_at_the_edges() {
        let edges = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z"];
        for now in edges {
            let t = parse_instant(now).unwrap();
            for step in [1, 1000, 86_400_000, i64::MAX / 2, i64::MAX, i64::MIN, -1] {
                let c = Clock::ticking(t, step);
                for _ in 0..5 {
                    let x = c.now();
                    assert!(x >= earliest() && x <= latest(), "{now} {step}: {x}");
                    let _ = fhir_instant(c.peek());
                }
            }
        }
        // past the end a ticking clock stops at the last FHIR instant
        let c = Clock::ticking(parse_instant("9999-12-31T23:59:59Z").unwrap(), 1000);
        c.now();
        c.now();
        assert_eq!(fhir_instant(c.now()), "9999-12-31T23:59:59.999Z");
        // a huge read count (a long-lived sandbox) saturates too
        let c = Clock::Ticking {
            start: parse_instant("2023-01-01T00:00:00Z").unwrap(),
            step_ms: 1000,
            reads: Arc::new(AtomicI64::new(i64::MAX)),
        };
        assert_eq!(c.peek(), latest());
    }

    #[test]
    fn bad_instant_names_value() {
        let e = parse_instant("yesterday").unwrap_err();
        assert_eq!(e, InstantError::NotADate("yesterday".into()));
        assert!(e.to_string().contains("'yesterday'"), "{e}");
    }
}
