//! `docs/architecture.md` names every source file of the library and the CLI, and every file
//! it names exists: the layout it describes cannot go stale unnoticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, as paths relative to it.
fn sources(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(base).unwrap().to_path_buf());
        }
    }
}

#[test]
fn the_architecture_document_names_every_source_file_and_no_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut named_here = BTreeSet::new();
    let mut missing = Vec::new();
    for krate in ["crates/nabla/src", "crates/nabla-cli/src"] {
        let base = root.join(krate);
        let mut files = Vec::new();
        sources(&base, &base, &mut files);
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            named_here.insert(name.clone());
            // A file is named by its file name (its directory is the line's heading).
            let word = |w: &str| {
                doc.match_indices(w).any(|(i, _)| {
                    let before = doc[..i].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            };
            if !word(&name) {
                missing.push(format!("{krate}/{}", f.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name: {}",
        missing.join(", ")
    );
    // Every `name.rs` the layout block names is a file of one of the crates.
    let block = doc
        .split("```text")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let stale: Vec<&str> = block
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| w.ends_with(".rs") && !named_here.contains(*w))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/architecture.md names files that do not exist: {stale:?}"
    );
}
