//! No import circle among the host runtime's modules: object kinds, the PnP model and its
//! checker build on the core, never the reverse.
//!
//! Reads the sources under `src/host`, builds the graph of the paths one module names in
//! another (`super::..`, `self::..`, `crate::host::..`, and paths that start at a child
//! module, in `use` declarations and anywhere in code; comments, strings and chars are
//! skipped), and fails on a cycle. A module is a file: `src/host/mod.rs` is `host`,
//! `src/host/pnp/mod.rs` is `host::pnp`, `src/host/pnp/machine.rs` is `host::pnp::machine`.
//! A path names the deepest module it reaches (`super::pnp::machine::Event` is an edge to
//! `host::pnp::machine`). Declaring a child (`mod machine;`) is no edge, nor is
//! `super::std` (the `extern crate std` of `src/host/mod.rs`). Inline modules (`mod tests
//! { .. }`) belong to their file. A module imported by name (`use super::pnp::{self}`)
//! starts the paths that begin with that name (`pnp::checker::after_action`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of `source` that matter for paths; comments and literals become `Other`.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize, s: &str| chars[i..].iter().take(s.len()).copied().eq(s.chars());
    while i < chars.len() {
        let c = chars[i];
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (at(i, "r\"") || at(i, "r#")) {
            let mut j = i + 1;
            let mut hashes = 0;
            while j < chars.len() && chars[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if j < chars.len() && chars[j] == '"' {
                let close: String =
                    std::iter::once('"').chain("#".repeat(hashes).chars()).collect();
                j += 1;
                while j < chars.len() && !at(j, &close) {
                    j += 1;
                }
                i = j + close.len();
                out.push(Token::Other);
            } else {
                i += 1; // `r#ident`
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let close = (i + 1..chars.len().min(i + 12)).find(|&j| chars[j] == '\'');
            match close {
                Some(j) if chars[i + 1] == '\\' || j == i + 2 => i = j + 1,
                _ => i += 1,
            }
            out.push(Token::Other);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_whitespace() {
            i += 1;
        } else if at(i, "::") {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// Reads one path at `tokens[*i]` (an identifier not preceded by `::`), expanding
/// `prefix::{a, b::{c, d}}` groups, into full paths.
fn paths(tokens: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*i) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                *i += 1;
            }
            Some(Token::Open) => {
                *i += 1;
                loop {
                    match tokens.get(*i) {
                        Some(Token::Close) => {
                            *i += 1;
                            return;
                        }
                        Some(Token::Comma | Token::Other) => *i += 1,
                        // `name as alias`: the alias names nothing new.
                        Some(Token::Ident(word)) if word == "as" => *i += 2,
                        Some(Token::Ident(_)) => paths(tokens, i, &path, out),
                        _ => return,
                    }
                }
            }
            _ => break,
        }
        if tokens.get(*i) == Some(&Token::PathSep) {
            *i += 1;
        } else {
            break;
        }
    }
    out.push(path);
}

fn module_of(file: &Path, host: &Path) -> Module {
    let relative = file.strip_prefix(host.parent().unwrap()).unwrap().with_extension("");
    let mut module: Module =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    module
}

fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module graph under `src/host`.
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/host");
    let mut files = Vec::new();
    sources(&host, &mut files);
    let modules: BTreeMap<Module, PathBuf> =
        files.iter().map(|file| (module_of(file, &host), file.clone())).collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let tokens = tokens(&fs::read_to_string(file).unwrap());
        let inline = tokens.windows(3).position(
            |w| matches!(w, [Token::Ident(m), Token::Ident(_), Token::Open] if m == "mod"),
        );
        let mut targets = BTreeSet::new();
        // Modules imported by name (`use super::pnp::{self, ..}`, `use super::shared;`):
        // a path that starts with the name starts there.
        let mut imported: BTreeMap<String, Module> = BTreeMap::new();
        let mut i = 0;
        while i < tokens.len() {
            let starts = matches!(&tokens[i], Token::Ident(_))
                && (i == 0 || tokens[i - 1] != Token::PathSep);
            if !starts {
                i += 1;
                continue;
            }
            let begin = i;
            let mut found = Vec::new();
            paths(&tokens, &mut i, &[], &mut found);
            for path in found {
                // Where the path starts: the module `super`/`self`/`crate::host` or a
                // child name designates.
                let (mut base, rest): (Module, &[String]) = match path[0].as_str() {
                    "crate" if path.get(1).is_some_and(|p| p == "host") => {
                        (vec!["host".into()], &path[2..])
                    }
                    "self" => (module.clone(), &path[1..]),
                    "super" => {
                        let mut base = module.clone();
                        let inside_inline = inline.is_some_and(|at| at < begin);
                        if !inside_inline {
                            base.pop();
                        }
                        let mut rest = &path[1..];
                        while rest.first().is_some_and(|p| p == "super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        (base, rest)
                    }
                    child
                        if path.len() > 1 && {
                            let mut candidate = module.clone();
                            candidate.push(child.into());
                            modules.contains_key(&candidate)
                        } =>
                    {
                        (module.clone(), &path[..])
                    }
                    name if path.len() > 1 && imported.contains_key(name) => {
                        (imported[name].clone(), &path[1..])
                    }
                    _ => continue,
                };
                if base == ["host"] && rest.first().is_some_and(|p| p == "std") {
                    continue;
                }
                let mut consumed = 0;
                for name in rest {
                    let mut deeper = base.clone();
                    deeper.push(name.clone());
                    if modules.contains_key(&deeper) {
                        base = deeper;
                        consumed += 1;
                    } else {
                        break;
                    }
                }
                let whole = consumed == rest.len()
                    || (consumed + 1 == rest.len() && rest[consumed] == "self");
                if whole && consumed > 0 {
                    imported.insert(base.last().unwrap().clone(), base.clone());
                }
                if &base != module && modules.contains_key(&base) {
                    targets.insert(base);
                }
            }
            i = i.max(begin + 1);
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// A cycle in `edges`, if there is one.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in &edges[node] {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

#[test]
fn host_modules_import_each_other_without_a_circle() {
    let edges = graph();
    let name = |module: &Module| module.join("::");
    if let Some(cycle) = cycle(&edges) {
        let cycle: Vec<String> = cycle.iter().map(name).collect();
        panic!("import circle under src/host: {}", cycle.join(" -> "));
    }
    // The check sees the graph: the core is below the kinds and the PnP house.
    let has = |from: &str, to: &str| {
        let from: Module = from.split("::").map(String::from).collect();
        let to: Module = to.split("::").map(String::from).collect();
        edges[&from].contains(&to)
    };
    assert!(has("host::work_item", "host::object"));
    assert!(has("host::timer", "host::object"));
    assert!(has("host::device", "host::object"));
    assert!(has("host::object", "host::shared"));
    assert!(has("host::pnp::checker", "host::pnp::machine"));
    assert!(has("host", "host::pnp::checker") || has("host::node", "host::pnp::checker"));
    assert!(!has("host::object", "host::work_item"));
    assert!(!has("host::pnp::machine", "host::pnp::checker"));
}

#[test]
fn a_circle_is_found() {
    let module = |name: &str| -> Module { name.split("::").map(String::from).collect() };
    let mut edges = BTreeMap::new();
    edges.insert(module("host::a"), BTreeSet::from([module("host::b")]));
    edges.insert(module("host::b"), BTreeSet::from([module("host::c")]));
    edges.insert(module("host::c"), BTreeSet::from([module("host::a")]));
    let found = cycle(&edges).expect("a cycle");
    assert_eq!(found.first(), found.last());
    assert_eq!(found.len(), 4);
    edges.insert(module("host::c"), BTreeSet::new());
    assert_eq!(cycle(&edges), None);
}
