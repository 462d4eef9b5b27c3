//! The layering check, run with the unit tests (and so in CI): the module graph has no cycle, and
//! its layers only point down, `model < connect < stage < cli`.
//!
//! - **model**: every top-level module other than the three below (values, rows, the protocol,
//!   addresses, the checkpoint...);
//! - **connect**: the stores;
//! - **stage**: what each stage does, over the stores;
//! - **cli**: flags and help, over the stages.
//!
//! An edge is a `crate::` or `super::` path outside comments, strings and the `tests` module
//! (a parent naming its own children, `mod x;` then `x::run`, is how Rust dispatches and is not
//! an edge). Code that needs something from a higher layer or from a module that uses it shows
//! that the thing lives in the wrong place: move it down (see the README, "How the code is
//! organised").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's layer: 0 model, 1 connect, 2 stage, 3 cli.
fn layer(module: &str) -> u8 {
    match module.split("::").next() {
        Some("connect") => 1,
        Some("stage") => 2,
        Some("cli") => 3,
        _ => 0,
    }
}

const LAYERS: [&str; 4] = ["model", "connect", "stage", "cli"];

/// The module a source file defines, from its path under `src/` (`a/mod.rs` and `a.rs` are `a`;
/// `lib.rs` is the crate).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The source with comments, string and char literals blanked out, cut before the unit tests.
fn code_of(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let rest = &src[i..];
        let skip = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if let Some(body) = rest.strip_prefix("/*") {
            body.find("*/").map_or(rest.len(), |j| j + 4)
        } else if rest.starts_with('r') && raw_string_at(rest) && (i == 0 || !ident(b[i - 1])) {
            let hashes = rest[1..].bytes().take_while(|&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            rest[2 + hashes..]
                .find(&close)
                .map_or(rest.len(), |j| 2 + hashes + j + close.len())
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if let Some(escaped) = rest.strip_prefix("'\\") {
            escaped.find('\'').map_or(1, |j| j + 3)
        } else if rest.starts_with('\'') && rest[1..].chars().nth(1) == Some('\'') {
            1 + rest[1..].chars().next().map_or(0, char::len_utf8) + 1
        } else {
            0
        };
        if skip > 0 {
            out.extend(rest[..skip].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
            i += skip;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    match out.find("#[cfg(test)]\nmod tests") {
        Some(at) => out[..at].to_owned(),
        None => out,
    }
}

/// Whether `s` starts a raw string (`r"`, `r#"`), not a raw identifier (`r#type`).
fn raw_string_at(s: &str) -> bool {
    s[1..].trim_start_matches('#').starts_with('"')
}

/// Every path after `crate::` or `super::` in `code`, as (base, segments); a group
/// (`crate::{a, b::c}`) gives one path per item.
fn paths(code: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut found = Vec::new();
    for base in ["crate", "super"] {
        let needle = format!("{base}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&needle) {
            let start = from + at;
            from = start + needle.len();
            if start > 0 && code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let tail = &code[from..];
            if let Some(group) = tail.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    found.push((base, segments(item.trim())));
                }
            } else {
                found.push((base, segments(tail)));
            }
        }
    }
    found
}

/// The leading `a::b::c` of `s`, as segments.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if n == 0 {
            break;
        }
        out.push(rest[..n].to_owned());
        match rest[n..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The module graph of the given sources (path under `src/`, text): who uses whom.
fn graph(files: &[(std::path::PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (path, src) in files {
        let me = module_of(path);
        let parent: Vec<String> = me.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let parent = &parent[..parent.len().saturating_sub(1)];
        for (base, segs) in paths(&code_of(src)) {
            let full: Vec<String> = if base == "super" {
                // `super::super::x` climbs once more per `super`.
                let up = segs.iter().take_while(|s| *s == "super").count();
                let base = &parent[..parent.len().saturating_sub(up)];
                base.iter().cloned().chain(segs.into_iter().skip(up)).collect()
            } else {
                segs
            };
            let used = (1..=full.len())
                .rev()
                .map(|k| full[..k].join("::"))
                .find(|m| modules.contains(m));
            if let Some(used) = used.filter(|u| *u != me && !u.is_empty()) {
                edges.entry(me.clone()).or_default().insert(used);
            }
        }
    }
    edges
}

/// The groups of modules that use each other in a circle (Tarjan's strongly connected components
/// of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if self.stack.contains(&w.as_str()) {
                    let iw = self.index[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|m| *m == v).unwrap_or(0);
                let group: Vec<String> = self.stack.drain(at..).map(str::to_owned).collect();
                if group.len() > 1 {
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for m in edges.keys() {
        if !walk.index.contains_key(m.as_str()) {
            walk.visit(m);
        }
    }
    walk.found
}

/// What is wrong with the graph, one line each: cycles, then edges from a lower layer up.
fn problems(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out: Vec<String> = cycles(edges)
        .into_iter()
        .map(|g| format!("cycle: {} use each other", g.join(", ")))
        .collect();
    for (from, tos) in edges {
        for to in tos.iter().filter(|to| layer(to) > layer(from)) {
            out.push(format!(
                "upward edge: {from} ({}) uses {to} ({})",
                LAYERS[layer(from) as usize],
                LAYERS[layer(to) as usize]
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sources(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files.iter().map(|(p, s)| (PathBuf::from(p), s.to_string())).collect()
    }

    #[test]
    fn the_crate_has_no_module_cycle_and_no_upward_edge() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let files: Vec<(PathBuf, String)> = walkdir::WalkDir::new(&src)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
            .map(|e| {
                let rel = e.path().strip_prefix(&src).unwrap().to_path_buf();
                (rel, std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        let edges = graph(&files);
        assert!(edges.len() > 40, "read the crate's modules: {}", edges.len());
        assert!(
            edges["stage::import::tables"].contains("connect"),
            "{:?}",
            edges["stage::import::tables"]
        );
        let found = problems(&edges);
        assert!(
            found.is_empty(),
            "the module graph must stay layered:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn a_cycle_and_an_upward_edge_are_found_and_named() {
        let files = sources(&[
            ("lib.rs", "pub mod value; pub mod connect; pub mod stage;"),
            (
                "value.rs",
                "// crate::stage in a comment is no edge\nuse crate::connect::sqlite::quote;",
            ),
            ("connect/mod.rs", "pub mod sqlite;\npub mod d1;"),
            (
                "connect/sqlite.rs",
                "use super::d1::Client; const S: &str = \"crate::stage\";",
            ),
            ("connect/d1.rs", "fn f() { crate::connect::sqlite::quote(\"x\"); }"),
            ("stage/mod.rs", "use crate::{connect::d1, value};"),
        ]);
        let edges = graph(&files);
        assert_eq!(
            edges["stage"],
            BTreeSet::from(["connect::d1".to_owned(), "value".to_owned()]),
            "a use group gives each of its paths"
        );
        assert_eq!(
            problems(&edges),
            [
                "cycle: connect::d1, connect::sqlite use each other",
                "upward edge: value (model) uses connect::sqlite (connect)"
            ]
        );
    }

    #[test]
    fn comments_strings_and_the_tests_module_are_not_code() {
        let code = code_of(
            "let a = 'x'; /* crate::a */ let s = r#\"crate::b\"#; let l: &'static str = \"\\\"crate::c\";\ncrate::d::f();\n#[cfg(test)]\nmod tests { crate::e; }",
        );
        let found: Vec<Vec<String>> = paths(&code).into_iter().map(|(_, s)| s).collect();
        assert_eq!(found, [vec!["d".to_owned(), "f".to_owned()]], "{code}");
    }
}
