//! What this kernel offers, one probe per optional feature: each loads and attaches (or
//! creates) the smallest thing that uses the feature, once per process, and its answer
//! decides. The loaders (capture's programs and owners, `serve --pin`, the collectors'
//! costlier hooks) and `ksight doctor` all ask here, so what doctor says is what the jobs do.
//!
//! Kernels of one version differ by build (one 6.18 refuses the task_file iterator and
//! allows tcx, another allows both): nothing here reads a version number. In builds with the
//! `fault-injection` feature `KSIGHT_REFUSE=tcx,task_file_iter,…` makes the probes of the
//! named features answer no, so the tests run every fallback on any kernel.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{AsRawLibbpf, Link};
use serde::Serialize;

use crate::bpf::hooks::Hook;
use crate::bpf::{self, link_from_raw, LoadConfig, LoadSpec, LoadedObject};

/// One optional kernel feature. Its name is a contract: doctor's table and JSON, and
/// `KSIGHT_REFUSE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    Tracepoint,
    RawTp,
    TpBtf,
    Fentry,
    Kprobe,
    Uprobe,
    /// A perf_event program on a software cpu-clock event (the profiler's sampling).
    PerfEvent,
    RingBuffer,
    TaskStorage,
    StackMap,
    SockStorage,
    /// cgroup socket hooks on the cgroup v2 root, writing socket storage (capture's owners).
    SockHooks,
    /// The task_file iterator with bpf_sock_from_file (capture: sockets open before start).
    TaskFileIter,
    /// pidfd_getfd on other processes (capture: the same, from user space).
    PidfdGetfd,
    Tcx,
    Clsact,
    /// A BPF filesystem at /sys/fs/bpf, or one ksight may mount there (`serve --pin`).
    Bpffs,
    /// tracefs, for classic tracepoints and legacy kprobes (ksight mounts a private one).
    Tracefs,
}

impl Feature {
    pub const ALL: [Feature; 18] = [
        Feature::Tracepoint,
        Feature::RawTp,
        Feature::TpBtf,
        Feature::Fentry,
        Feature::Kprobe,
        Feature::Uprobe,
        Feature::PerfEvent,
        Feature::RingBuffer,
        Feature::TaskStorage,
        Feature::StackMap,
        Feature::SockStorage,
        Feature::SockHooks,
        Feature::TaskFileIter,
        Feature::PidfdGetfd,
        Feature::Tcx,
        Feature::Clsact,
        Feature::Bpffs,
        Feature::Tracefs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Tracepoint => Hook::Tracepoint.as_str(),
            Feature::RawTp => Hook::RawTp.as_str(),
            Feature::TpBtf => Hook::TpBtf.as_str(),
            Feature::Fentry => Hook::Fentry.as_str(),
            Feature::Kprobe => Hook::Kprobe.as_str(),
            Feature::Uprobe => Hook::Uprobe.as_str(),
            Feature::PerfEvent => Hook::PerfEvent.as_str(),
            Feature::RingBuffer => "ring_buffer",
            Feature::TaskStorage => "task_storage",
            Feature::StackMap => "stack_map",
            Feature::SockStorage => "sk_storage",
            Feature::SockHooks => "cgroup_sock_hooks",
            Feature::TaskFileIter => "task_file_iter",
            Feature::PidfdGetfd => "pidfd_getfd",
            Feature::Tcx => "tcx",
            Feature::Clsact => "clsact",
            Feature::Bpffs => "bpffs",
            Feature::Tracefs => "tracefs",
        }
    }

    /// The feature a collector's or trace's hook kind needs.
    pub fn of_hook(hook: Hook) -> Feature {
        match hook {
            Hook::TpBtf => Feature::TpBtf,
            Hook::RawTp => Feature::RawTp,
            Hook::Tracepoint => Feature::Tracepoint,
            Hook::Fentry => Feature::Fentry,
            Hook::Kprobe => Feature::Kprobe,
            Hook::Uprobe => Feature::Uprobe,
            Hook::PerfEvent => Feature::PerfEvent,
        }
    }
}

/// A probe's answer: whether the feature works, and in what words (the kernel's own where
/// it refused).
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What every probe needs to know: the BTF to load with (`--btf`) and how tracefs was found
/// at start. Set once by main before any probe runs.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub btf: Option<&'static Path>,
    pub tracefs: crate::bpf::tracefs::Tracefs,
}

static SETTING: OnceLock<Setting> = OnceLock::new();
static ANSWERS: OnceLock<Mutex<BTreeMap<Feature, Answer>>> = OnceLock::new();

/// Records `--btf` and the tracefs found at start (the first call wins).
pub fn set(setting: Setting) {
    let _ = SETTING.set(setting);
}

fn setting() -> Setting {
    SETTING.get().copied().unwrap_or(Setting {
        btf: None,
        tracefs: crate::bpf::tracefs::Tracefs::Host,
    })
}

/// How tracefs was found at start.
pub fn tracefs_at_start() -> crate::bpf::tracefs::Tracefs {
    setting().tracefs
}

/// The answer for `feature`, probed at the first ask.
pub fn check(feature: Feature) -> Answer {
    let answers = ANSWERS.get_or_init(Default::default);
    let cached = match answers.lock() {
        Ok(map) => map.get(&feature).cloned(),
        Err(poisoned) => poisoned.into_inner().get(&feature).cloned(),
    };
    if let Some(answer) = cached {
        return answer;
    }
    // Probed without the lock: probes run for tens of milliseconds, and one asking for
    // another (none does today) must not deadlock. Two threads may both probe: same answer.
    let answer = probe_or_refuse(feature);
    let mut map = match answers.lock() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(feature).or_insert(answer).clone()
}

/// Whether `feature` works here.
pub fn has(feature: Feature) -> bool {
    check(feature).ok
}

/// Why a loader should not try programs on `hook`: its probe said no (None: try them). The
/// probe is the smallest program on the hook kind; a real program may still be refused, and
/// then the loader falls back as well.
pub fn refusal(hook: Hook) -> Option<String> {
    let answer = check(Feature::of_hook(hook));
    (!answer.ok).then(|| format!("the {hook} probe failed: {}", answer.detail))
}

/// Every feature's answer, in `Feature::ALL` order.
pub fn check_all() -> Vec<Answer> {
    Feature::ALL.into_iter().map(check).collect()
}

fn probe_or_refuse(feature: Feature) -> Answer {
    let result = if refused_on_purpose(feature) {
        Err(anyhow!(
            "refused on purpose (KSIGHT_REFUSE, fault injection)"
        ))
    } else {
        probe(feature)
    };
    match result {
        Ok(detail) => Answer {
            name: feature.name(),
            ok: true,
            detail,
        },
        Err(err) => Answer {
            name: feature.name(),
            ok: false,
            detail: format!("{err:#}"),
        },
    }
}

/// Fault-injection builds: `KSIGHT_REFUSE` lists features to answer no for.
pub fn refused_on_purpose(feature: Feature) -> bool {
    crate::fault_injection::env("KSIGHT_REFUSE")
        .is_some_and(|list| list.split(',').any(|f| f.trim() == feature.name()))
}

/// Probes `feature`; Ok holds what was seen to work.
fn probe(feature: Feature) -> Result<String> {
    let config = LoadConfig {
        btf: setting().btf,
        ..LoadConfig::default()
    };
    let works = || "works".to_string();
    match feature {
        Feature::Uprobe => uprobe::probe(config),
        Feature::PerfEvent => probe_perf_event(config).map(|()| works()),
        Feature::Tracepoint
        | Feature::RawTp
        | Feature::TpBtf
        | Feature::Fentry
        | Feature::Kprobe => probe_attach(feature, config).map(|()| works()),
        Feature::RingBuffer => probe_map(libbpf_sys::BPF_MAP_TYPE_RINGBUF).map(|()| works()),
        Feature::TaskStorage => probe_map(libbpf_sys::BPF_MAP_TYPE_TASK_STORAGE).map(|()| works()),
        Feature::StackMap => probe_map(libbpf_sys::BPF_MAP_TYPE_STACK_TRACE).map(|()| works()),
        Feature::SockStorage => probe_map(libbpf_sys::BPF_MAP_TYPE_SK_STORAGE).map(|()| works()),
        Feature::SockHooks => probe_sock_hooks(config),
        Feature::TaskFileIter => probe_task_file_iter(config).map(|()| works()),
        Feature::PidfdGetfd => probe_pidfd_getfd(),
        Feature::Tcx => tc::probe(config, tc::Kind::Tcx),
        Feature::Clsact => tc::probe(config, tc::Kind::Clsact),
        Feature::Bpffs => probe_bpffs(),
        Feature::Tracefs => match setting().tracefs {
            crate::bpf::tracefs::Tracefs::Missing => bail!("{}", setting().tracefs.describe()),
            other => Ok(other.describe().to_string()),
        },
    }
}

/// The feature-probe object (feature_probes.bpf.c) with only `programs` loaded (and its socket storage map only if asked).
fn load_probe(programs: &[&str], config: LoadConfig, attach: bool) -> Result<LoadedObject> {
    let uses_sk = programs.iter().any(|p| {
        matches!(
            *p,
            "probe_sock_create" | "probe_connect4" | "probe_task_file"
        )
    });
    let spec = LoadSpec {
        name: "probe",
        bytes: ksight_bpf::objects::FEATURE_PROBES,
        programs,
        max_entries: &[],
        broken_target: None,
        sections: &[],
        skip_maps: if uses_sk { &[] } else { &["probe_sk"] },
    };
    let loaded = if attach {
        bpf::load(&spec, config)
    } else {
        bpf::load_unattached(&spec, config)
    };
    loaded.map_err(|e| anyhow!("load: {e:#}"))
}

/// Loads the probe program of a tracing hook alone and attaches it for real.
fn probe_attach(feature: Feature, config: LoadConfig) -> Result<()> {
    let program = match feature {
        Feature::Tracepoint => "probe_tp",
        Feature::RawTp => "probe_raw_tp",
        Feature::TpBtf => "probe_tp_btf",
        Feature::Fentry => "probe_fentry",
        _ => "probe_kprobe",
    };
    load_probe(&[program], config, true)
        .map(drop)
        .map_err(|e| anyhow!("{e:#}{}", hint(feature)))
}

/// What a failure of this hook usually means, from what the kernel exposes.
fn hint(feature: Feature) -> String {
    let exists = |p: &str| Path::new(p).exists();
    match feature {
        Feature::Kprobe
            if !exists("/sys/bus/event_source/devices/kprobe")
                && !exists("/sys/kernel/tracing/kprobe_events") =>
        {
            " (this kernel has no kprobes: no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events)".into()
        }
        Feature::Fentry => " (the kernel refused a BPF trampoline program; fentry/fexit/LSM are unavailable here)".into(),
        Feature::Uprobe
            if !exists("/sys/bus/event_source/devices/uprobe")
                && !exists("/sys/kernel/tracing/uprobe_events") =>
        {
            " (this kernel has no uprobes: no uprobe PMU in /sys/bus/event_source/devices, no uprobe_events)".into()
        }
        Feature::Uprobe => " (EACCES/EPERM: the kernel refused the uprobe perf event; it wants CAP_SYS_ADMIN (CAP_PERFMON alone is refused on 6.18), or lockdown/perf_event_paranoid forbid it)".into(),
        _ => String::new(),
    }
}

/// A perf_event program attached to a software cpu-clock event on CPU 0: what the profiler
/// does on every CPU.
fn probe_perf_event(config: LoadConfig) -> Result<()> {
    let mut obj = load_probe(&["probe_perf_event"], config, false)?;
    let fd = crate::bpf::perf_event::open_cpu_clock(0, 1)
        .map_err(|e| anyhow!("perf_event_open (cpu-clock): {e}"))?;
    // The link takes the fd (libbpf closes it with the link).
    obj.attach_perf_event("probe_perf_event", fd)
}

/// Creates a map of the type for real (libbpf builds the BTF that storage maps need).
fn probe_map(map_type: libbpf_sys::bpf_map_type) -> Result<()> {
    // SAFETY: a libbpf probe that creates and closes a map; no pointers kept.
    let ret = unsafe { libbpf_sys::libbpf_probe_bpf_map_type(map_type, std::ptr::null()) };
    match ret {
        1 => Ok(()),
        0 => bail!("the kernel does not offer this map type"),
        e => bail!("probe failed: {}", std::io::Error::from_raw_os_error(-e)),
    }
}

/// A socket-creation and a connect hook writing socket storage, attached to the cgroup v2
/// root and detached at once (they allow everything meanwhile).
fn probe_sock_hooks(config: LoadConfig) -> Result<String> {
    let root = crate::enrich::cgroup::v2_root().ok_or_else(|| anyhow!("no cgroup v2 mount"))?;
    let obj = load_probe(&["probe_sock_create", "probe_connect4"], config, false)?;
    let dir = std::fs::File::open(&root)
        .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
    for name in ["probe_sock_create", "probe_connect4"] {
        let link = attach_cgroup(&obj, name, &dir).map_err(|e| anyhow!("attach {name}: {e:#}"))?;
        drop(link); // detached at once: the attach was the probe
    }
    Ok(format!("works (on the cgroup v2 root {})", root.display()))
}

/// Attaches a cgroup program of `obj` to the cgroup `dir` (a multi-attach link).
pub fn attach_cgroup(obj: &LoadedObject, name: &str, dir: &std::fs::File) -> Result<Link> {
    let prog = obj.program(name)?;
    // SAFETY: a loaded program of a live object and an open cgroup directory; libbpf makes a
    // multi-attach link (BPF_F_ALLOW_MULTI semantics): nothing is replaced.
    link_from_raw(unsafe {
        libbpf_sys::bpf_program__attach_cgroup(prog.as_libbpf_object().as_ptr(), dir.as_raw_fd())
    })
}

/// The task_file iterator reading each file's socket, run once over every task.
fn probe_task_file_iter(config: LoadConfig) -> Result<()> {
    let obj = load_probe(&["probe_task_file"], config, false)?;
    run_iterator(&obj, "probe_task_file")
}

/// Runs the iterator program `name` of `obj` once, to the end.
pub fn run_iterator(obj: &LoadedObject, name: &str) -> Result<()> {
    use std::io::Read;
    let prog = obj.program(name)?;
    // SAFETY: a loaded iterator program of a live object; no options (every task).
    let link = link_from_raw(unsafe {
        libbpf_sys::bpf_program__attach_iter(prog.as_libbpf_object().as_ptr(), std::ptr::null())
    })
    .context("attaching the iterator")?;
    let mut iter = libbpf_rs::Iter::new(&link).context("creating the iterator")?;
    let mut sink = Vec::new();
    iter.read_to_end(&mut sink)
        .context("running the iterator")?;
    Ok(())
}

/// pidfd_open of a process, as an owned fd.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the returned fd (if any) is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A copy of file descriptor `fd` of the process behind `pidfd` (pidfd_getfd: the caller
/// needs PTRACE_MODE_ATTACH over it, i.e. CAP_SYS_PTRACE for others' processes).
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall on a pidfd we own; the returned fd (if any) is ours.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

/// pidfd_getfd of one of ksight's own sockets through its own pidfd, and the permission to
/// do it to other processes (CAP_SYS_PTRACE; Yama's scope 3 forbids it to everyone).
fn probe_pidfd_getfd() -> Result<String> {
    const CAP_SYS_PTRACE: u32 = 19;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("a UDP socket to copy")?;
    let own = pidfd_open(std::process::id()).map_err(|e| anyhow!("pidfd_open: {e}"))?;
    pidfd_getfd(&own, socket.as_raw_fd()).map_err(|e| anyhow!("pidfd_getfd: {e}"))?;
    if !crate::privileges::has_cap(crate::privileges::effective_caps(), CAP_SYS_PTRACE) {
        bail!("no CAP_SYS_PTRACE: other users' processes cannot be read");
    }
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    if yama.trim() == "3" {
        bail!("kernel.yama.ptrace_scope is 3: no process may take another's descriptors");
    }
    Ok("works (CAP_SYS_PTRACE)".into())
}

/// A BPF filesystem mounted at /sys/fs/bpf, or the right to mount one there.
fn probe_bpffs() -> Result<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    let dir = crate::bpf::pins::BPFFS;
    if crate::bpf::pins::bpffs_mounted() {
        return Ok(format!("mounted at {dir}"));
    }
    if !Path::new(dir).is_dir() {
        bail!("{dir} does not exist, and no BPF filesystem can be mounted there");
    }
    if !crate::privileges::has_cap(crate::privileges::effective_caps(), CAP_SYS_ADMIN) {
        bail!("not mounted at {dir}, and mounting one needs CAP_SYS_ADMIN");
    }
    Ok(format!(
        "not mounted at {dir}: serve --pin mounts one there (as bpftool does)"
    ))
}

mod uprobe {
    //! The uprobe probe fires for real: a uprobe and a uretprobe on a function of ksight's
    //! own binary, which is then called; both must fire for each call.

    use anyhow::{anyhow, bail, Result};

    use super::{hint, load_probe, Feature};
    use crate::bpf::LoadConfig;

    /// Calls to the uprobe target while probed.
    const CALLS: u64 = 3;

    /// What the uprobe probe attaches to: a function of ksight's own binary.
    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn ksight_uprobe_target(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_add(1)
    }

    pub fn probe(config: LoadConfig) -> Result<String> {
        match fire(config) {
            Ok([entry, ret]) if entry == CALLS && ret == CALLS => Ok(format!(
                "works (a uprobe and a uretprobe on ksight's own code fired for {CALLS} of {CALLS} calls)"
            )),
            Ok([entry, ret]) => bail!(
                "attached, but of {CALLS} calls the uprobe saw {entry} and the uretprobe {ret}"
            ),
            Err(e) => {
                let text = format!("{e:#}");
                let refused = [libc::EACCES, libc::EPERM]
                    .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                    .iter()
                    .any(|why| text.contains(why.as_str()));
                let exists = |p: &str| std::path::Path::new(p).exists();
                let no_uprobes = !exists("/sys/bus/event_source/devices/uprobe")
                    && !exists("/sys/kernel/tracing/uprobe_events");
                let why = if refused || no_uprobes {
                    hint(Feature::Uprobe)
                } else {
                    String::new()
                };
                bail!("{text}{why}")
            }
        }
    }

    fn fire(config: LoadConfig) -> Result<[u64; 2]> {
        let obj = load_probe(&["probe_uprobe", "probe_uretprobe"], config, true)?;
        let (path, offset) = own_file_offset(ksight_uprobe_target as *const () as usize)?;
        let attach = |program, ret| {
            obj.attach_uprobe(program, ret, &path, offset)
                .map_err(|e| anyhow!("attach {program}: {e:#}"))
        };
        let _links = [
            attach("probe_uprobe", false)?,
            attach("probe_uretprobe", true)?,
        ];
        for i in 0..CALLS {
            std::hint::black_box(ksight_uprobe_target(i));
        }
        // libbpf names it OBJECT.bss (custom sections keep their own names)
        let (_, bss) = obj
            .maps()
            .into_iter()
            .find(|(name, _)| name.ends_with(".bss"))
            .ok_or_else(|| anyhow!("the feature-probe object has no .bss"))?;
        let value =
            libbpf_rs::MapCore::lookup(&bss, &0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)?
                .ok_or_else(|| anyhow!("the probe's counters cannot be read"))?;
        let count = |i: usize| {
            value
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_ne_bytes)
        };
        Ok([count(0), count(1)])
    }

    /// The file and file offset of code at `address` in this process, from /proc/self/maps
    /// (no symbol table needed: release builds may be stripped).
    fn own_file_offset(address: usize) -> Result<(std::path::PathBuf, u64)> {
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        maps.lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let (start, end) = (
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                );
                let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
                let path = fields.nth(2)?;
                ((start..end).contains(&address) && path.starts_with('/'))
                    .then(|| (path.into(), offset + (address - start) as u64))
            })
            .ok_or_else(|| anyhow!("ksight's own code is not in a file mapping"))
    }
}

mod tc {
    //! tcx and clsact, each attached for real to the loopback of a network namespace made
    //! for the probe (in a thread of its own: unshare(CLONE_NEWNET) moves only the calling
    //! thread), so no interface of the host is touched. Where no namespace can be made (a
    //! container without CAP_SYS_ADMIN), the host's loopback, with a program that passes
    //! every packet on, detached at once.

    use std::os::fd::AsFd;

    use anyhow::{anyhow, Result};
    use libbpf_rs::{TcHookBuilder, TC_INGRESS};

    use super::{link_from_raw, load_probe};
    use crate::bpf::{kernel_reason, LoadConfig};

    #[derive(Clone, Copy)]
    pub enum Kind {
        Tcx,
        Clsact,
    }

    pub fn probe(config: LoadConfig, kind: Kind) -> Result<String> {
        let own_namespace = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a plain syscall; it moves this thread alone to a new namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                Some(attach_to_loopback(config, kind))
            })
            .join()
            .unwrap_or_else(|_| Some(Err(anyhow!("the probe thread panicked"))))
        });
        match own_namespace {
            Some(result) => result.map(|()| "works".to_string()),
            None => attach_to_loopback(config, kind).map(|()| {
                "works (probed on the host's lo: no network namespace could be made)".into()
            }),
        }
    }

    /// Attaches the probe's TC program to `lo` of the current thread's namespace and takes
    /// it off again.
    fn attach_to_loopback(config: LoadConfig, kind: Kind) -> Result<()> {
        let lo = loopback_index()?;
        match kind {
            Kind::Tcx => {
                let obj = load_probe(&["probe_tcx"], config, false)?;
                let prog = obj.program("probe_tcx")?;
                let opts = libbpf_sys::bpf_tcx_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _,
                    ..Default::default()
                };
                // SAFETY: a loaded program of a live object; opts is a sized, zeroed struct.
                let link = link_from_raw(unsafe {
                    libbpf_sys::bpf_program__attach_tcx(
                        libbpf_rs::AsRawLibbpf::as_libbpf_object(&prog).as_ptr(),
                        lo,
                        &opts,
                    )
                })
                .map_err(|e| anyhow!("attach: {e:#}"))?;
                drop(link);
                Ok(())
            }
            Kind::Clsact => {
                let obj = load_probe(&["probe_tc"], config, false)?;
                let prog = obj.program("probe_tc")?;
                let mut hook = TcHookBuilder::new(prog.as_fd())
                    .ifindex(lo)
                    .replace(false)
                    .hook(TC_INGRESS);
                hook.create()
                    .map_err(|e| anyhow!("clsact qdisc: {}", kernel_reason(&e)))?;
                let mut attached = hook
                    .attach()
                    .map_err(|e| anyhow!("tc filter: {}", kernel_reason(&e)))?;
                attached
                    .detach()
                    .map_err(|e| anyhow!("detaching the tc filter: {}", kernel_reason(&e)))
            }
        }
    }

    fn loopback_index() -> Result<i32> {
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if index == 0 {
            return Err(anyhow!("no lo: {}", std::io::Error::last_os_error()));
        }
        Ok(index as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for f in Feature::ALL {
            assert!(seen.insert(f.name()), "{} twice", f.name());
        }
        for h in Hook::ALL {
            assert_eq!(Feature::of_hook(h).name(), h.as_str());
        }
    }
}
