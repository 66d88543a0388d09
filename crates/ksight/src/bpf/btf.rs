//! The BTF programs are relocated against: the kernel's, or `--btf FILE`; and what it declares.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF to relocate against: `--btf FILE` when given (checked to be BTF), else the kernel's.
pub fn resolve_btf(custom: Option<&Path>) -> Result<Option<PathBuf>> {
    match custom {
        Some(path) => {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => bail!("--btf {}: {e}", path.display()),
            };
            if !is_btf(&bytes) {
                bail!(
                    "--btf {}: not a BTF file (no BTF magic, no .BTF section)",
                    path.display()
                );
            }
            Ok(Some(path.to_path_buf()))
        }
        None if Path::new(VMLINUX_BTF).exists() => Ok(None),
        None => bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing); pass --btf FILE (e.g. from BTFHub)"
        ),
    }
}

/// Raw BTF (magic 0xeB9F, either byte order) or an ELF file with a .BTF section.
pub fn is_btf(bytes: &[u8]) -> bool {
    if bytes.len() >= 24 && (bytes[..2] == [0x9f, 0xeb] || bytes[..2] == [0xeb, 0x9f]) {
        return true;
    }
    bytes.starts_with(b"\x7fELF") && bytes.windows(5).any(|w| w == b".BTF\0")
}

/// Parameter count of tracepoint `name` as the kernel's BTF declares it (its `btf_trace_NAME`
/// typedef, a pointer to a function prototype); `btf` is `--btf`, else the kernel's own.
pub fn tracepoint_params(btf: Option<&Path>, name: &str) -> Option<usize> {
    use libbpf_rs::btf::{types::FuncProto, Btf, BtfType};
    let btf = match btf {
        Some(path) => Btf::from_path(path).ok()?,
        None => Btf::from_vmlinux().ok()?,
    };
    let typedef: BtfType<'_> = btf.type_by_name(&format!("btf_trace_{name}"))?;
    let proto = typedef.next_type()?.next_type()?;
    FuncProto::try_from(proto).ok().map(|p| p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_magic() {
        let mut raw = vec![0x9f, 0xeb, 1, 0];
        raw.resize(32, 0);
        assert!(is_btf(&raw));
        assert!(!is_btf(b"hello, this is not a BTF file at all"));
    }

    #[test]
    fn tracepoint_parameters_from_btf() {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return; // nothing to read: the version fallback applies
        }
        let issue = tracepoint_params(None, "block_rq_issue");
        assert!(matches!(issue, Some(2) | Some(3)), "{issue:?}");
        assert_eq!(tracepoint_params(None, "ksight_no_such_tracepoint"), None);
        let missing = Path::new("/nonexistent/btf");
        assert_eq!(tracepoint_params(Some(missing), "block_rq_issue"), None);
    }
}
