//! Harness failures: which episode ends a limit of the harness (not the model) can cause,
//! and how a run counts them. This is the audit of docs/agent.md ("Harness failures") as
//! code: [`attribute`] names the limit an episode ended at when the audit says the
//! harness, not the model, set it; summaries count those episodes next to success, and a
//! results table withholds a row whose rate is above [`MAX_HARNESS_FAILURE_RATE`].
//!
//! Such episodes stay scored (as failures), so a published success rate is a lower bound
//! and the harness-failure rate is the most the harness can have taken from it.

use super::model::Limits;
use emrgym_scenario::trajectory::{EndReason, Trajectory};
use serde::{Deserialize, Serialize};

/// A results row whose scored episodes ended at a harness limit more often than this is
/// not published (5%: the success it reports could be understated by at most this much).
pub const MAX_HARNESS_FAILURE_RATE: f64 = 0.05;

/// A limit of the harness that ended an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HarnessLimit {
    /// The reply cap cut replies before their call was complete, twice in a row.
    ReplyCap,
    /// The conversation no longer fit the model's context.
    Context,
    /// The episode's token budget ran out (only when the user set one).
    TokenBudget,
    /// Wall time: the episode's, or one request's after its retries.
    WallTime,
    /// A step cap the user set below the instance's default budget.
    StepCap,
    /// A turn cap the user set below the instance's default.
    TurnCap,
}

impl HarnessLimit {
    /// The name used in result lines and summaries.
    pub fn name(self) -> &'static str {
        match self {
            HarnessLimit::ReplyCap => "reply_cap",
            HarnessLimit::Context => "context",
            HarnessLimit::TokenBudget => "token_budget",
            HarnessLimit::WallTime => "wall_time",
            HarnessLimit::StepCap => "step_cap",
            HarnessLimit::TurnCap => "turn_cap",
        }
    }
}

/// The harness limit an episode ended at, if the audit attributes its end to the harness.
/// `applied` are the limits the episode ran under; `default` those the instance gives a
/// model when the user sets no cap (a step or turn limit at or above the default is the
/// model's: the default is twice the reference plan).
pub fn attribute(traj: &Trajectory, applied: &Limits, default: &Limits) -> Option<HarnessLimit> {
    match traj.end {
        EndReason::MaxTokens => {
            let cut = traj.detail.as_deref().is_some_and(|d| d.starts_with("reply cap"))
                || traj.turns.last().is_some_and(|t| t.finish_reason.as_deref() == Some("length"));
            Some(if cut { HarnessLimit::ReplyCap } else { HarnessLimit::TokenBudget })
        }
        EndReason::ContextOverflow => Some(HarnessLimit::Context),
        EndReason::Timeout => Some(HarnessLimit::WallTime),
        EndReason::MaxSteps => (applied.max_steps < default.max_steps).then_some(HarnessLimit::StepCap),
        EndReason::MaxTurns => (applied.max_turns < default.max_turns).then_some(HarnessLimit::TurnCap),
        EndReason::Finished
        | EndReason::ToolCallParseError
        | EndReason::Degenerate
        | EndReason::Stuck
        | EndReason::Stopped
        | EndReason::Abandoned
        | EndReason::BackendError
        | EndReason::RateLimited
        | EndReason::Cancelled
        | EndReason::Error => None,
    }
}

/// Whether a row with `harness` harness failures in `scored` scored episodes may be published.
pub fn publishable(harness: usize, scored: usize) -> bool {
    scored > 0 && harness as f64 <= MAX_HARNESS_FAILURE_RATE * scored as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use emrgym_scenario::trajectory::Turn;

    fn traj(end: EndReason, detail: Option<&str>) -> Trajectory {
        let mut t = Trajectory::new(Vec::new(), end);
        t.detail = detail.map(str::to_string);
        t
    }

    #[test]
    fn each_end_is_attributed_as_the_audit_says() {
        let d = Limits {
            max_steps: 20,
            max_turns: 25,
            ..Limits::default()
        };
        let at = |t: &Trajectory, l: &Limits| attribute(t, l, &d);
        assert_eq!(
            at(&traj(EndReason::MaxTokens, Some("reply cap: 2 replies")), &d),
            Some(HarnessLimit::ReplyCap)
        );
        assert_eq!(
            at(&traj(EndReason::MaxTokens, Some("token budget: the episode used")), &d),
            Some(HarnessLimit::TokenBudget)
        );
        let mut cut = traj(EndReason::MaxTokens, None);
        cut.turns.push(Turn {
            request_sha256: String::new(),
            messages: 2,
            sent: Vec::new(),
            text: None,
            tool_calls: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            latency_ms: 0,
            finish_reason: Some("length".into()),
        });
        assert_eq!(
            at(&cut, &d),
            Some(HarnessLimit::ReplyCap),
            "an older trajectory: the last reply was cut"
        );
        assert_eq!(at(&traj(EndReason::ContextOverflow, None), &d), Some(HarnessLimit::Context));
        assert_eq!(at(&traj(EndReason::Timeout, None), &d), Some(HarnessLimit::WallTime));
        // the default budget (twice the plan) is the model's; a user cap below it is not
        assert_eq!(at(&traj(EndReason::MaxSteps, None), &d), None);
        let capped = Limits { max_steps: 10, ..d };
        assert_eq!(at(&traj(EndReason::MaxSteps, None), &capped), Some(HarnessLimit::StepCap));
        let generous = Limits { max_steps: 40, ..d };
        assert_eq!(at(&traj(EndReason::MaxSteps, None), &generous), None);
        let turns = Limits { max_turns: 5, ..d };
        assert_eq!(at(&traj(EndReason::MaxTurns, None), &turns), Some(HarnessLimit::TurnCap));
        assert_eq!(at(&traj(EndReason::MaxTurns, None), &d), None);
        for e in [
            EndReason::Finished,
            EndReason::ToolCallParseError,
            EndReason::Degenerate,
            EndReason::Stuck,
            EndReason::Stopped,
            EndReason::BackendError,
        ] {
            assert_eq!(at(&traj(e, None), &d), None, "{e:?}");
        }
    }

    #[test]
    fn rows_above_the_threshold_are_not_publishable() {
        assert!(publishable(0, 40));
        assert!(publishable(2, 40), "5.0% is at the threshold");
        assert!(!publishable(3, 40), "7.5% is above it");
        assert!(!publishable(0, 0), "nothing scored, nothing to publish");
    }
}
