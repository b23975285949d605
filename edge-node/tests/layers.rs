//! The layer rules of the box, checked by reading the code (the way rust-analyzer's
//! tidy tests guard its architecture): each module's `crate::…` and `super::…` paths
//! and the external crates it names. ARCHITECTURE.md describes the same rules; this
//! test keeps the map and the code from drifting apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each layer may use (besides itself).
const MAY_USE: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("session", &["core"]),
    ("config", &["core", "session"]),
    ("metrics", &[]),
    ("store", &["core", "config", "session"]),
    ("app", &["core", "store", "config", "session", "metrics"]),
    ("ops", &["core", "store", "app", "config", "session"]),
    (
        "http",
        &[
            "core", "store", "app", "ops", "config", "session", "metrics",
        ],
    ),
    ("link", &["core", "store", "app", "ops", "config"]),
    (
        "server",
        &["app", "http", "link", "ops", "config", "session"],
    ),
    (
        "demo",
        &["core", "store", "app", "ops", "config", "session"],
    ),
    (
        "cli",
        &[
            "core", "store", "app", "ops", "config", "session", "demo", "server",
        ],
    ),
];

/// External crates only some layers may name.
const CRATE_ONLY_IN: &[(&str, &[&str])] = &[
    ("rusqlite", &["store"]),
    ("axum", &["http", "server"]),
    ("tower", &["http", "server"]),
    ("tower_http", &["http"]),
    ("hyper", &["server"]),
    ("hyper_util", &["server"]),
    (
        "tokio",
        &[
            "store", "app", "ops", "http", "link", "server", "cli", "demo", "session",
        ],
    ),
];

struct Source {
    /// `core`, `store/orders`, `http`…
    module: String,
    top: String,
    text: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel == "lib" || rel == "main" {
                return None;
            }
            let module = rel.strip_suffix("/mod").unwrap_or(&rel).to_owned();
            let top = module.split('/').next().unwrap().to_owned();
            // Only code: comments may name anything.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Some(Source { module, top, text })
        })
        .collect()
}

/// The identifiers following each occurrence of `prefix` (e.g. `crate::`).
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole path segment: not `foo_crate::`.
            text[..*at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                .collect()
        })
        .collect()
}

/// Top-level module → the top-level modules it uses.
fn top_level_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let uses = graph.entry(s.top.clone()).or_default();
        for target in paths_after(&s.text, "crate::") {
            if target != s.top {
                uses.insert(target);
            }
        }
    }
    graph
}

#[test]
fn every_module_belongs_to_a_layer_and_uses_only_the_layers_below() {
    let sources = sources();
    let rules: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let mut broken = Vec::new();
    for s in &sources {
        let Some(allowed) = rules.get(s.top.as_str()) else {
            broken.push(format!(
                "{}: not in any layer (add it to MAY_USE and ARCHITECTURE.md)",
                s.module
            ));
            continue;
        };
        for target in paths_after(&s.text, "crate::") {
            if target.starts_with('{') {
                broken.push(format!(
                    "{}: `crate::{{…}}` hides what it uses; name each path",
                    s.module
                ));
            } else if target != s.top && !allowed.contains(&target.as_str()) {
                broken.push(format!("{} uses crate::{target}", s.module));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn io_and_web_crates_stay_in_their_layers() {
    let mut broken = Vec::new();
    for s in sources() {
        for (krate, layers) in CRATE_ONLY_IN {
            let named = !paths_after(&s.text, &format!("{krate}::")).is_empty()
                || s.text.contains(&format!("use {krate};"));
            if named && !layers.contains(&s.top.as_str()) {
                broken.push(format!("{} names {krate}", s.module));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_writer_names_no_domain_module() {
    let mut writer = sources()
        .into_iter()
        .find(|s| s.module == "store/writer")
        .expect("store/writer.rs");
    // Its unit tests may set up what they like.
    if let Some(at) = writer.text.find("#[cfg(test)]") {
        writer.text.truncate(at);
    }
    let mut used: Vec<String> = paths_after(&writer.text, "super::");
    used.extend(
        paths_after(&writer.text, "crate::")
            .into_iter()
            .map(|t| format!("crate::{t}")),
    );
    used.retain(|u| u != "db" && u != "super" && u != "crate::core");
    // `crate::core` is allowed only for the clock.
    assert!(
        paths_after(&writer.text, "crate::core::")
            .iter()
            .all(|p| p == "clock"),
        "the writer may use only core::clock"
    );
    assert!(used.is_empty(), "the writer names {used:?}");
}

/// Only `ops` (and the store's own tests) hands work to the writer: an entry point
/// (HTTP, the link, the CLI, the demo) never composes a transaction of its own.
#[test]
fn only_ops_composes_writes() {
    let mut broken = Vec::new();
    for s in sources() {
        if s.top == "ops" || s.top == "store" {
            continue;
        }
        let squeezed: String = s.text.chars().filter(|c| !c.is_whitespace()).collect();
        if squeezed.contains("writer.write(") || squeezed.contains("write_blocking(") {
            broken.push(s.module);
        }
    }
    assert!(broken.is_empty(), "writes composed outside ops: {broken:?}");
}

#[test]
fn no_import_cycles() {
    let sources = sources();
    // Between top-level modules.
    let graph = top_level_graph(&sources);
    assert_eq!(
        find_cycle(&graph),
        None,
        "a cycle between top-level modules"
    );
    // Between sibling modules of one folder (a parent's mod.rs may name its children).
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &sources {
        let Some((folder, _)) = s.module.split_once('/') else {
            continue;
        };
        let uses = siblings.entry(s.module.clone()).or_default();
        for target in paths_after(&s.text, "super::") {
            if sources
                .iter()
                .any(|o| o.module == format!("{folder}/{target}"))
            {
                uses.insert(format!("{folder}/{target}"));
            }
        }
        let prefix = format!("crate::{folder}::");
        for target in paths_after(&s.text, &prefix) {
            if sources
                .iter()
                .any(|o| o.module == format!("{folder}/{target}"))
            {
                uses.insert(format!("{folder}/{target}"));
            }
        }
        uses.remove(&s.module);
    }
    assert_eq!(
        find_cycle(&siblings),
        None,
        "a cycle between sibling modules"
    );
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// The checks above must be able to fail: a planted violation is found.
#[test]
fn the_checks_catch_a_planted_violation() {
    let planted = Source {
        module: "core/lifecycle".into(),
        top: "core".into(),
        text: "use crate::store::orders;\nuse rusqlite::Connection;".into(),
    };
    assert_eq!(paths_after(&planted.text, "crate::"), ["store"]);
    assert_eq!(paths_after(&planted.text, "rusqlite::"), ["Connection"]);
    assert!(paths_after("my_crate::x", "crate::").is_empty());
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(find_cycle(&graph).is_some());
}
