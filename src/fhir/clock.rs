//! The injectable clock: wall time for a live server, a fixed or ticking instant for tests
//! and scenarios (a scenario's clinical "now").

use chrono::{DateTime, Duration, SecondsFormat, Utc};
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
                *start + Duration::milliseconds(n.saturating_mul(*step_ms))
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
                *start + Duration::milliseconds(n.saturating_mul(*step_ms))
            }
        }
    }
}

/// Format an instant as a FHIR `instant` with millisecond precision and `Z`.
pub fn fhir_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an RFC 3339 instant (as given on the command line or in scenarios).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 instant like 2023-11-13T10:15:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticking_clock_advances_and_peek_does_not() {
        let t = parse_instant("2023-11-13T10:15:00Z").unwrap();
        let c = Clock::ticking(t, 1000);
        assert_eq!(c.peek(), t);
        assert_eq!(c.now(), t);
        assert_eq!(c.now(), t + Duration::seconds(1));
        assert_eq!(fhir_instant(c.peek()), "2023-11-13T10:15:02.000Z");
    }

    #[test]
    fn bad_instant_names_value() {
        let e = parse_instant("yesterday").unwrap_err();
        assert!(e.contains("'yesterday'"), "{e}");
    }
}
