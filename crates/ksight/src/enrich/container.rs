//! What a cgroup path says: container id and runtime, Kubernetes pod UID, systemd unit.
//!
//! Patterns recognized (`<id>` = 64 lowercase hex, `<uid>` = a pod UID):
//!
//! | runtime / driver | path component |
//! |---|---|
//! | docker, systemd driver | `docker-<id>.scope` |
//! | containerd (CRI), systemd driver | `cri-containerd-<id>.scope` |
//! | containerd, nerdctl | `nerdctl-<id>.scope` |
//! | CRI-O, systemd driver | `crio-<id>.scope` (`crio-conmon-<id>.scope` is CRI-O's monitor, not the container) |
//! | podman | `libpod-<id>.scope`, cgroupfs `libpod-<id>` (`libpod-conmon-<id>.scope`: monitor) |
//! | cgroupfs drivers | a bare `<id>` component: `/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>` |
//! | containerd with systemd-style cgroupsPath | `kubepods-…-pod<uid>.slice:cri-containerd:<id>` |
//! | Kubernetes pod, cgroupfs driver | `pod<uid>` (`<uid>` with dashes) |
//! | Kubernetes pod, systemd driver | `kubepods[-<qos>]-pod<uid with _>.slice` (also kind's `kubelet-kubepods-…`) |
//!
//! **Who may name a container.** Anyone given a delegated cgroup subtree (a container, a
//! user's systemd instance) can make sub-cgroups with any name, `docker-<someone else>.scope`
//! included. So a container id (and a pod UID) is taken only from where the runtime itself
//! puts it: at a known place from the hierarchy root (`/system.slice/docker-<id>.scope`,
//! `/machine.slice/libpod-<id>.scope`, `/kubepods[.slice]/…/<id or scope>` through
//! Kubernetes' own QoS and pod levels, `/docker/<id>`, `/libpod_parent/libpod-<id>`, and
//! containerd's literal `/system.slice/containerd.service/kubepods-…:cri-containerd:<id>`),
//! and of several such matches the outermost wins. A name further down (docker-in-docker,
//! a kind node's pods, rootless podman under `user@.service`) labels nothing of its own:
//! those processes carry the outer container's id, or none.
//!
//! Container ids are kept whole (64 hex): `docker inspect`, `crictl inspect` and `ctr` accept
//! them, they join kube-state-metrics' `container_id` after stripping its `containerd://`, and
//! a 12-character prefix can collide. Pod UIDs are normalized to the dashed form
//! (`_` → `-`), the form `kubectl get pod -o jsonpath='{.metadata.uid}'` prints.

/// What ksight knows about one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup id (kernfs node id) the kernel reported.
    pub id: u64,
    /// Path relative to the hierarchy root, as in /proc/PID/cgroup; None if not resolved.
    pub path: Option<String>,
    /// Full 64-hex container id.
    pub container: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`; None when the path does not say (cgroupfs
    /// Kubernetes paths are the same for every runtime).
    #[allow(dead_code)] // Not a label yet; kept for the tracer's event output.
    pub runtime: Option<&'static str>,
    /// Kubernetes pod UID, dashed.
    pub pod: Option<String>,
    /// Innermost systemd unit that is not a container scope: `ssh.service`, `session-3.scope`.
    pub unit: Option<String>,
}

/// `scope-prefix` → runtime, for systemd-driver container scopes (and podman's cgroupfs form).
const SCOPE_PREFIXES: [(&str, &str); 5] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("nerdctl-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// A parent component naming the runtime of a bare `<id>` below it.
const PARENT_RUNTIMES: [(&str, &str); 4] = [
    ("docker", "docker"),
    ("libpod_parent", "podman"),
    ("cri-containerd", "containerd"),
    ("crio", "cri-o"),
];

impl CgroupInfo {
    /// An id that could not be resolved to a path: only the `cgroup` label has a value.
    pub fn unresolved(id: u64) -> Self {
        CgroupInfo {
            id,
            ..Default::default()
        }
    }

    /// Parse the path (relative to the hierarchy root) of cgroup `id`.
    pub fn parse(id: u64, path: &str) -> Self {
        // A `:` splits containerd's systemd-style cgroupsPath when it is used literally.
        let parts: Vec<&str> = path
            .split('/')
            .flat_map(|c| c.split(':'))
            .filter(|c| !c.is_empty())
            .collect();
        let mut info = CgroupInfo {
            id,
            path: Some(path.to_string()),
            ..Default::default()
        };
        for (i, part) in parts.iter().enumerate() {
            let placed_by_runtime = runtime_layout(&parts[..i]);
            match container_of(part, &parts[..i]) {
                Some((runtime, container)) if placed_by_runtime && info.container.is_none() => {
                    info.runtime = runtime;
                    info.container = Some(container.to_string());
                }
                Some(_) => {} // named where anyone could have named it, or inside one
                None if is_unit(part) => info.unit = Some(part.to_string()),
                None => {}
            }
            if let Some(uid) = pod_uid_of(part) {
                if placed_by_runtime && info.pod.is_none() {
                    info.pod = Some(uid);
                }
            }
        }
        info
    }

    /// The `cgroup` label: the path, or the id when the path is unknown.
    pub fn cgroup_label(&self) -> String {
        match &self.path {
            Some(path) => path.clone(),
            None => self.id.to_string(),
        }
    }
}

/// The container a path component names, with its runtime when the path says it.
fn container_of<'a>(part: &'a str, parents: &[&str]) -> Option<(Option<&'static str>, &'a str)> {
    if is_container_id(part) {
        let runtime = parents.iter().rev().find_map(|p| {
            PARENT_RUNTIMES
                .iter()
                .find(|(name, _)| p == name)
                .map(|(_, rt)| *rt)
        });
        return Some((runtime, part));
    }
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = stem.strip_prefix(prefix)?;
        is_container_id(id).then_some((Some(*runtime), id))
    })
}

/// Whether `parents` (the components from the hierarchy root down to a container's or a
/// pod's cgroup) are a place only the runtime or the kubelet creates.
fn runtime_layout(parents: &[&str]) -> bool {
    match parents {
        ["system.slice"] | ["machine.slice"] | ["docker"] | ["libpod_parent"] => true,
        ["system.slice", "containerd.service", levels @ ..] => {
            levels.iter().all(|l| is_kubepods_level(l))
        }
        [root, levels @ ..] if *root == "kubepods" || *root == "kubepods.slice" => {
            levels.iter().all(|l| is_kubepods_level(l))
        }
        [root, levels @ ..] if is_kubepods_slice(root) => {
            levels.iter().all(|l| is_kubepods_level(l))
        }
        _ => false,
    }
}

/// A level the kubelet makes below its root: QoS classes, pods, and the runtime's literal
/// marker in containerd's systemd-style path.
fn is_kubepods_level(part: &str) -> bool {
    matches!(part, "burstable" | "besteffort" | "cri-containerd" | "crio")
        || is_kubepods_slice(part)
        || pod_uid_of(part).is_some()
}

fn is_kubepods_slice(part: &str) -> bool {
    part.starts_with("kubepods-") && part.ends_with(".slice")
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_unit(part: &str) -> bool {
    part.len() > ".scope".len() && (part.ends_with(".service") || part.ends_with(".scope"))
}

/// `pod<uid>` (cgroupfs) or `…-pod<uid_>.slice` (systemd): the UID, dashed.
fn pod_uid_of(part: &str) -> Option<String> {
    let raw = match part.strip_suffix(".slice") {
        Some(stem) => stem.rsplit_once("-pod")?.1,
        None => part.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (36 with dashes), or the 32-hex hash the kubelet gives static (manifest) pods.
fn is_pod_uid(uid: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match uid.len() {
        32 => hex(uid),
        36 => {
            let groups: Vec<&str> = uid.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| hex(g))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any cgroup path a delegated subtree can make: no panic, the path kept whole, and
        /// a container id only from the runtime's own places.
        #[test]
        fn any_cgroup_path_parses(path in "(/[a-z0-9_:@.-]{0,70}){0,8}") {
            let info = CgroupInfo::parse(7, &path);
            proptest::prop_assert_eq!(info.path.as_deref(), Some(path.as_str()));
            if info.container.is_some() {
                let first = path.trim_start_matches('/').split(['/', ':']).next().unwrap_or("");
                proptest::prop_assert!(
                    ["system.slice", "machine.slice", "docker", "libpod_parent", "kubepods", "kubepods.slice"]
                        .contains(&first) || first.starts_with("kubepods-"),
                    "container from {}", path
                );
            }
        }

        #[test]
        fn arbitrary_text_paths(path in ".{0,300}") {
            let _ = CgroupInfo::parse(1, &path);
        }
    }

    const ID: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    const ID2: &str = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376";

    /// (container, runtime, pod, unit) parsed from `path`.
    fn parts(
        path: &str,
    ) -> (
        Option<String>,
        Option<&'static str>,
        Option<String>,
        Option<String>,
    ) {
        let info = CgroupInfo::parse(1, path);
        assert_eq!(info.path.as_deref(), Some(path));
        (info.container, info.runtime, info.pod, info.unit)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn docker_systemd_driver() {
        let path = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(parts(&path), (some(ID), Some("docker"), None, None));
    }

    #[test]
    fn docker_cgroupfs_driver() {
        assert_eq!(
            parts(&format!("/docker/{ID}")),
            (some(ID), Some("docker"), None, None)
        );
    }

    #[test]
    fn docker_in_docker_takes_the_outermost() {
        let path = format!("/docker/{ID}/docker/{ID2}");
        assert_eq!(parts(&path), (some(ID), Some("docker"), None, None));
    }

    #[test]
    fn a_delegated_subtree_cannot_name_another_container() {
        // A tenant inside container ID names a sub-cgroup after container ID2.
        let forged = format!("/system.slice/docker-{ID}.scope/sub/docker-{ID2}.scope");
        assert_eq!(parts(&forged), (some(ID), Some("docker"), None, None));
        let forged = format!(
            "/system.slice/docker-{ID}.scope/kubepods.slice/\
kubepods-pod28c6b84f_4b17_4bac_9ca4_c7c794ebfefc.slice/cri-containerd-{ID2}.scope"
        );
        assert_eq!(parts(&forged), (some(ID), Some("docker"), None, None));
        // A user's own systemd instance is delegated to the user: no ids from there.
        let forged =
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID2}.scope");
        assert_eq!(parts(&forged).0, None);
        // Nor from a directory anyone made elsewhere.
        assert_eq!(parts(&format!("/{ID}")).0, None);
        assert_eq!(
            parts(&format!("/system.slice/foo.service/docker-{ID2}.scope")).0,
            None
        );
        assert_eq!(
            parts("/evil/pod74c13223-5a00-11e9-b385-42010a80018d").2,
            None
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let path = format!("/kubepods/burstable/pod74c13223-5a00-11e9-b385-42010a80018d/{ID2}");
        let pod = some("74c13223-5a00-11e9-b385-42010a80018d");
        assert_eq!(parts(&path), (some(ID2), None, pod.clone(), None));
        // Guaranteed QoS has no QoS level in the path.
        let path = format!("/kubepods/pod74c13223-5a00-11e9-b385-42010a80018d/{ID2}");
        assert_eq!(parts(&path), (some(ID2), None, pod.clone(), None));
        // The pod's own cgroup: a pod, no container.
        let path = "/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d";
        assert_eq!(parts(path), (None, None, pod, None));
    }

    #[test]
    fn kubernetes_systemd_driver_containerd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
kubepods-burstable-pod28c6b84f_4b17_4bac_9ca4_c7c794ebfefc.slice/cri-containerd-{ID}.scope"
        );
        let pod = some("28c6b84f-4b17-4bac-9ca4-c7c794ebfefc");
        assert_eq!(parts(&path), (some(ID), Some("containerd"), pod, None));
    }

    #[test]
    fn kubernetes_systemd_driver_guaranteed_crio_and_docker() {
        let slice = "/kubepods.slice/kubepods-pod28c6b84f_4b17_4bac_9ca4_c7c794ebfefc.slice";
        let pod = some("28c6b84f-4b17-4bac-9ca4-c7c794ebfefc");
        let crio = format!("{slice}/crio-{ID}.scope");
        assert_eq!(parts(&crio), (some(ID), Some("cri-o"), pod.clone(), None));
        let docker = format!("{slice}/docker-{ID}.scope");
        assert_eq!(
            parts(&docker),
            (some(ID), Some("docker"), pod.clone(), None)
        );
        // CRI-O's conmon monitor sits next to the container: a unit, not the container.
        let conmon = format!("{slice}/crio-conmon-{ID}.scope");
        let unit = some(&format!("crio-conmon-{ID}.scope"));
        assert_eq!(parts(&conmon), (None, None, pod, unit));
    }

    #[test]
    fn containerd_systemd_cgroups_path_used_literally() {
        // Seen on containerd nodes whose runtime did not hand the path to systemd.
        let path = format!(
            "/system.slice/containerd.service/\
kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice:cri-containerd:{ID}"
        );
        assert_eq!(
            parts(&path),
            (
                some(ID),
                Some("containerd"),
                some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
                some("containerd.service")
            )
        );
    }

    #[test]
    fn kind_node_nested_in_docker() {
        // A kind node is a docker container running its own kubelet and containerd. Its pods
        // are inside the node's (delegated) cgroup: they carry the node's id, and no pod UID.
        let path = format!(
            "/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/\
kubelet-kubepods-besteffort.slice/\
kubelet-kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/\
cri-containerd-{ID}.scope"
        );
        assert_eq!(parts(&path), (some(ID2), Some("docker"), None, None));
    }

    #[test]
    fn static_pod_uid_is_a_32_hex_hash() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
kubepods-burstable-pod5b8e4dd6a8a9c6b7e0f1a2b3c4d5e6f7.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(parts(&path).2, some("5b8e4dd6a8a9c6b7e0f1a2b3c4d5e6f7"));
    }

    #[test]
    fn podman_rootful_rootless_and_cgroupfs() {
        let rootful = format!("/machine.slice/libpod-{ID}.scope");
        assert_eq!(parts(&rootful), (some(ID), Some("podman"), None, None));
        // Rootless: in the user's own delegated tree, where any name can be made: no id.
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        let unit = some("user@1000.service");
        assert_eq!(parts(&rootless), (None, None, None, unit));
        let cgroupfs = format!("/libpod_parent/libpod-{ID}");
        assert_eq!(parts(&cgroupfs), (some(ID), Some("podman"), None, None));
        let conmon = format!("/machine.slice/libpod-conmon-{ID}.scope");
        let unit = some(&format!("libpod-conmon-{ID}.scope"));
        assert_eq!(parts(&conmon), (None, None, None, unit));
    }

    #[test]
    fn nerdctl() {
        let path = format!("/system.slice/nerdctl-{ID}.scope");
        assert_eq!(parts(&path), (some(ID), Some("containerd"), None, None));
    }

    #[test]
    fn systemd_units() {
        assert_eq!(
            parts("/system.slice/ssh.service"),
            (None, None, None, some("ssh.service"))
        );
        assert_eq!(
            parts("/user.slice/user-1000.slice/session-3.scope"),
            (None, None, None, some("session-3.scope"))
        );
        assert_eq!(
            parts("/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service"),
            (None, None, None, some("dbus.service"))
        );
        assert_eq!(parts("/init.scope"), (None, None, None, some("init.scope")));
        // Slices group units; they are not units a process runs in.
        assert_eq!(parts("/system.slice"), (None, None, None, None));
        assert_eq!(parts("/"), (None, None, None, None));
    }

    #[test]
    fn look_alikes_are_not_matched() {
        // Too short, upper case, non-hex: not container ids.
        assert_eq!(parts("/docker/9ec39b91f3d7").0, None);
        assert_eq!(parts(&format!("/docker/{}", ID.to_uppercase())).0, None);
        assert_eq!(
            parts(&format!("/system.slice/docker-{}x.scope", &ID[1..])).0,
            None
        );
        // "pod" and "-pod" prefixes that are not pod UIDs.
        assert_eq!(parts("/system.slice/podman.service").2, None);
        assert_eq!(parts("/user.slice/my-podcast.slice").2, None);
        assert_eq!(parts("/pod1234").2, None);
        // A 64-hex directory a user made is not a container.
        assert_eq!(parts(&format!("/{ID}")), (None, None, None, None));
    }
}
