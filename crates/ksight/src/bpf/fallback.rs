//! The one way every loader picks its hook: try each candidate in turn, pass over a hook kind
//! the feature probes refuse (keeping their reason), keep the first that loads and attaches,
//! and remember why each one before it failed.

use anyhow::Result;

use super::features::refusal;
use super::hooks::Hook;

/// One candidate, as its loader offers it.
pub enum Attempt<'a, T> {
    /// Does not apply here (sharing the programs of a collector that is not running).
    Pass,
    /// Load and attach on this hook kind, unless its feature probe says no.
    Load(Hook, Box<dyn FnOnce() -> Result<T> + 'a>),
    /// Done already on this hook kind: programs another collector loaded.
    Shared(Hook, Result<T>),
}

pub struct Outcome<T> {
    /// What attached, and its hook kind.
    pub attached: Option<(T, Hook)>,
    /// Why each candidate before it failed, in order.
    pub failures: Vec<(Hook, String)>,
}

/// Runs the attempts in order until one succeeds. The iterator is lazy: a candidate after the
/// winner is never loaded.
pub fn first_that_attaches<'a, T>(
    attempts: impl IntoIterator<Item = Attempt<'a, T>>,
) -> Outcome<T> {
    let mut failures = Vec::new();
    for attempt in attempts {
        let (hook, result) = match attempt {
            Attempt::Pass => continue,
            Attempt::Shared(hook, result) => (hook, result),
            Attempt::Load(hook, load) => match refusal(hook) {
                Some(why) => {
                    failures.push((hook, why));
                    continue;
                }
                None => (hook, load()),
            },
        };
        match result {
            Ok(value) => {
                return Outcome {
                    attached: Some((value, hook)),
                    failures,
                }
            }
            Err(err) => failures.push((hook, format!("{err:#}"))),
        }
    }
    Outcome {
        attached: None,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_success_wins_and_earlier_failures_are_kept() {
        let mut tried = Vec::new();
        let attempts = [1, 2, 3, 4].into_iter().map(|n| {
            tried.push(n);
            match n {
                1 => Attempt::Pass,
                2 => Attempt::Shared(Hook::TpBtf, Err(anyhow::anyhow!("no host"))),
                _ => Attempt::Shared(Hook::RawTp, Ok(n)),
            }
        });
        let outcome = first_that_attaches(attempts);
        assert_eq!(outcome.attached, Some((3, Hook::RawTp)));
        assert_eq!(outcome.failures, vec![(Hook::TpBtf, "no host".to_string())]);
        assert_eq!(tried, [1, 2, 3], "nothing after the winner is tried");
    }

    #[test]
    fn none_attaching_keeps_every_reason() {
        let attempts = [Hook::TpBtf, Hook::Tracepoint]
            .map(|h| Attempt::<()>::Shared(h, Err(anyhow::anyhow!("refused"))));
        let outcome = first_that_attaches(attempts);
        assert!(outcome.attached.is_none());
        assert_eq!(outcome.failures.len(), 2);
    }
}
