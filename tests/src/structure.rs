//! The module import graph of a crate, read from its sources, and the cycles in it.
//!
//! Each `src/**/*.rs` file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs`
//! and `main.rs` the root). Every path a file names that starts with `crate::`, `super::`
//! or `self::` (in `use` items and in code) is resolved to the deepest module that exists.
//! Between two modules whose paths share a prefix, the edge joins the two children of
//! that prefix they descend from (`book::memory` naming `crate::book::model::X` is an
//! edge `book::memory → book::model`; `dispatch` naming `crate::book::memory::Y` is an
//! edge `dispatch → book`). A module naming its own ancestor or descendant makes no edge:
//! a parent declares and re-exports its children, and children build on their parent's
//! contract. Comments and everything from a file's first `#[cfg(test)]` on (its tests)
//! are not read. A cycle is a strongly connected component of more than one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path of every source file under `src`, with the file's text.
fn modules(src: &Path) -> std::io::Result<BTreeMap<Vec<String>, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let file = parts.pop().unwrap_or_default();
            let stem = file.trim_end_matches(".rs");
            if !matches!(stem, "mod" | "lib" | "main") || !parts.is_empty() && stem != "mod" {
                parts.push(stem.to_owned());
            }
            let text = std::fs::read_to_string(&path)?;
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts, code);
        }
    }
    Ok(out)
}

/// The paths a source names from the crate root, `super` or `self`, as segment lists
/// relative to the module `at` (with `{a, b}` groups expanded one level).
fn named_paths(text: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(start) {
            let begin = from + i;
            from = begin + start.len();
            // Only a path's first segment: not `foo::crate::` or an identifier's tail.
            if begin > 0
                && (bytes[begin - 1].is_ascii_alphanumeric()
                    || bytes[begin - 1] == b'_'
                    || bytes[begin - 1] == b':')
            {
                continue;
            }
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "self::" => at.to_vec(),
                _ => at[..at.len().saturating_sub(1)].to_vec(),
            };
            let rest = &text[from..];
            let mut tail = rest;
            // Further `super::` segments.
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            let path: String = tail
                .chars()
                .take_while(|c| {
                    c.is_ascii_alphanumeric()
                        || *c == '_'
                        || *c == ':'
                        || *c == '{'
                        || *c == ','
                        || *c == ' '
                })
                .collect();
            let (head, group) = match path.split_once('{') {
                Some((h, g)) => (h, Some(g)),
                None => (path.as_str(), None),
            };
            let head: Vec<String> = head
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            match group {
                Some(g) => {
                    for item in g.split(',') {
                        let mut p = base.clone();
                        p.extend(head.iter().cloned());
                        p.extend(
                            item.split("::")
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned),
                        );
                        out.push(p);
                    }
                }
                None => {
                    let mut p = base;
                    p.extend(head);
                    out.push(p);
                }
            }
        }
    }
    out
}

/// The module edges of the crate whose sources are under `src` (see the module doc).
pub fn module_edges(src: &Path) -> std::io::Result<BTreeSet<(String, String)>> {
    let modules = modules(src)?;
    let mut edges = BTreeSet::new();
    for (at, text) in &modules {
        for path in named_paths(text, at) {
            // The deepest module the path names.
            let mut target = path;
            while !target.is_empty() && !modules.contains_key(&target) {
                target.pop();
            }
            let common = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == at.len() || common == target.len() {
                continue; // itself, an ancestor or a descendant
            }
            let name = |p: &[String]| p.join("::");
            edges.insert((name(&at[..=common]), name(&target[..=common])));
        }
    }
    Ok(edges)
}

/// The import cycles among the modules of the crate under `src`: each a sorted list of
/// the modules in one strongly connected component.
pub fn module_cycles(src: &Path) -> std::io::Result<Vec<Vec<String>>> {
    let edges = module_edges(src)?;
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &edges {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    // Reachability by search from each node: small graphs (tens of modules).
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for m in &next[n] {
                if seen.insert(*m) {
                    stack.push(m);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = next.keys().map(|n| (*n, reach(n))).collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for n in next.keys() {
        if placed.contains(*n) || !reaches[n].contains(n) {
            continue;
        }
        let component: Vec<String> = next
            .keys()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .map(|m| (*m).to_owned())
            .collect();
        for m in &component {
            placed.insert(m.clone());
        }
        if component.len() > 1 {
            cycles.push(component);
        }
    }
    Ok(cycles)
}
