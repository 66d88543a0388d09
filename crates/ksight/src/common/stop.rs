//! SIGINT and SIGTERM: the loops of trace, profile and capture drain what is left and exit.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: the loops drain what is left and exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); no SA_RESTART, so
        // a blocking poll returns EINTR and the loop sees STOP at once.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}
