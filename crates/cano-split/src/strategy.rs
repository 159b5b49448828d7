//! [`JoinStrategy`]: when a split state has enough, and when it can never have enough.
//!
//! The rules are pure functions of a [`Tally`] (how many branches there are, how many
//! succeeded, how many failed), so the join loop and the tests share one definition.

use std::fmt;

/// The most branches one split runs: each branch carries its index as a `u32`, which
/// keeps a spawned branch within tokio's smallest task cell.
pub(crate) const MAX_BRANCHES: usize = u32::MAX as usize;

/// When a split state moves on to its join state.
///
/// Every strategy proceeds as soon as its rule holds and cancels the branches still
/// running; none waits for stragglers it does not need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JoinStrategy {
    /// Every branch must succeed; the first failure fails the split.
    All,
    /// The first success is enough; the split fails only when every branch failed.
    Any,
    /// `n` successes are enough; the split fails as soon as `n` became impossible.
    Quorum(usize),
    /// Like `Quorum(ceil(p × branches))`, for `p` in (0, 1].
    Percentage(f64),
    /// `min` successes are enough (as in cano 0.13): the split proceeds as soon as `min`
    /// branches succeeded, cancelling the rest, and fails once `min` became
    /// impossible. The next state reads the values and the errors of the branches
    /// that finished from the [`SplitResult`](crate::SplitResult).
    PartialResults(usize),
    /// Waits until the join timeout (which it requires), then proceeds with whatever
    /// finished, successes and failures alike, if at least one branch finished (none:
    /// the split fails); proceeds earlier only if every branch has finished.
    PartialTimeout,
}

/// How far a split's branches have got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// How many branches the split has.
    pub total: usize,
    /// How many succeeded.
    pub succeeded: usize,
    /// How many failed.
    pub failed: usize,
}

impl Tally {
    /// Branches that have not finished (running, or not yet started under a bulkhead).
    pub fn unfinished(&self) -> usize {
        self.total - self.succeeded - self.failed
    }
}

/// What a strategy makes of a [`Tally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: keep waiting for branches.
    Wait,
    /// The rule holds: move to the join state.
    Proceed,
    /// The rule can no longer hold: fail the split.
    Fail,
}

impl JoinStrategy {
    /// The decision for `tally`. [`PartialTimeout`](Self::PartialTimeout) says `Wait`
    /// until every branch has finished; its timeout is the join loop's business.
    #[inline]
    pub fn decide(&self, tally: Tally) -> Verdict {
        let Tally {
            total,
            succeeded,
            failed,
        } = tally;
        let finished = succeeded + failed;
        match *self {
            Self::All if failed > 0 => Verdict::Fail,
            Self::All if succeeded == total => Verdict::Proceed,
            Self::Any if succeeded > 0 => Verdict::Proceed,
            Self::Any if failed == total => Verdict::Fail,
            Self::Quorum(_) | Self::Percentage(_) | Self::PartialResults(_) => {
                let needed = self.successes_needed(total).unwrap_or(total);
                if succeeded >= needed {
                    Verdict::Proceed
                } else if total - failed < needed {
                    Verdict::Fail
                } else {
                    Verdict::Wait
                }
            }
            Self::PartialTimeout if finished == total => Verdict::Proceed,
            _ => Verdict::Wait,
        }
    }

    /// Whether `completed` finished branches out of `total` meet the strategy's count,
    /// as cano 0.13 reads it: `All` needs every branch, `Any` one, `Quorum(n)` and
    /// `PartialResults(n)` `n`, `Percentage(p)` `ceil(p × total)`, `PartialTimeout` one.
    /// The join itself also weighs failures ([`decide`](Self::decide)).
    pub fn is_satisfied(&self, completed: usize, total: usize) -> bool {
        let needed = match *self {
            Self::All => total,
            Self::Any | Self::PartialTimeout => 1,
            Self::Quorum(n) | Self::PartialResults(n) => n,
            Self::Percentage(p) => ceil_share(p, total),
        };
        completed >= needed
    }

    /// How many successes the strategy needs out of `total` branches, for the
    /// strategies that count successes.
    pub fn successes_needed(&self, total: usize) -> Option<usize> {
        match *self {
            Self::All => Some(total),
            Self::Any => Some(1),
            Self::Quorum(n) | Self::PartialResults(n) => Some(n),
            Self::Percentage(p) => Some(ceil_share(p, total)),
            Self::PartialTimeout => None,
        }
    }

    /// Mistakes that do not depend on the number of branches.
    pub(crate) fn check(&self, has_timeout: bool) -> Vec<String> {
        let mut problems = Vec::new();
        match *self {
            Self::Quorum(0) => problems.push(
                "Quorum(0) would proceed before any branch ran; ask for at least one success"
                    .to_owned(),
            ),
            Self::Percentage(p) if !(p > 0.0 && p <= 1.0) => problems.push(format!(
                "Percentage({p}) is outside (0, 1]; use a share such as 0.5 for half the branches"
            )),
            Self::PartialResults(0) => problems.push(
                "PartialResults(0) would proceed before any branch finished; ask for at least one"
                    .to_owned(),
            ),
            Self::PartialTimeout if !has_timeout => problems.push(
                "PartialTimeout waits for the join timeout, but none is set; add .with_timeout(duration) to the JoinConfig"
                    .to_owned(),
            ),
            _ => {}
        }
        problems
    }

    /// Mistakes that depend on the number of branches, `total`.
    pub(crate) fn check_count(&self, total: usize) -> Option<String> {
        match *self {
            _ if total > MAX_BRANCHES => Some(format!(
                "it has {total} branches, more than the {MAX_BRANCHES} one split can run; split the work into several splits or batches"
            )),
            Self::Any if total == 0 => Some(
                "Any needs at least one branch, but there are none; add branches or use All"
                    .to_owned(),
            ),
            Self::Quorum(n) if n > total => Some(format!(
                "Quorum({n}) needs more successes than the {total} branches can give; lower it or add branches"
            )),
            Self::PartialResults(n) if n > total => Some(format!(
                "PartialResults({n}) waits for more branches than the {total} there are; lower it or add branches"
            )),
            _ => None,
        }
    }
}

impl fmt::Display for JoinStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::Any => f.write_str("Any"),
            Self::Quorum(n) => write!(f, "Quorum({n})"),
            Self::Percentage(p) => write!(f, "Percentage({p})"),
            Self::PartialResults(n) => write!(f, "PartialResults({n})"),
            Self::PartialTimeout => f.write_str("PartialTimeout"),
        }
    }
}

/// `ceil(p × total)`, at least one branch when there are any, and robust to the
/// rounding of products such as `0.3 × 10 = 3.0000000000000004`.
fn ceil_share(p: f64, total: usize) -> usize {
    if total == 0 {
        return 0;
    }
    let exact = p * total as f64;
    let nearest = exact.round();
    let share = if (exact - nearest).abs() <= 1e-9 * exact.max(1.0) {
        nearest
    } else {
        exact.ceil()
    };
    (share as usize).clamp(1, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(total: usize, succeeded: usize, failed: usize) -> Tally {
        Tally {
            total,
            succeeded,
            failed,
        }
    }

    #[test]
    fn percentages_round_up_without_float_noise() {
        assert_eq!(ceil_share(0.3, 10), 3);
        assert_eq!(ceil_share(0.5, 3), 2);
        assert_eq!(ceil_share(1.0, 7), 7);
        assert_eq!(ceil_share(0.01, 3), 1);
        assert_eq!(ceil_share(0.7, 10), 7);
        assert_eq!(ceil_share(0.5, 0), 0);
    }

    #[test]
    fn each_strategy_decides_as_documented() {
        use Verdict::*;
        assert_eq!(JoinStrategy::All.decide(tally(3, 2, 0)), Wait);
        assert_eq!(JoinStrategy::All.decide(tally(3, 3, 0)), Proceed);
        assert_eq!(JoinStrategy::All.decide(tally(3, 0, 1)), Fail);
        assert_eq!(JoinStrategy::All.decide(tally(0, 0, 0)), Proceed);
        assert_eq!(JoinStrategy::Any.decide(tally(3, 0, 2)), Wait);
        assert_eq!(JoinStrategy::Any.decide(tally(3, 1, 2)), Proceed);
        assert_eq!(JoinStrategy::Any.decide(tally(3, 0, 3)), Fail);
        assert_eq!(JoinStrategy::Quorum(2).decide(tally(4, 1, 2)), Wait);
        assert_eq!(JoinStrategy::Quorum(2).decide(tally(4, 2, 2)), Proceed);
        assert_eq!(JoinStrategy::Quorum(2).decide(tally(4, 1, 3)), Fail);
        assert_eq!(JoinStrategy::Percentage(0.5).decide(tally(4, 1, 2)), Wait);
        assert_eq!(JoinStrategy::Percentage(0.5).decide(tally(4, 1, 3)), Fail);
        // PartialResults counts successes (cano 0.13): failures only make it impossible.
        assert_eq!(JoinStrategy::PartialResults(2).decide(tally(4, 0, 1)), Wait);
        assert_eq!(JoinStrategy::PartialResults(2).decide(tally(4, 1, 2)), Wait);
        assert_eq!(
            JoinStrategy::PartialResults(2).decide(tally(4, 2, 1)),
            Proceed
        );
        assert_eq!(JoinStrategy::PartialResults(2).decide(tally(4, 1, 3)), Fail);
        assert_eq!(JoinStrategy::PartialTimeout.decide(tally(2, 1, 0)), Wait);
        assert_eq!(JoinStrategy::PartialTimeout.decide(tally(2, 1, 1)), Proceed);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(JoinStrategy::Quorum(0).check(false).len(), 1);
        assert_eq!(JoinStrategy::Percentage(0.0).check(false).len(), 1);
        assert_eq!(JoinStrategy::Percentage(1.5).check(false).len(), 1);
        assert_eq!(JoinStrategy::Percentage(f64::NAN).check(false).len(), 1);
        assert!(JoinStrategy::Percentage(1.0).check(false).is_empty());
        assert_eq!(JoinStrategy::PartialTimeout.check(false).len(), 1);
        assert!(JoinStrategy::PartialTimeout.check(true).is_empty());
        assert!(
            JoinStrategy::Quorum(4)
                .check_count(3)
                .unwrap()
                .contains("Quorum(4)")
        );
        assert!(JoinStrategy::Quorum(3).check_count(3).is_none());
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_split_too_large_to_index_is_refused() {
        let problem = JoinStrategy::All.check_count(MAX_BRANCHES + 1).unwrap();
        assert!(problem.contains("more than the 4294967295"), "{problem}");
        assert!(JoinStrategy::All.check_count(MAX_BRANCHES).is_none());
    }
}
