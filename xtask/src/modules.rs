//! The module-graph rule `cargo xtask lint` enforces on the EL2 binary
//! (issue 10: "its modules import each other in one direction only"): the
//! modules of `hypervisor/src` form no cycle.
//!
//! A module is one file of the crate's `src` directory other than the root
//! (`main.rs`, which declares them all). Module `a` uses module `b` when
//! `a`'s code (comments and literals skipped) names a path `crate::b…`,
//! lists `b` in a `use crate::{…}` group, or invokes a macro that `b`
//! exports (`#[macro_export] macro_rules! name`, reached as `name!` or
//! `crate::name!`). Each cycle is reported once, as a path with the line
//! of each step's first use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::policy::{Tok, Token, tokens};

/// The crates whose modules must not form a cycle, relative to the
/// workspace root, with their root file's name.
pub const ACYCLIC: &[(&str, &str)] = &[("hypervisor/src", "main.rs")];

/// The first line of each module a module uses: `uses[a][b] = line`.
pub type Uses = BTreeMap<String, BTreeMap<String, usize>>;

/// Runs the rule on every crate of [`ACYCLIC`] under `root`.
pub fn violations_in_tree(root: &Path) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for (dir, root_file) in ACYCLIC {
        let mut sources = BTreeMap::new();
        let entries = std::fs::read_dir(root.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{dir}: {e}"))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(module) = name.strip_suffix(".rs") else {
                continue;
            };
            if name == *root_file {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            sources.insert(module.to_owned(), text);
        }
        let uses = module_uses(&sources);
        problems.extend(cycles(&uses).into_iter().map(|c| describe(dir, &c, &uses)));
    }
    Ok(problems)
}

/// Which modules each of `sources` (module name → text) uses.
pub fn module_uses(sources: &BTreeMap<String, String>) -> Uses {
    let toks: BTreeMap<&str, Vec<Token>> = sources
        .iter()
        .map(|(m, text)| (m.as_str(), tokens(text)))
        .collect();
    // Macros each module exports.
    let mut macros = BTreeMap::new();
    for (&module, t) in &toks {
        for w in t.windows(3) {
            if w[0].tok == Tok::Ident("macro_rules".into())
                && w[1].tok == Tok::Punct('!')
                && let Tok::Ident(name) = &w[2].tok
            {
                macros.insert(name.clone(), module.to_owned());
            }
        }
    }
    let mut uses = Uses::new();
    for (&module, t) in &toks {
        let mine = uses.entry(module.to_owned()).or_default();
        let mut note = |target: &str, line: usize| {
            if target != module && sources.contains_key(target) {
                mine.entry(target.to_owned()).or_insert(line);
            }
        };
        let ident = |i: usize| match t.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(w)) => Some(w.as_str()),
            _ => None,
        };
        let punct = |i: usize, c: char| t.get(i).map(|t| &t.tok) == Some(&Tok::Punct(c));
        for i in 0..t.len() {
            let line = t[i].line;
            if ident(i) == Some("crate") && punct(i + 1, ':') && punct(i + 2, ':') {
                if let Some(next) = ident(i + 3) {
                    note(next, line);
                    if let Some(owner) = macros.get(next).filter(|_| punct(i + 4, '!')) {
                        note(owner, line);
                    }
                } else if punct(i + 3, '{') {
                    // A group: the names at its top level.
                    let (mut depth, mut j, mut expect_name) = (1, i + 4, true);
                    while j < t.len() && depth > 0 {
                        match &t[j].tok {
                            Tok::Punct('{') => depth += 1,
                            Tok::Punct('}') => depth -= 1,
                            Tok::Punct(',') if depth == 1 => expect_name = true,
                            Tok::Ident(name) if depth == 1 && expect_name => {
                                note(name, t[j].line);
                                expect_name = false;
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                }
            } else if let Some(name) = ident(i)
                && punct(i + 1, '!')
                && !punct(i + 2, '=')
                && i.checked_sub(1).and_then(ident) != Some("macro_rules")
                && let Some(owner) = macros.get(name)
            {
                note(owner, line);
            }
        }
    }
    uses
}

/// Every cycle of `uses`, one per strongly connected component of more
/// than one module, as a closed path (first module repeated at the end),
/// starting from its alphabetically first module.
pub fn cycles(uses: &Uses) -> Vec<Vec<String>> {
    let modules: Vec<&String> = uses.keys().collect();
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in uses.get(&m).into_iter().flat_map(|u| u.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<String>> =
        modules.iter().map(|m| (m.as_str(), reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in &modules {
        if done.contains(m.as_str()) || !reaches[m.as_str()].contains(m.as_str()) {
            continue;
        }
        // m's component: the modules it reaches that reach it back.
        let component: BTreeSet<&str> = reaches[m.as_str()]
            .iter()
            .map(String::as_str)
            .filter(|n| reaches[*n].contains(m.as_str()))
            .collect();
        done.extend(component.iter().map(|s| s.to_string()));
        out.push(shortest_cycle(m, uses, &component));
    }
    out
}

/// The shortest closed path from `start` back to itself inside `component`.
fn shortest_cycle(start: &str, uses: &Uses, component: &BTreeSet<&str>) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(m) = queue.pop_front() {
        for next in uses.get(&m).into_iter().flat_map(|u| u.keys()) {
            if !component.contains(next.as_str()) || prev.contains_key(next) {
                continue;
            }
            prev.insert(next.clone(), m.clone());
            if next == start {
                let mut path = vec![start.to_owned()];
                let mut at = prev[start].clone();
                while at != start {
                    path.push(at.clone());
                    at = prev[&at].clone();
                }
                path.push(start.to_owned());
                path.reverse();
                return path;
            }
            queue.push_back(next.clone());
        }
    }
    vec![start.to_owned(), start.to_owned()]
}

/// One cycle as a message: `dir: module cycle a -> b (a.rs:12) -> a (b.rs:3)`.
fn describe(dir: &str, cycle: &[String], uses: &Uses) -> String {
    let mut msg = format!("{dir}: module cycle {}", cycle[0]);
    for pair in cycle.windows(2) {
        let line = uses[&pair[0]][&pair[1]];
        msg.push_str(&format!(" -> {} ({}.rs:{line})", pair[1], pair[0]));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn paths_groups_and_exported_macros_are_uses() {
        let uses = module_uses(&sources(&[
            (
                "a",
                "use crate::{b, c::Thing};\nfn f() { crate::d::g(); }\n",
            ),
            ("b", "fn f() { log!(\"x\"); }\n"),
            (
                "c",
                "#[macro_export]\nmacro_rules! log { () => {} }\nfn f() { crate::log!(); }\n",
            ),
            (
                "d",
                "// crate::a::f() is only a comment\nconst S: &str = \"crate::b\";\n",
            ),
        ]));
        let of = |m: &str| {
            uses[m]
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(of("a"), [("b", 1), ("c", 1), ("d", 2)]);
        assert_eq!(of("b"), [("c", 1)]);
        assert_eq!(of("c"), [], "a module's own macro is no use of another");
        assert_eq!(of("d"), [], "comments and strings name nothing");
        assert!(cycles(&uses).is_empty());
    }

    #[test]
    fn a_cycle_is_reported_once_with_its_lines() {
        let uses = module_uses(&sources(&[
            ("irq", "use crate::sched;\n"),
            ("sched", "\nuse crate::system;\n"),
            ("system", "\n\nfn f() { crate::irq::kick(); }\n"),
            ("leaf", "use crate::irq;\n"),
        ]));
        let found = cycles(&uses);
        assert_eq!(found, [["irq", "sched", "system", "irq"]]);
        assert_eq!(
            describe("hypervisor/src", &found[0], &uses),
            "hypervisor/src: module cycle irq -> sched (irq.rs:1) -> system (sched.rs:2) -> irq (system.rs:3)"
        );
    }

    #[test]
    fn two_modules_using_each_other_are_a_cycle() {
        let uses = module_uses(&sources(&[
            ("console", "fn f() { crate::telemetry::print(); }\n"),
            ("telemetry", "fn g() { log!(); }\n"),
            (
                "log_home",
                "#[macro_export]\nmacro_rules! log { () => {} }\n",
            ),
        ]));
        assert!(
            cycles(&uses).is_empty(),
            "telemetry uses log_home, not console"
        );
        let uses = module_uses(&sources(&[
            (
                "console",
                "#[macro_export]\nmacro_rules! log { () => {} }\nfn f() { crate::telemetry::print(); }\n",
            ),
            ("telemetry", "fn g() { log!(); }\n"),
        ]));
        assert_eq!(cycles(&uses), [["console", "telemetry", "console"]]);
    }

    #[test]
    fn the_hypervisor_has_no_module_cycle() {
        assert_eq!(violations_in_tree(&crate::root()), Ok(vec![]));
    }
}
