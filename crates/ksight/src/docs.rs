//! The generated parts of the docs, made from the registry and the command line, and a test
//! that keeps them current: README.md's collectors block, docs/metrics.md's metric table and
//! the man pages (docs/man). `KSIGHT_BLESS=1 cargo test -p ksight --bin ksight docs::`
//! rewrites them; without it a stale file fails the test with that command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::collectors;
use crate::metrics::model::FamilyDoc;
use crate::serve::own::OWN_FAMILIES;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every family ksight exports: each collector's in registry order, then ksight's own.
pub fn all_families() -> Vec<&'static FamilyDoc> {
    collectors::ALL
        .iter()
        .flat_map(|d| d.families.iter().copied())
        .chain(OWN_FAMILIES.iter().copied())
        .collect()
}

/// docs/metrics.md's table: one row per family.
fn metrics_table() -> String {
    let mut text = String::from("| metric | type | labels | what |\n|---|---|---|---|\n");
    for f in all_families() {
        let _ = writeln!(
            text,
            "| `{}` | {} | {} | {} |",
            f.name,
            f.kind.as_str(),
            f.labels.join(", "),
            f.what()
        );
    }
    text
}

/// `text` with what lies between `<!-- NAME:begin -->` and `<!-- NAME:end -->` replaced.
fn with_block(text: &str, name: &str, content: &str) -> Option<String> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    Some(format!("{}{content}{}", &text[..start], &text[stop..]))
}

/// Each command's man page: `ksight.1`, `ksight-serve.1`, ….
fn man_pages() -> Vec<(String, String)> {
    use clap::CommandFactory;
    // The package version only: `--version` adds the git revision, which changes every commit.
    let root = crate::cli::Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("ksight.1".to_string(), roff(&root))];
    for sub in root.get_subcommands() {
        let name = format!("ksight-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).display_name(name.clone());
        pages.push((format!("{name}.1"), roff(&page)));
    }
    pages
}

fn roff(command: &clap::Command) -> String {
    let mut out = Vec::new();
    let written = clap_mangen::Man::new(command.clone()).render(&mut out);
    assert!(
        written.is_ok(),
        "rendering the man page of {}",
        command.get_name()
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// (path, what it should hold) for every generated file.
fn generated() -> Vec<(PathBuf, String)> {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap_or_default();
    let readme = with_block(&read("README.md"), "collectors", &collectors::readme_list());
    let metrics = with_block(&read("docs/metrics.md"), "metrics", &metrics_table());
    let mut out = vec![
        (
            repo().join("README.md"),
            readme.expect("README.md has the collectors block"),
        ),
        (
            repo().join("docs/metrics.md"),
            metrics.expect("docs/metrics.md has the metrics block"),
        ),
    ];
    for (name, page) in man_pages() {
        out.push((repo().join("docs/man").join(name), page));
    }
    out
}

#[test]
fn generated_docs_are_current() {
    let bless = std::env::var_os("KSIGHT_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, want) in generated() {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()) {
            continue;
        }
        if bless {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("docs/ is writable");
            }
            std::fs::write(&path, want).expect("docs/ is writable");
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated docs: {stale:?}; run KSIGHT_BLESS=1 cargo test -p ksight --bin ksight docs::"
    );
}

/// Every family the alert rules query is one ksight declares (so renaming one in the
/// registry fails here, not in production).
#[test]
fn alert_rules_query_declared_families() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");
    let declared: Vec<&str> = all_families().iter().map(|f| f.name).collect();
    let mut used = Vec::new();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ksight_") && !used.contains(&word) {
            used.push(word);
        }
    }
    assert!(!used.is_empty(), "the rules query ksight's families");
    let unknown: Vec<&&str> = used.iter().filter(|w| !declared.contains(w)).collect();
    assert!(
        unknown.is_empty(),
        "alert rules name undeclared families: {unknown:?}"
    );
}

/// Names, types and labels follow Prometheus's conventions, and no family is declared twice.
#[test]
fn families_are_declared_once_and_named_by_convention() {
    let families = all_families();
    for (i, f) in families.iter().enumerate() {
        assert!(
            families[..i].iter().all(|g| g.name != f.name),
            "{} declared twice",
            f.name
        );
        let counter = f.kind == crate::metrics::model::Kind::Counter;
        assert_eq!(
            counter,
            f.name.ends_with("_total"),
            "{}: counters end in _total",
            f.name
        );
        assert!(
            !f.help.is_empty() && !f.help.contains('\n'),
            "{}: one-line HELP",
            f.name
        );
    }
}
