//! Fault injection for the test suite, compiled in only with the `fault-injection` feature
//! (scripts/test turns it on; release builds leave it off, so no environment variable can
//! break a production ksight):
//! - `KSIGHT_BREAK_STEPS=flip,barrier,drain,collect`: each listed step fails at its 1st,
//!   3rd, 5th… attempt, so both the failure and the retry that follows are exercised;
//!   `panic` makes the collector thread panic at its first scrape;
//! - `KSIGHT_BREAK_HOOK=collector:hook,…` (collector.rs): that candidate fails to attach;
//! - `KSIGHT_REFUSE=feature,…` (features.rs): the probes of those features answer no, as on
//!   a kernel without them (`tcx` makes capture take the clsact path, `task_file_iter` name
//!   the sockets open before start through pidfd_getfd).

/// The value of a fault-injection variable; always None without the feature.
pub fn env(name: &str) -> Option<String> {
    if cfg!(feature = "fault-injection") {
        std::env::var(name).ok()
    } else {
        None
    }
}

/// Whether `KSIGHT_BREAK_HOOK` lists `item` (`collector:hook`).
pub fn hook_broken(item: &str) -> bool {
    env("KSIGHT_BREAK_HOOK").is_some_and(|list| list.split(',').any(|i| i.trim() == item))
}

/// Fails when `KSIGHT_BREAK_STEPS` lists `step` and this is an odd attempt of it by
/// `subject` (a collector, or a table): each fails every other time, whatever the others do.
pub fn check(step: &str, subject: &str) -> anyhow::Result<()> {
    let Some(list) = env("KSIGHT_BREAK_STEPS") else {
        return Ok(());
    };
    if !list.split(',').any(|s| s.trim() == step) {
        return Ok(());
    }
    if attempt(format!("{step}:{subject}")) % 2 == 1 {
        anyhow::bail!("injected fault in {step} (KSIGHT_BREAK_STEPS)");
    }
    Ok(())
}

/// Counts the attempts of `key`, from 1.
fn attempt(key: String) -> u64 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static ATTEMPTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let mut attempts = match ATTEMPTS.get_or_init(Default::default).lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let n = attempts.entry(key).or_insert(0);
    *n += 1;
    *n
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test sets the variables (tests of one binary share the environment).
    #[test]
    fn steps_fail_every_other_attempt_only_with_the_feature() {
        // SAFETY: no other test of this binary reads or writes these variables.
        unsafe {
            std::env::set_var("KSIGHT_BREAK_STEPS", "barrier, drain");
            std::env::set_var("KSIGHT_BREAK_HOOK", "syscalls:tp_btf");
            std::env::set_var("KSIGHT_REFUSE", "tcx, task_file_iter");
        }
        use crate::bpf::features::{refused_on_purpose, Feature};
        let refused = [Feature::Tcx, Feature::TaskFileIter, Feature::TpBtf].map(refused_on_purpose);
        let broken = crate::collector::broken_target("syscalls", crate::bpf::hooks::Hook::TpBtf);
        let results: Vec<bool> = (0..4).map(|_| check("drain", "a").is_err()).collect();
        assert!(check("flip", "a").is_ok() && check("flip", "a").is_ok());
        if cfg!(feature = "fault-injection") {
            assert_eq!(results, [true, false, true, false]);
            assert!(
                check("drain", "b").is_err(),
                "each subject counts its own attempts"
            );
            assert!(broken.is_some());
            assert_eq!(refused, [true, true, false]);
        } else {
            // What a release build does: nothing.
            assert_eq!(results, [false; 4]);
            assert_eq!(broken, None);
            assert_eq!(refused, [false; 3]);
            assert_eq!(env("KSIGHT_BREAK_STEPS"), None);
        }
    }
}
