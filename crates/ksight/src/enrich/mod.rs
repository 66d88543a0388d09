//! Enrichment shared by every job (metrics, tracer, profiler, capture): a cgroup id seen in the
//! kernel becomes a cgroup path, then a container id, a Kubernetes pod UID and a systemd unit.
//!
//! - [`cgroup`]: which hierarchy ksight keys tasks by (and the `u32` mode the BPF side is
//!   configured with), cgroup id ↔ path, task → cgroup id.
//! - [`container`]: what a cgroup path says about its container, pod and unit.
//! - [`LabelSet`]: the labels a user asked for with `--labels`, and their values.

pub mod cgroup;
pub mod container;

use std::fmt;
use std::str::FromStr;

pub use container::CgroupInfo;

/// One enrichment label. The names are the Prometheus label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// The cgroup path relative to the hierarchy root (the id when it cannot be resolved).
    Cgroup,
    /// The full 64-hex container id.
    Container,
    /// The Kubernetes pod UID (not its name: names need the API server).
    Pod,
    /// The innermost systemd unit (`*.service`, `*.scope`) that is not a container scope.
    Unit,
}

impl Label {
    /// Every label, in the order their values are emitted.
    pub const ALL: [Label; 4] = [Label::Cgroup, Label::Container, Label::Pod, Label::Unit];

    pub fn name(self) -> &'static str {
        match self {
            Label::Cgroup => "cgroup",
            Label::Container => "container",
            Label::Pod => "pod",
            Label::Unit => "unit",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn value(self, info: &CgroupInfo) -> String {
        match self {
            Label::Cgroup => info.cgroup_label(),
            Label::Container => info.container.clone().unwrap_or_default(),
            Label::Pod => info.pod.clone().unwrap_or_default(),
            Label::Unit => info.unit.clone().unwrap_or_default(),
        }
    }
}

/// The set of enrichment labels selected with `--labels=cgroup,container`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelSet(u8);

impl LabelSet {
    pub fn contains(self, label: Label) -> bool {
        self.0 & label.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Label> {
        Label::ALL.into_iter().filter(move |l| self.contains(*l))
    }

    /// The selected labels and their values, always in [`Label::ALL`] order. A value the path
    /// does not give is the empty string, so every series of a metric has the same label
    /// names (Prometheus treats an empty value as an absent label).
    #[allow(dead_code)] // The collectors call it when they add cgroup keys; tests use it now.
    pub fn values(self, info: &CgroupInfo) -> Vec<(&'static str, String)> {
        self.iter().map(|l| (l.name(), l.value(info))).collect()
    }
}

impl FromStr for LabelSet {
    type Err = String;

    /// A comma list; blanks and repeats are ignored; an empty list selects nothing.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut set = LabelSet::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let label = Label::ALL
                .into_iter()
                .find(|l| l.name() == name)
                .ok_or_else(|| format!("unknown label {name:?} (valid: {})", valid_names()))?;
            set.0 |= label.bit();
        }
        Ok(set)
    }
}

fn valid_names() -> String {
    let names: Vec<&str> = Label::ALL.iter().map(|l| l.name()).collect();
    names.join(", ")
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Label::name).collect();
        f.write_str(&names.join(","))
    }
}

/// The enrichment labels of per-process series, from the cgroup id in their kernel keys;
/// shared by the collectors (they run on one thread; the mutex makes it `Send`).
pub struct Enricher {
    labels: LabelSet,
    resolver: Option<cgroup::Resolver>,
}

pub type SharedEnricher = std::sync::Arc<std::sync::Mutex<Enricher>>;

impl Enricher {
    /// No labels: keys carry cgroup 0 and series get no extra labels.
    pub fn off() -> Self {
        Enricher {
            labels: LabelSet::default(),
            resolver: None,
        }
    }

    /// Labels as selected; the hierarchy is detected now. Returns the enricher and the
    /// `ks_config.cgroup_mode` the BPF objects must be loaded with.
    pub fn new(labels: LabelSet) -> (Self, u32) {
        if labels.is_empty() {
            return (Self::off(), cgroup::MODE_OFF);
        }
        let hierarchy = match cgroup::Hierarchy::detect() {
            Ok(Some(h)) => h,
            Ok(None) => {
                tracing::warn!(
                    "--labels={labels}: no cgroup filesystem is mounted; values stay empty"
                );
                return (
                    Self {
                        labels,
                        resolver: None,
                    },
                    cgroup::MODE_OFF,
                );
            }
            Err(err) => {
                tracing::warn!("--labels={labels}: cannot read /proc/self/mountinfo: {err}");
                return (
                    Self {
                        labels,
                        resolver: None,
                    },
                    cgroup::MODE_OFF,
                );
            }
        };
        // The kernel side reads v1 ids from the memory controller only.
        if hierarchy.controller().is_some_and(|c| c != "memory") {
            tracing::warn!(
                "--labels={labels}: the {} is not supported (v1 needs the memory controller); values stay empty",
                hierarchy.describe()
            );
            return (
                Self {
                    labels,
                    resolver: None,
                },
                cgroup::MODE_OFF,
            );
        }
        tracing::info!(
            "--labels={labels}: cgroups from the {}",
            hierarchy.describe()
        );
        let mode = hierarchy.bpf_mode();
        let resolver = cgroup::Resolver::new(hierarchy);
        (
            Self {
                labels,
                resolver: Some(resolver),
            },
            mode,
        )
    }

    /// A scrape begins: a cgroup id not seen yet may walk the hierarchy once.
    pub fn new_scrape(&mut self) {
        if let Some(resolver) = &mut self.resolver {
            resolver.allow_rewalk();
        }
    }

    /// The selected labels' values for a key's cgroup id; empty values for id 0 (overflow
    /// series, or a cgroup the kernel could not read).
    pub fn labels(&mut self, cgroup_id: u64) -> Vec<(&'static str, String)> {
        if self.labels.is_empty() {
            return Vec::new();
        }
        match (&mut self.resolver, cgroup_id) {
            (Some(resolver), id) if id != 0 => self.labels.values(&resolver.info(id)),
            _ => self
                .labels
                .iter()
                .map(|l| (l.name(), String::new()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn label_lists_take_any_text(text in ".{0,80}") {
            if let Ok(set) = text.parse::<LabelSet>() {
                // What it prints parses back to the same set.
                proptest::prop_assert_eq!(set.to_string().parse::<LabelSet>().ok(), Some(set));
            }
        }
    }

    #[test]
    fn label_lists_parse() {
        let set: LabelSet = "cgroup,container".parse().unwrap();
        assert!(set.contains(Label::Cgroup) && set.contains(Label::Container));
        assert!(!set.contains(Label::Pod) && !set.contains(Label::Unit));
        assert_eq!(set.to_string(), "cgroup,container");
        // Order of the list does not matter; output order is fixed; repeats and blanks ignored.
        let set: LabelSet = " unit , pod,,unit".parse().unwrap();
        assert_eq!(set.to_string(), "pod,unit");
        assert!("".parse::<LabelSet>().unwrap().is_empty());
        let all: LabelSet = "cgroup,container,pod,unit".parse().unwrap();
        assert_eq!(all.iter().count(), 4);
    }

    #[test]
    fn unknown_label_lists_the_valid_ones() {
        let err = "cgroup,namespace".parse::<LabelSet>().unwrap_err();
        assert_eq!(
            err,
            "unknown label \"namespace\" (valid: cgroup, container, pod, unit)"
        );
        assert!(
            "Cgroup".parse::<LabelSet>().is_err(),
            "names are case-sensitive"
        );
    }

    #[test]
    fn values_follow_the_fixed_order_and_fill_blanks() {
        let path = "/kubepods.slice/kubepods-burstable.slice/\
kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/\
cri-containerd-2b5a3c0d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809.scope";
        let info = CgroupInfo::parse(4242, path);
        let set: LabelSet = "unit,pod,container,cgroup".parse().unwrap();
        assert_eq!(
            set.values(&info),
            vec![
                ("cgroup", path.to_string()),
                (
                    "container",
                    "2b5a3c0d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809".to_string()
                ),
                ("pod", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string()),
                ("unit", String::new()),
            ]
        );
        // An id that never resolved: the cgroup label is the id itself.
        let lost = CgroupInfo::unresolved(987654);
        assert_eq!(
            set.values(&lost),
            vec![
                ("cgroup", "987654".to_string()),
                ("container", String::new()),
                ("pod", String::new()),
                ("unit", String::new()),
            ]
        );
        assert!(LabelSet::default().values(&info).is_empty());
    }
}
