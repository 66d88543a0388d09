//! Facts about the running kernel: its release, version and page size.

/// The kernel release as `uname -r` prints it ("unknown" if /proc cannot say).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// (major, minor) of a release string; (0, 0) where it has no numbers.
pub fn version_of(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// (major, minor) of the running kernel.
pub fn version() -> (u32, u32) {
    version_of(&release())
}

/// The page size: 4 KiB on x86_64, 4, 16 or 64 KiB on arm64 (a ring buffer is a power of
/// two of pages; ELF mappings start on page boundaries).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_of("5.10.0-46-amd64"), (5, 10));
        assert_eq!(version_of("7.3.4+deb13-amd64"), (7, 3));
        assert_eq!(version_of("6.18.44-fc-v782"), (6, 18));
        assert_eq!(version_of("unknown"), (0, 0));
    }
}
