//! Resource limits ksight raises for itself.

/// Lifts the soft open-file limit to the hard one: --web.max-connections (1024 by default)
/// plus the BPF objects need more than the usual soft 1024. Failing leaves the limit as it
/// was; accept then waits out EMFILE. (`ksight profile` too: it keeps every mapped binary
/// open.)
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
