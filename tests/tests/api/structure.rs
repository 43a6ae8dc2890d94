//! The code's shape: no module import cycle inside any crate (see
//! `geomatch_e2e::structure` for how edges are read).

use std::path::{Path, PathBuf};

use geomatch_e2e::structure::{module_cycles, module_edges};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let crates = [
        "shared/index",
        "shared/eta",
        "shared/common",
        "services/location-ingest",
        "services/matching",
        "services/eta-pricing",
        "services/geomatch",
        "loadtest",
        "tests",
    ];
    let mut found = Vec::new();
    for c in crates {
        let src = workspace().join(c).join("src");
        for cycle in module_cycles(&src).expect("the sources are readable") {
            found.push(format!("{c}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(
        found.is_empty(),
        "module import cycles:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_cycles_through_use_items_paths_in_code_and_super() {
    let dir = std::env::temp_dir().join(format!("geomatch-structure-{}", std::process::id()));
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(src.join("book")).unwrap();
    let write = |p: &str, text: &str| std::fs::write(src.join(p), text).unwrap();
    write("lib.rs", "mod book;\nmod dispatch;\nmod ride;\n");
    write("ride.rs", "use crate::book::{model::Doc, Other};\n");
    write("dispatch.rs", "/// [`crate::book::Book`]\nfn f() { crate::ride::go(); }\n#[cfg(test)]\nmod t { use crate::book::X; }\n");
    write(
        "book/mod.rs",
        "mod memory;\nmod model;\npub use memory::M;\n",
    );
    write("book/model.rs", "pub struct Doc;\n");
    // A child naming its parent and a sibling: no cycle by itself.
    write(
        "book/memory.rs",
        "use super::model::Doc;\nuse crate::book::Book;\n",
    );
    assert!(module_cycles(&src).unwrap().is_empty());
    assert!(module_edges(&src)
        .unwrap()
        .contains(&("book::memory".to_owned(), "book::model".to_owned())));

    // book::memory now names dispatch: book → dispatch → ride → book.
    write(
        "book/memory.rs",
        "use super::model::Doc;\nfn g() { crate::dispatch::f() }\n",
    );
    let cycles = module_cycles(&src).unwrap();
    assert_eq!(
        cycles,
        vec![vec![
            "book".to_owned(),
            "dispatch".to_owned(),
            "ride".to_owned()
        ]]
    );

    // Siblings inside a folder: model naming memory through `super` closes a cycle there.
    write("book/memory.rs", "use super::model::Doc;\n");
    write("book/model.rs", "pub struct Doc(super::memory::M);\n");
    let cycles = module_cycles(&src).unwrap();
    assert_eq!(
        cycles,
        vec![vec!["book::memory".to_owned(), "book::model".to_owned()]]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
