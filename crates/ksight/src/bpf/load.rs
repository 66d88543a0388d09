//! Loading a ksight object: configure, choose programs, load, attach; and the mmapped
//! control words (`ks_ctl`) libbpf-rs does not wrap.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use ksight_bpf::abi::{ks_config, ks_ctl};
use libbpf_rs::{
    AsRawLibbpf, Link, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, OpenObject,
};

/// What every object is told before load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadConfig {
    pub include_self: bool,
    /// `enum ks_cgroup_mode`: which cgroup id goes into per-process keys (0: none).
    pub cgroup_mode: u32,
    /// A BTF file for kernels without /sys/kernel/btf/vmlinux.
    pub btf: Option<&'static std::path::Path>,
}

/// How to load one object: which programs to keep and how big its maps are.
pub struct LoadSpec<'a> {
    pub name: &'a str,
    pub bytes: &'static [u8],
    /// Programs to load; every other program of the object is left out.
    pub programs: &'a [&'a str],
    pub max_entries: &'a [(String, u32)],
    /// Attach BTF-based programs (fentry, tp_btf) to this target instead of their own: only
    /// to prove fallbacks in tests (KSIGHT_BREAK_HOOK).
    pub broken_target: Option<&'a str>,
    /// Initial contents of data sections other than `.rodata.cfg` (e.g. `.rodata.trace`),
    /// written before load so the verifier sees them as constants.
    pub sections: &'a [(&'a str, &'a [u8])],
    /// Maps not to create: they belong to programs of another candidate.
    pub skip_maps: &'a [&'a str],
}

/// A loaded, attached object. Dropping it detaches and unloads everything.
pub struct LoadedObject {
    links: Vec<Link>,
    obj: Object,
    ctl: Option<*mut ks_ctl>,
}

// SAFETY: libbpf objects carry no thread affinity; after load, LoadedObject only makes bpf()
// syscalls on its fds and atomic accesses to `ctl`, which points into the object's own mmap.
unsafe impl Send for LoadedObject {}
// SAFETY: as above: every method takes &self and is a syscall or an atomic access.
unsafe impl Sync for LoadedObject {}

pub fn load(spec: &LoadSpec<'_>, config: LoadConfig) -> Result<LoadedObject> {
    let mut loaded = load_unattached(spec, config)?;
    for prog in loaded.obj.progs_mut() {
        if spec.programs.iter().any(|p| prog.name() == *p) && !targets_at_run_time(&prog) {
            let link = prog.attach().map_err(|e| {
                anyhow!(
                    "attaching {}: {}",
                    prog.section().to_string_lossy(),
                    kernel_reason(&e)
                )
            })?;
            loaded.links.push(link);
        }
    }
    Ok(loaded)
}

/// Loads an object whose programs need an attach point of their own (an interface, a
/// cgroup): the caller attaches them with [`LoadedObject::program`].
pub fn load_unattached(spec: &LoadSpec<'_>, config: LoadConfig) -> Result<LoadedObject> {
    let mut open = open_object(spec, config)?;
    for mut prog in open.progs_mut() {
        let keep = spec.programs.iter().any(|p| prog.name() == *p);
        prog.set_autoload(keep);
        if let (true, Some(target)) = (keep, spec.broken_target) {
            prog.set_attach_target(0, Some(target.to_string()))?;
        }
    }
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if let Some((_, n)) = spec.max_entries.iter().find(|(m, _)| *m == name) {
            map.set_max_entries(*n)?;
        }
        if spec.skip_maps.contains(&name.as_str()) {
            map.set_autocreate(false)?;
        }
        if name == ".rodata.cfg" {
            write_config(&mut map, config)?;
        }
        if let Some((_, bytes)) = spec.sections.iter().find(|(m, _)| *m == name) {
            write_section(&mut map, bytes)?;
        }
    }
    let obj = open.load().map_err(|e| anyhow!("{}", kernel_reason(&e)))?;
    let ctl = find_ctl(&obj)?;
    Ok(LoadedObject {
        links: Vec::new(),
        obj,
        ctl,
    })
}

/// A user's object file (a config's `<name>.bpf.o`) loaded whole, nothing attached:
/// [`LoadedObject::attach_by_section`] attaches what libbpf can attach by section name.
/// `program_type` gives the type of programs in sections libbpf does not know (their
/// owner's conventions, such as ebpf_exporter's `perf_event/type=…`).
pub fn load_file(
    path: &std::path::Path,
    config: LoadConfig,
    program_type: impl Fn(&str) -> Option<libbpf_rs::ProgramType>,
    rodata: &[(String, u64)],
) -> Result<LoadedObject> {
    let mut builder = ObjectBuilder::default();
    if let Some(btf) = config.btf {
        builder.btf_custom_path(btf)?;
    }
    let mut open = builder
        .open_file(path)
        .map_err(|e| anyhow!("opening {}: {}", printable_path(path), kernel_reason(&e)))?;
    for mut prog in open.progs_mut() {
        if let Some(kind) = program_type(&prog.section().to_string_lossy()) {
            prog.set_prog_type(kind);
        }
    }
    write_rodata_u64s(&mut open, rodata)?;
    let obj = open
        .load()
        .map_err(|e| anyhow!("loading {}: {}", printable_path(path), kernel_reason(&e)))?;
    Ok(LoadedObject {
        links: Vec::new(),
        obj,
        ctl: None,
    })
}

fn printable_path(path: &std::path::Path) -> String {
    crate::decode::printable(path.as_os_str().as_encoded_bytes())
}

/// Sets `const volatile` 8-byte globals of `.rodata` by name before load (the verifier then
/// sees the values as constants), finding each one's offset in the object's BTF.
fn write_rodata_u64s(open: &mut OpenObject, values: &[(String, u64)]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    // SAFETY: the open object outlives this borrow of its BTF, which ends before the maps
    // are borrowed mutably below.
    let btf = libbpf_rs::btf::Btf::from_bpf_object(unsafe { open.as_libbpf_object().as_ref() })?
        .ok_or_else(|| anyhow!("the object has no BTF: its globals cannot be found"))?;
    let section = btf
        .type_by_name::<libbpf_rs::btf::types::DataSec<'_>>(".rodata")
        .ok_or_else(|| anyhow!("the object has no .rodata"))?;
    let mut offsets = Vec::new();
    for (name, value) in values {
        let var = section.iter().find(|v| {
            btf.type_by_id::<libbpf_rs::btf::types::Var<'_>>(v.ty)
                .and_then(|t| t.name())
                .is_some_and(|n| n.to_string_lossy() == name.as_str())
        });
        match var {
            Some(v) if v.size == 8 => offsets.push((v.offset as usize, *value)),
            Some(v) => bail!("global {name} is {} bytes, not 8", v.size),
            None => bail!("the object has no const volatile global {name} in .rodata"),
        }
    }
    drop(btf);
    // libbpf names the plain .rodata map after the object (`<obj>.rodata`)
    let mut rodata = open
        .maps_mut()
        .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
        .ok_or_else(|| anyhow!("the object has no .rodata map"))?;
    let data = rodata
        .initial_value_mut()
        .ok_or_else(|| anyhow!(".rodata has no data"))?;
    for (offset, value) in offsets {
        let slot = data
            .get_mut(offset..offset + 8)
            .ok_or_else(|| anyhow!(".rodata is shorter than its BTF says"))?;
        slot.copy_from_slice(&value.to_ne_bytes());
    }
    Ok(())
}

/// How one program of a user's object attached.
#[derive(Clone, Debug)]
pub struct ProgramAttach {
    pub program: String,
    pub section: String,
    /// None: attached; else the kernel's reason.
    pub failure: Option<String>,
}

/// Programs whose owner attaches them, not load: a bare `uprobe`/`uretprobe` section names
/// no binary (`LoadedObject::attach_uprobe` attaches it to the files found), and perf_event
/// programs attach to perf events the owner opens (`attach_perf_event`).
fn targets_at_run_time(prog: &libbpf_rs::ProgramMut<'_>) -> bool {
    prog.prog_type() == libbpf_rs::ProgramType::PerfEvent
        || matches!(prog.section().to_str(), Some("uprobe" | "uretprobe"))
}

fn open_object(spec: &LoadSpec<'_>, config: LoadConfig) -> Result<OpenObject> {
    let mut builder = ObjectBuilder::default();
    builder.name(spec.name)?;
    if let Some(btf) = config.btf {
        builder.btf_custom_path(btf)?;
    }
    builder
        .open_memory(spec.bytes)
        .with_context(|| format!("opening object {}", spec.name))
}

fn write_config(map: &mut libbpf_rs::OpenMapMut<'_>, config: LoadConfig) -> Result<()> {
    let value = ks_config {
        self_tgid: std::process::id(),
        include_self: config.include_self as u32,
        cgroup_mode: config.cgroup_mode,
        reserved: 0,
    };
    let data = map
        .initial_value_mut()
        .ok_or_else(|| anyhow!(".rodata.cfg has no data"))?;
    let out = plain::from_mut_bytes::<ks_config>(data)
        .map_err(|e| anyhow!(".rodata.cfg does not hold a ks_config: {e:?}"))?;
    *out = value;
    Ok(())
}

fn write_section(map: &mut libbpf_rs::OpenMapMut<'_>, bytes: &[u8]) -> Result<()> {
    let name = map.name().to_string_lossy().into_owned();
    let data = map
        .initial_value_mut()
        .ok_or_else(|| anyhow!("{name} has no data"))?;
    if data.len() < bytes.len() {
        bail!("{name} holds {} bytes, not {}", data.len(), bytes.len());
    }
    data[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn find_ctl(obj: &Object) -> Result<Option<*mut ks_ctl>> {
    let Some(map) = obj.maps().find(|m| m.name() == ".data.ctl") else {
        return Ok(None);
    };
    let mut size = 0u64;
    // SAFETY: the map belongs to a loaded object; libbpf returns the map's mmapped region.
    let ptr =
        unsafe { libbpf_sys::bpf_map__initial_value(map.as_libbpf_object().as_ptr(), &mut size) };
    if ptr.is_null() || (size as usize) < std::mem::size_of::<ks_ctl>() {
        bail!(".data.ctl is not mmapped (kernel without BPF_F_MMAPABLE?)");
    }
    Ok(Some(ptr.cast()))
}

/// Takes ownership of a link a libbpf attach function returned (NULL, with errno set, when
/// it failed): for attach points libbpf-rs 0.27 does not wrap (tcx) or only wraps for
/// mutable programs.
pub fn link_from_raw(ptr: *mut libbpf_sys::bpf_link) -> Result<Link> {
    let err = std::io::Error::last_os_error();
    match std::ptr::NonNull::new(ptr) {
        // SAFETY: a link libbpf just created; nobody else holds it.
        Some(ptr) => Ok(unsafe { Link::from_ptr(ptr) }),
        None => bail!("{err}"),
    }
}

/// The kernel's own words for a libbpf error, without libbpf-rs's wrapping.
pub fn kernel_reason(err: &libbpf_rs::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

impl LoadedObject {
    /// Attaches `program` (a bare uprobe or uretprobe section) at byte `offset` of the file
    /// at `path`, for every process that maps it; detached when the link is dropped.
    pub fn attach_uprobe(
        &self,
        program: &str,
        retprobe: bool,
        path: &std::path::Path,
        offset: u64,
    ) -> Result<Link> {
        let prog = self
            .obj
            .progs()
            .find(|p| p.name() == program)
            .ok_or_else(|| anyhow!("object has no program {program}"))?;
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| anyhow!("{} holds a NUL", path.display()))?;
        let opts = libbpf_sys::bpf_uprobe_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_uprobe_opts>() as libbpf_sys::size_t,
            retprobe,
            ..Default::default()
        };
        // SAFETY: prog belongs to this loaded object; path and opts live across the call;
        // libbpf returns a new link or NULL with errno set.
        let link = unsafe {
            libbpf_sys::bpf_program__attach_uprobe_opts(
                prog.as_libbpf_object().as_ptr(),
                -1,
                c_path.as_ptr(),
                offset as libbpf_sys::size_t,
                &opts,
            )
        };
        let Some(link) = std::ptr::NonNull::new(link) else {
            bail!("{}", std::io::Error::last_os_error());
        };
        // SAFETY: a link libbpf just created, owned by nobody else.
        Ok(unsafe { Link::from_ptr(link) })
    }

    /// Attaches every program whose section libbpf knows how to attach (tracepoints,
    /// raw_tp, tp_btf, kprobes, fentry, uprobes with `binary:function`, usdt…); `unattachable`
    /// says why a section is not attached here (None: attach it). A failure is kept with the
    /// kernel's reason and the rest go on.
    pub fn attach_by_section(
        &mut self,
        unattachable: impl Fn(&str) -> Option<String>,
    ) -> Vec<ProgramAttach> {
        let mut outcomes = Vec::new();
        for prog in self.obj.progs_mut() {
            let section = prog.section().to_string_lossy().into_owned();
            let program = prog.name().to_string_lossy().into_owned();
            let failure = match unattachable(&section) {
                Some(why) => Some(why),
                None => match prog.attach() {
                    Ok(link) => {
                        self.links.push(link);
                        None
                    }
                    Err(e) => Some(kernel_reason(&e)),
                },
            };
            outcomes.push(ProgramAttach {
                program,
                section,
                failure,
            });
        }
        outcomes
    }

    /// A loaded program by name, to attach it somewhere of the caller's choosing.
    pub fn program(&self, name: &str) -> Result<libbpf_rs::Program<'_>> {
        self.obj
            .progs()
            .find(|p| p.name() == name && p.autoload())
            .ok_or_else(|| anyhow!("object has no loaded program {name}"))
    }

    pub fn map(&self, name: &str) -> Result<MapHandle> {
        let map = self
            .obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| anyhow!("object has no map {name}"))?;
        Ok(MapHandle::try_from(&map)?)
    }

    /// Attaches the perf_event program `name` to the perf event `fd`; the link owns the fd
    /// (libbpf closes it when the link is destroyed).
    pub fn attach_perf_event(&mut self, name: &str, fd: std::os::fd::OwnedFd) -> Result<()> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| anyhow!("object has no program {name}"))?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let link = prog.attach_perf_event(raw).map_err(|e| {
            // SAFETY: raw came from an OwnedFd above and the failed attach did not keep it.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
            anyhow!("attaching {name}: {}", kernel_reason(&e))
        })?;
        self.links.push(link);
        Ok(())
    }

    /// Attaches the XDP program `name` to interface `ifindex` (its driver mode when the
    /// driver has one, else generic).
    pub fn attach_xdp(&mut self, name: &str, ifindex: i32) -> Result<()> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| anyhow!("object has no program {name}"))?;
        let link = prog
            .attach_xdp(ifindex)
            .map_err(|e| anyhow!("attaching {name}: {}", kernel_reason(&e)))?;
        self.links.push(link);
        Ok(())
    }

    /// Detaches every program: nothing runs any more, the maps stay readable.
    pub fn detach_all(&mut self) {
        self.links.clear();
    }

    /// Every map of the object with its name (for the self-metrics and the pins); maps left
    /// uncreated (those of another candidate: `LoadSpec::skip_maps`) have none.
    pub fn maps(&self) -> Vec<(String, MapHandle)> {
        self.obj
            .maps()
            .filter(|m| m.autocreate())
            .filter_map(|m| {
                let name = m.name().to_string_lossy().into_owned();
                MapHandle::try_from(&m).ok().map(|h| (name, h))
            })
            .collect()
    }

    /// Each loaded program's kernel info (run counts, recursion misses), by name.
    pub fn program_infos(&self) -> Vec<(String, libbpf_sys::bpf_prog_info)> {
        self.program_fds()
            .into_iter()
            .filter_map(|(name, fd)| {
                let mut info = libbpf_sys::bpf_prog_info::default();
                let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
                // SAFETY: info is a zeroed bpf_prog_info and len its size; fd is a live program.
                let ret = unsafe {
                    libbpf_sys::bpf_prog_get_info_by_fd(fd.as_fd().as_raw_fd(), &mut info, &mut len)
                };
                (ret == 0).then_some((name, info))
            })
            .collect()
    }

    /// Runs the kernel skipped because the program was already running on that CPU (the
    /// events in them are lost), summed over the object's programs; 0 before 5.12.
    pub fn skipped_runs(&self) -> u64 {
        self.program_infos()
            .iter()
            .map(|(_, info)| info.recursion_misses)
            .sum()
    }

    /// Program ids, for run-time statistics.
    pub fn program_fds(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        self.obj
            .progs()
            .filter(|p| p.autoload())
            .filter_map(|p| {
                let fd = p.as_fd().try_clone_to_owned().ok()?;
                Some((p.name().to_string_lossy().into_owned(), fd))
            })
            .collect()
    }

    fn ctl_word(&self, pick: fn(*mut ks_ctl) -> *mut u32) -> Option<&AtomicU32> {
        // SAFETY: ctl points at a live, mmapped, 4-byte aligned ks_ctl that BPF programs update
        // only with atomic instructions; it lives as long as self.obj.
        self.ctl
            .map(|ctl| unsafe { AtomicU32::from_ptr(pick(ctl)) })
    }

    /// Makes every per-CPU comm-slot cache of this object stale.
    pub fn bump_epoch(&self) {
        // SAFETY (of the projection): a field address inside the mmapped struct.
        if let Some(w) = self.ctl_word(|c| unsafe { &raw mut (*c).epoch }) {
            w.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Flips which map of each double-buffered table is live; returns the new generation.
    pub fn flip_table_gen(&self) -> Result<u32> {
        // SAFETY (of the projection): a field address inside the mmapped struct.
        match self.ctl_word(|c| unsafe { &raw mut (*c).table_gen }) {
            Some(w) => Ok(w.fetch_add(1, Ordering::SeqCst).wrapping_add(1)),
            None => bail!("the object's control page is not mapped"),
        }
    }

    /// Turns counting of opens in the syscalls object's sys_exit program on or off.
    pub fn set_count_opens(&self, on: bool) {
        // SAFETY (of the projection): a field address inside the mmapped struct.
        if let Some(w) = self.ctl_word(|c| unsafe { &raw mut (*c).count_opens }) {
            w.store(on as u32, Ordering::SeqCst);
        }
    }

    /// The generation of the tables that is live now.
    pub fn table_gen(&self) -> u32 {
        // SAFETY (of the projection): a field address inside the mmapped struct.
        self.ctl_word(|c| unsafe { &raw mut (*c).table_gen })
            .map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// Waits until no BPF program that may have seen the old generation is still running:
    /// an update of a map-in-map makes the kernel call synchronize_rcu().
    pub fn barrier(&self) -> Result<()> {
        let outer = self.map("ks_barrier")?;
        let inner = self.map("ks_barrier_in")?;
        let fd = inner.as_fd();
        let raw: i32 = std::os::fd::AsRawFd::as_raw_fd(&fd);
        outer.update(&0u32.to_ne_bytes(), &raw.to_ne_bytes(), MapFlags::ANY)?;
        Ok(())
    }
}
