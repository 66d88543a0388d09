//! `ksight doctor`: what this kernel really supports, found by loading and attaching tiny
//! programs (not by reading version numbers), and the hook each collector would use.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use libbpf_rs::{Link, ObjectBuilder};
use serde::Serialize;

use crate::bpf::{kernel_reason, LoadConfig};
use crate::collector::{self, Limits, OptionValues};
use crate::collectors;
use crate::enrich::Enricher;
use crate::hooks::Hook;
use crate::privileges;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    btf: Check,
    tracefs: String,
    /// A BPF filesystem at /sys/fs/bpf, for `serve --pin`.
    bpffs: Check,
    privileges: Privileges,
    hooks: Vec<Feature>,
    collectors: Vec<CollectorReport>,
    ok: bool,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct Privileges {
    euid: u32,
    capabilities: Vec<&'static str>,
    can_load: bool,
    /// What `setcap …+ep` must give a non-root ksight on this kernel.
    minimal: Vec<&'static str>,
}

#[derive(Serialize)]
struct Feature {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct CollectorReport {
    name: &'static str,
    default: bool,
    hook: String,
    detail: String,
}

pub fn run(
    args: DoctorArgs,
    btf: Option<&'static Path>,
    tracefs: privileges::Tracefs,
) -> Result<ExitCode> {
    let report = build_report(btf, tracefs);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_report(btf: Option<&'static Path>, tracefs: privileges::Tracefs) -> Report {
    let caps = privileges::effective_caps();
    let can_load = privileges::can_load_tracing(caps);
    let btf_check = match privileges::resolve_btf(btf) {
        Ok(Some(p)) => Check {
            ok: true,
            detail: format!("{} (--btf)", p.display()),
        },
        Ok(None) => Check {
            ok: true,
            detail: privileges::VMLINUX_BTF.into(),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("{e:#}"),
        },
    };
    let config = LoadConfig {
        include_self: false,
        cgroup_mode: 0,
        btf: btf.filter(|_| btf_check.ok),
    };
    let mut hooks = Vec::new();
    let mut collectors_out = Vec::new();
    if can_load && btf_check.ok {
        for hook in Hook::ALL {
            if hook == Hook::Uprobe {
                hooks.push(probe_uprobe(config));
                continue;
            }
            let result = probe_hook(hook, config).map_err(|e| anyhow!("{e:#}{}", hint(hook)));
            hooks.push(feature(hook.as_str(), result));
        }
        hooks.push(feature(
            "ring_buffer",
            probe_map(libbpf_sys::BPF_MAP_TYPE_RINGBUF),
        ));
        hooks.push(feature(
            "task_storage",
            probe_map(libbpf_sys::BPF_MAP_TYPE_TASK_STORAGE),
        ));
        collectors_out = probe_collectors(config);
    }
    let defaults_ok = collectors_out
        .iter()
        .filter(|c| c.default)
        .all(|c| c.hook != "none");
    Report {
        kernel: crate::kernel::release(),
        ok: can_load && btf_check.ok && defaults_ok && !collectors_out.is_empty(),
        btf: btf_check,
        tracefs: tracefs.describe().into(),
        bpffs: bpffs_check(),
        privileges: Privileges {
            // SAFETY: geteuid cannot fail.
            euid: unsafe { libc::geteuid() },
            capabilities: privileges::relevant_caps(caps),
            can_load,
            minimal: privileges::minimal_caps(
                crate::kernel::version(),
                tracefs == privileges::Tracefs::Host,
            ),
        },
        hooks,
        collectors: collectors_out,
    }
}

/// What a failure of this hook usually means, from what the kernel exposes.
fn hint(hook: Hook) -> String {
    let exists = |p: &str| Path::new(p).exists();
    match hook {
        Hook::Kprobe if !exists("/sys/bus/event_source/devices/kprobe") && !exists("/sys/kernel/tracing/kprobe_events") => {
            " (this kernel has no kprobes: no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events)".into()
        }
        Hook::Fentry => " (the kernel refused a BPF trampoline program; fentry/fexit/LSM are unavailable here)".into(),
        Hook::Uprobe if !exists("/sys/bus/event_source/devices/uprobe") && !exists("/sys/kernel/tracing/uprobe_events") => {
            " (this kernel has no uprobes: no uprobe PMU in /sys/bus/event_source/devices, no uprobe_events)".into()
        }
        Hook::Uprobe => " (EACCES/EPERM: the kernel refused the uprobe perf event; it wants CAP_SYS_ADMIN (CAP_PERFMON alone is refused on 6.18), or lockdown/perf_event_paranoid forbid it)".into(),
        _ => String::new(),
    }
}

fn feature(name: &str, result: Result<()>) -> Feature {
    match result {
        Ok(()) => Feature {
            name: name.into(),
            ok: true,
            detail: "works".into(),
        },
        Err(e) => Feature {
            name: name.into(),
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

/// Starts every collector of the registry for real (small maps), then stops them.
fn probe_collectors(config: LoadConfig) -> Vec<CollectorReport> {
    let limits = Limits {
        table_capacity: 64,
        series_ttl: std::time::Duration::from_secs(60),
    };
    let (_running, attachments) = collector::start_all(
        collectors::ALL,
        limits,
        &OptionValues::new(),
        config,
        &std::sync::Arc::new(std::sync::Mutex::new(Enricher::off())),
    );
    collectors::ALL
        .iter()
        .zip(attachments)
        .map(|(d, a)| CollectorReport {
            name: d.name,
            default: d.default,
            hook: a.hook.map_or("none".into(), |h| h.to_string()),
            detail: if a.failures.is_empty() {
                "ok".into()
            } else {
                a.reason()
            },
        })
        .collect()
}

fn bpffs_check() -> Check {
    let dir = crate::pins::BPFFS;
    if crate::pins::bpffs_mounted() {
        Check {
            ok: true,
            detail: format!("mounted at {dir} (serve --pin)"),
        }
    } else {
        Check {
            ok: false,
            detail: format!(
                "not mounted at {dir}: serve --pin mounts one there (as bpftool does), unless ksight runs in a mount namespace of its own"
            ),
        }
    }
}

/// Calls to the uprobe target while probed.
const UPROBE_CALLS: u64 = 3;

/// What the uprobe probe attaches to: a function of ksight's own binary.
#[no_mangle]
#[inline(never)]
pub extern "C" fn ksight_uprobe_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

/// A uprobe and a uretprobe on `ksight_uprobe_target`, which is then called: both must fire
/// for each call (counted in the kernel for this process only).
fn probe_uprobe(config: LoadConfig) -> Feature {
    let result = fire_uprobes(config);
    let (ok, detail) = match result {
        Ok([entry, ret]) if entry == UPROBE_CALLS && ret == UPROBE_CALLS => (
            true,
            format!("works (a uprobe and a uretprobe on ksight's own code fired for {UPROBE_CALLS} of {UPROBE_CALLS} calls)"),
        ),
        Ok([entry, ret]) => (
            false,
            format!("attached, but of {UPROBE_CALLS} calls the uprobe saw {entry} and the uretprobe {ret}"),
        ),
        Err(e) => {
            let refused = [libc::EACCES, libc::EPERM]
                .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                .iter()
                .any(|why| format!("{e:#}").contains(why.as_str()));
            let exists = |p: &str| Path::new(p).exists();
            let no_uprobes = !exists("/sys/bus/event_source/devices/uprobe")
                && !exists("/sys/kernel/tracing/uprobe_events");
            let why = if refused || no_uprobes {
                hint(Hook::Uprobe)
            } else {
                String::new()
            };
            (false, format!("{e:#}{why}"))
        }
    };
    Feature {
        name: Hook::Uprobe.as_str().into(),
        ok,
        detail,
    }
}

fn fire_uprobes(config: LoadConfig) -> Result<[u64; 2]> {
    let spec = crate::bpf::LoadSpec {
        name: "probe",
        bytes: ksight_bpf::objects::PROBE,
        programs: &["probe_uprobe", "probe_uretprobe"],
        max_entries: &[],
        broken_target: None,
        sections: &[],
        skip_maps: &[],
    };
    let obj = crate::bpf::load(&spec, config).map_err(|e| anyhow!("load: {e:#}"))?;
    let (path, offset) = own_file_offset(ksight_uprobe_target as *const () as usize)?;
    let attach = |program, ret| {
        obj.attach_uprobe(program, ret, &path, offset)
            .map_err(|e| anyhow!("attach {program}: {e:#}"))
    };
    let _links = [
        attach("probe_uprobe", false)?,
        attach("probe_uretprobe", true)?,
    ];
    for i in 0..UPROBE_CALLS {
        std::hint::black_box(ksight_uprobe_target(i));
    }
    // libbpf names it OBJECT.bss (custom sections keep their own names)
    let (_, bss) = obj
        .maps()
        .into_iter()
        .find(|(name, _)| name.ends_with(".bss"))
        .ok_or_else(|| anyhow!("the probe object has no .bss"))?;
    let value = libbpf_rs::MapCore::lookup(&bss, &0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)?
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

/// Loads the probe object with only the program for `hook`, and attaches it for real.
fn probe_hook(hook: Hook, config: LoadConfig) -> Result<()> {
    let program = match hook {
        Hook::Tracepoint => "probe_tp",
        Hook::RawTp => "probe_raw_tp",
        Hook::TpBtf => "probe_tp_btf",
        Hook::Fentry => "probe_fentry",
        Hook::Kprobe => "probe_kprobe",
        Hook::Uprobe => "probe_uprobe",
        Hook::PerfEvent => "probe_perf_event",
    };
    let mut builder = ObjectBuilder::default();
    if let Some(btf) = config.btf {
        builder.btf_custom_path(btf)?;
    }
    let mut open = builder.open_memory(ksight_bpf::objects::PROBE)?;
    for mut prog in open.progs_mut() {
        let keep = prog.name() == program;
        prog.set_autoload(keep);
    }
    let obj = open
        .load()
        .map_err(|e| anyhow!("load: {}", kernel_reason(&e)))?;
    let prog = obj
        .progs_mut()
        .find(|p| p.name() == program)
        .ok_or_else(|| anyhow!("no program {program}"))?;
    let _link: Link = match hook {
        Hook::PerfEvent => {
            let fd = open_cpu_clock_event()?;
            let link = prog.attach_perf_event(fd);
            // SAFETY: fd is ours; the link holds its own reference to the event.
            unsafe { libc::close(fd) };
            link
        }
        _ => prog.attach(),
    }
    .map_err(|e| anyhow!("attach: {}", kernel_reason(&e)))?;
    Ok(())
}

/// A software cpu-clock perf event on CPU 0, for the perf_event probe.
fn open_cpu_clock_event() -> Result<i32> {
    let mut attr = libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: libbpf_sys::PERF_COUNT_SW_CPU_CLOCK as u64,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = 1;
    attr.set_freq(1);
    // SAFETY: a valid perf_event_attr; the returned fd (if any) is owned by the caller.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const _,
            -1,
            0,
            -1,
            libbpf_sys::PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(anyhow!(
            "perf_event_open: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd as i32)
}

/// Creates a map of the type for real (libbpf builds the BTF storage maps need).
fn probe_map(map_type: libbpf_sys::bpf_map_type) -> Result<()> {
    // SAFETY: a libbpf probe that creates and closes a map; no pointers kept.
    let ret = unsafe { libbpf_sys::libbpf_probe_bpf_map_type(map_type, std::ptr::null()) };
    match ret {
        1 => Ok(()),
        0 => Err(anyhow!("the kernel does not offer this map type")),
        e => Err(anyhow!(
            "probe failed: {}",
            std::io::Error::from_raw_os_error(-e)
        )),
    }
}

/// The table; text that comes from elsewhere (paths, kernel messages) in the printable form.
fn print_table(r: &Report) {
    use crate::names::escape_controls as shown;
    println!("kernel       {}", shown(&r.kernel));
    println!("btf          {} {}", mark(r.btf.ok), shown(&r.btf.detail));
    println!("tracefs      {}", r.tracefs);
    println!("bpffs        {} {}", mark(r.bpffs.ok), r.bpffs.detail);
    println!(
        "privileges   {} euid {}, {}",
        mark(r.privileges.can_load),
        r.privileges.euid,
        if r.privileges.capabilities.is_empty() {
            "no BPF capabilities".into()
        } else {
            r.privileges.capabilities.join(" ")
        }
    );
    println!(
        "minimal      {} (setcap {}+ep, run as any user; dropped after attach)",
        r.privileges.minimal.join(" "),
        r.privileges.minimal.join(",")
    );
    println!("\nHOOK / FEATURE  OK   DETAIL");
    for h in &r.hooks {
        println!("{:<15} {:<4} {}", h.name, mark(h.ok), shown(&h.detail));
    }
    println!("\nCOLLECTOR    DEFAULT  HOOK        DETAIL");
    for c in &r.collectors {
        println!(
            "{:<12} {:<8} {:<11} {}",
            c.name,
            if c.default { "yes" } else { "no" },
            c.hook,
            shown(&c.detail)
        );
    }
    println!(
        "\n{}",
        if r.ok {
            "ok: the default collectors can run"
        } else {
            "not ok: see above"
        }
    );
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}
