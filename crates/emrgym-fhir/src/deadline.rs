//! Per-request deadlines for CPU-bound work. The server runs each request's work on a
//! blocking thread under [`Scope`]; long loops (search candidates, chains, includes, Bundle
//! entries) call [`check`], which fails with a 408 [`FhirError::Timeout`] once the request's
//! deadline has passed, so an expensive query stops instead of holding a worker. Code that
//! runs outside a scope (the CLI, in-process tools, tests) has no deadline.

use super::error::{FhirError, FhirResult};
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// Sets the current thread's deadline while alive; restores the previous one on drop.
#[derive(Debug)]
pub struct Scope {
    previous: Option<(Instant, Duration)>,
}

impl Scope {
    /// Work on this thread must finish within `budget` from now.
    pub fn enter(budget: Duration) -> Scope {
        let at = Instant::now().checked_add(budget);
        let previous = DEADLINE.with(|d| d.replace(at.map(|a| (a, budget))));
        Scope { previous }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.previous));
    }
}

/// `Err(Timeout)` once the current thread's deadline has passed; `Ok` without one.
pub fn check() -> FhirResult<()> {
    match DEADLINE.with(Cell::get) {
        Some((at, budget)) if Instant::now() >= at => Err(FhirError::Timeout(format!(
            "the request ran past its deadline of {} ms and was stopped; narrow the search (fewer OR values, a patient, a code) or raise --request-timeout-ms",
            budget.as_millis()
        ))),
        _ => Ok(()),
    }
}

/// [`check`] every `every` iterations of a loop (a clock read costs tens of ns).
pub(crate) fn check_every(i: usize, every: usize) -> FhirResult<()> {
    if every == 0 || i.is_multiple_of(every) { check() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_sets_and_restores_the_deadline() {
        assert!(check().is_ok());
        {
            let _s = Scope::enter(Duration::ZERO);
            let e = check().unwrap_err();
            assert_eq!(e.status(), 408);
            assert!(e.to_string().contains("deadline of 0 ms"), "{e}");
            {
                let _inner = Scope::enter(Duration::from_secs(60));
                assert!(check().is_ok());
            }
            assert!(check().is_err());
        }
        assert!(check().is_ok());
    }
}
