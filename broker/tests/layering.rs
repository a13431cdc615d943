//! The broker crate's module layering (docs/broker-layering.md) as a test: every `crate::` path in
//! a module must name a module of a lower layer, or one its row allows. A new module must be given
//! a layer here.

use std::collections::BTreeMap;
use std::path::Path;

/// Layer of each top-level module; higher layers may use lower ones.
const LAYERS: &[(&str, u8)] = &[
    ("server", 7),
    ("connection", 7),
    ("handlers", 6),
    ("services", 5),
    ("admin", 4),
    ("group", 4),
    ("offload", 4),
    ("cluster", 3),
    ("replica", 2),
    ("replication", 1),
    ("config", 0),
    ("topic_config", 0),
    ("topics", 0),
    ("metadata_store", 0),
    ("disk_guard", 0),
    ("metrics", 0),
    ("codec", 0),
    ("api_versions", 0),
    ("error", 0),
];

/// Same-layer uses that are allowed (they must not form a cycle).
const SAME_LAYER: &[(&str, &str)] = &[
    ("group", "admin"),
    ("offload", "admin"),
    ("config", "topic_config"),
    ("config", "topics"),
    ("config", "error"),
    ("topic_config", "error"),
    ("topics", "error"),
    ("metadata_store", "error"),
    ("disk_guard", "error"),
    ("codec", "api_versions"),
    ("server", "connection"),
];

fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    Some(first.trim_end_matches(".rs").to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn broker_modules_depend_downward_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let Some(module) = module_of(&file, &src) else {
            continue;
        };
        if matches!(module.as_str(), "lib" | "main" | "controller_cmd") {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            violations.push(format!("{}: module {module} has no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        // Only code before the unit tests counts (tests may build whatever they need), and not
        // comments.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<String> = match rest.strip_prefix('{') {
                // `use crate::{a, b::c};`
                Some(list) => list
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").to_string())
                    .collect(),
                None => vec![rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()],
            };
            for used in names {
                if used.is_empty() || used == module {
                    continue;
                }
                let Some(&theirs) = layers.get(used.as_str()) else {
                    continue;
                };
                let allowed =
                    theirs < own || SAME_LAYER.contains(&(module.as_str(), used.as_str()));
                if !allowed {
                    violations.push(format!(
                        "{}: {module} (layer {own}) uses crate::{used} (layer {theirs})",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}
