//! `cargo xtask cycles`: the module cycles of every crate (a module must depend only
//! on modules below it). A module's dependencies are read from the `crate::…` and
//! `super::…` paths in its file, outside its tests; a path names the deepest module it
//! reaches, and a module's own submodules and parents do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each group of modules of the crate whose sources are under `src` that depend on
/// one another in a circle, by module path (`workflow::execute`).
pub fn cycles(src: &Path) -> Vec<Vec<String>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|(module, text)| (module.clone(), dependencies(module, text, &names)))
        .collect();
    strongly_connected(&graph)
        .into_iter()
        .filter(|group| group.len() > 1)
        .collect()
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            files.insert(parts.join("::"), text);
        }
    }
}

/// The modules `module`'s source names through `crate::` and `super::` paths.
fn dependencies(module: &str, text: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(tests) => &text[..tests],
        None => text,
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        for (start, _) in line
            .match_indices("crate::")
            .chain(line.match_indices("super::"))
        {
            // Only where a path begins (not inside `$crate::` or `a::super::`).
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            let path: String = line[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(target) = resolve(module, &path, names) {
                let related = target == module
                    || module.starts_with(&format!("{target}::"))
                    || target.starts_with(&format!("{module}::"))
                    || target.is_empty();
                if !related {
                    found.insert(target);
                }
            }
        }
    }
    found
}

/// The deepest module `path` (seen from `module`) reaches.
fn resolve(module: &str, path: &str, names: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = Vec::new();
    if segments.first() == Some(&"crate") {
        segments.remove(0);
    } else {
        base = module.split("::").filter(|s| !s.is_empty()).collect();
        while segments.first() == Some(&"super") {
            segments.remove(0);
            base.pop();
        }
    }
    (1..=segments.len()).rev().find_map(|n| {
        let candidate = base
            .iter()
            .chain(&segments[..n])
            .copied()
            .collect::<Vec<_>>()
            .join("::");
        names.contains(&candidate).then_some(candidate)
    })
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        groups: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut group = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                group.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            group.sort();
            state.groups.push(group);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        groups: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_of_modules_is_found_and_a_ladder_is_not() {
        let dir = std::env::temp_dir().join(format!("xtask-cycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("engine")).unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).unwrap();
        write("lib.rs", "mod run; mod store; mod engine;\n");
        write("run.rs", "use crate::store::Store;\n");
        write(
            "store.rs",
            "// crate::run::Id in a comment is no dependency\n",
        );
        write("engine/mod.rs", "mod a; mod b;\n");
        write("engine/a.rs", "use super::b::B;\n");
        write(
            "engine/b.rs",
            "use crate::engine::a::A; use crate::run::Run;\n",
        );
        assert_eq!(cycles(&dir), [["engine::a", "engine::b"]]);
        write("engine/b.rs", "use crate::run::Run;\n");
        assert!(cycles(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_crate_of_the_workspace_is_free_of_module_cycles() {
        let crates = crate::workspace_root().join("crates");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(crates).unwrap().flatten() {
            for group in cycles(&entry.path().join("src")) {
                found.push(format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    group.join(" <-> ")
                ));
            }
        }
        assert!(
            found.is_empty(),
            "modules that depend on one another (move what both need below them): {found:#?}"
        );
    }
}
