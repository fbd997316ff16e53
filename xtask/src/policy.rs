//! Architecture rules `cargo xtask lint` enforces besides rustfmt and clippy
//! (DESIGN.md, "Architecture: pure decisions, thin glue"):
//!
//! 1. **Crate dependency direction.** `abi ← core ← vgic ← hypervisor`,
//!    `core ← virtio ← hypervisor` and `core ← arch ← hypervisor`: the pure
//!    device models (`stratum-vgic`, `stratum-virtio`) sit side by side on
//!    `core`, never on each other; `stratum-abi` depends on no workspace
//!    crate, and each layer only on the ones below it ([`LAYERS`]). Every
//!    other workspace crate — the host tool (`stratum`), the system tests,
//!    `xtask`, the test guests — never depends on `stratum-arch` or
//!    `stratum-hypervisor` ([`EL2_ONLY`]). Read from
//!    `cargo metadata --format-version 1 --no-deps`, counting normal, build
//!    and dev dependencies alike.
//! 2. **Assembly lives in `crates/arch-aarch64`.** No `asm!`, `global_asm!`
//!    or `naked_asm!` anywhere else, with two stated exceptions: `guests/`,
//!    the test guests' own EL1 runtime, which is not part of the hypervisor
//!    and needs its own vectors and MMIO accessors, and `tools/workload`,
//!    the Linux userspace program of the bench, which reads the virtual
//!    counter (`mrs cntvct_el0`) at EL0 ([`ASM_ALLOWED`]). The
//!    scan is lexical: comments and string literals are skipped, so docs
//!    may name the macros.
//!
//! 3. **No module cycle in the EL2 binary** (`crate::modules`).
//!
//! Each rule is a pure function over text (the metadata JSON, a source
//! file) with unit tests that feed it a violation; [`check_workspace`]
//! runs both on the real workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The layered crates and the workspace crates each may depend on.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("stratum-abi", &[]),
    ("stratum-core", &["stratum-abi"]),
    ("stratum-vgic", &["stratum-abi", "stratum-core"]),
    ("stratum-virtio", &["stratum-abi", "stratum-core"]),
    ("stratum-arch", &["stratum-abi", "stratum-core"]),
    (
        "stratum-hypervisor",
        &[
            "stratum-abi",
            "stratum-core",
            "stratum-vgic",
            "stratum-virtio",
            "stratum-arch",
        ],
    ),
];

/// Crates that only the EL2 binary may use: no host tool, test or guest
/// links them.
pub const EL2_ONLY: &[&str] = &["stratum-arch", "stratum-hypervisor"];

/// The macros that emit assembly.
const ASM_MACROS: &[&str] = &["asm", "global_asm", "naked_asm"];

/// Directories (relative to the workspace root) whose Rust files may use
/// [`ASM_MACROS`]: the arch crate, the test guests' own runtime (EL1 code
/// of the guests, not of the hypervisor), and the Linux workload program
/// (EL0 code in a guest: its counter reads).
pub const ASM_ALLOWED: &[&str] = &["crates/arch-aarch64", "guests", "tools/workload"];

/// Directories never scanned (build output, VCS state).
const SKIPPED_DIRS: &[&str] = &["target", ".git"];

/// Runs every check on the workspace at `root`; the error lists every
/// violation, one per line.
pub fn check_workspace(root: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    let metadata = String::from_utf8_lossy(&out.stdout);
    let mut problems = dependency_violations(&metadata)?;
    problems.extend(asm_violations_in_tree(root)?);
    problems.extend(crate::modules::violations_in_tree(root)?);
    if problems.is_empty() {
        println!("xtask: dependency direction, assembly placement, module graph: ok");
        Ok(())
    } else {
        Err(format!(
            "{} architecture rule violation(s) (see xtask/src/policy.rs):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

/// Every workspace dependency that breaks the layering, one message each,
/// from `cargo metadata --format-version 1` output. `Err` if the JSON is
/// not cargo metadata.
pub fn dependency_violations(metadata_json: &str) -> Result<Vec<String>, String> {
    let metadata: Value = serde_json::from_str(metadata_json)
        .map_err(|e| format!("cargo metadata output is not JSON: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata output has no `packages` array")?;
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut problems = Vec::new();
    for (name, _) in LAYERS {
        if !members.contains(name) {
            problems.push(format!(
                "{name} is not in the workspace: the layering table in xtask/src/policy.rs names crates that do not exist"
            ));
        }
    }
    for package in packages {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        let deps = package["dependencies"].as_array().map_or(&[][..], |d| d);
        for dep in deps {
            let Some(dep_name) = dep["name"].as_str() else {
                continue;
            };
            if !members.contains(&dep_name) {
                continue;
            }
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if let Some(problem) = edge_violation(name, dep_name) {
                problems.push(format!("{name} -> {dep_name} ({kind}): {problem}"));
            }
        }
    }
    Ok(problems)
}

/// Why `from` may not depend on workspace crate `to`, if it may not.
fn edge_violation(from: &str, to: &str) -> Option<String> {
    match LAYERS.iter().find(|(name, _)| *name == from) {
        Some((_, allowed)) if allowed.contains(&to) => None,
        Some((_, [])) => Some(format!("{from} depends on no workspace crate")),
        Some((_, allowed)) => Some(format!(
            "{from} may depend only on {} (abi <- core <- vgic|virtio <- hypervisor, core <- arch <- hypervisor)",
            allowed.join(", ")
        )),
        None if EL2_ONLY.contains(&to) => Some(format!(
            "host tools, tests and guests never depend on {}",
            EL2_ONLY.join(" or ")
        )),
        None => None,
    }
}

/// Every use of an assembly macro in Rust files under `root` outside
/// [`ASM_ALLOWED`], as `path:line: message`.
fn asm_violations_in_tree(root: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    collect_rust_files(root, root, &mut files)?;
    files.sort();
    let mut problems = Vec::new();
    for rel in files {
        if asm_allowed(&rel) {
            continue;
        }
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        for (line, mac) in asm_uses(&text) {
            problems.push(format!(
                "{}:{line}: `{mac}!` outside crates/arch-aarch64: hardware access belongs in stratum-arch (only guests/, the test guests' EL1 runtime, is exempt)",
                rel.display()
            ));
        }
    }
    Ok(problems)
}

/// Whether the file at `rel` (relative to the workspace root) may use
/// assembly.
fn asm_allowed(rel: &Path) -> bool {
    ASM_ALLOWED.iter().any(|dir| rel.starts_with(dir))
}

/// Appends the `.rs` files below `dir` to `out`, relative to `root`.
fn collect_rust_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                collect_rust_files(root, &path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push(rel);
        }
    }
    Ok(())
}

/// The assembly-macro invocations in Rust source `text`: (1-based line,
/// macro name), skipping comments, string and character literals.
pub fn asm_uses(text: &str) -> Vec<(usize, &'static str)> {
    let tokens = tokens(text);
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Tok::Ident(word) = &t.tok else { continue };
        let bang = tokens.get(i + 1).map(|t| &t.tok) == Some(&Tok::Punct('!'));
        let not_ne = tokens.get(i + 2).map(|t| &t.tok) != Some(&Tok::Punct('='));
        if bang
            && not_ne
            && let Some(mac) = ASM_MACROS.iter().find(|m| **m == word)
        {
            found.push((t.line, *mac));
        }
    }
    found
}

/// One token of Rust source, as far as the rules need: identifiers
/// (keywords included) and single punctuation characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    /// An identifier or keyword.
    Ident(String),
    /// One punctuation character.
    Punct(char),
}

/// A token and its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The line it starts on.
    pub line: usize,
    /// The token.
    pub tok: Tok,
}

/// The identifiers and punctuation of Rust source `text`, without
/// comments, string, byte-string, raw-string and character literals,
/// lifetimes or numbers.
pub fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                // Block comments nest in Rust.
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i + 1, &mut line),
            '\'' => {
                // A character literal ('x', '\n', '\''), or a lifetime.
                if at(i + 1) == '\\' {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // Raw strings: r"…", r#"…"#, br#"…"#.
                if (word == "r" || word == "br") && matches!(at(i), '"' | '#') {
                    let mut hashes = 0;
                    while at(i + hashes) == '#' {
                        hashes += 1;
                    }
                    if at(i + hashes) == '"' {
                        i = skip_raw_string(&chars, i + hashes + 1, hashes, &mut line);
                        continue;
                    }
                }
                if word == "b" && at(i) == '"' {
                    continue; // a byte string: the quote comes next
                }
                if !c.is_ascii_digit() {
                    out.push(Token {
                        line,
                        tok: Tok::Ident(word),
                    });
                }
            }
            c if c.is_whitespace() => i += 1,
            c => {
                out.push(Token {
                    line,
                    tok: Tok::Punct(c),
                });
                i += 1;
            }
        }
    }
    out
}

/// Skips a string literal whose body starts at `i`; returns the index past
/// its closing quote.
fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            c => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips a raw string literal with `hashes` hashes whose body starts at
/// `i`; returns the index past its closing delimiter.
fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += usize::from(chars[i] == '\n');
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dependency in the synthetic metadata: `(name, kind)`, kind `None`
    /// for a normal one.
    type Dep<'a> = (&'a str, Option<&'a str>);

    /// Cargo-metadata-shaped JSON with one package per `(name, deps)`.
    fn metadata(packages: &[(&str, &[Dep<'_>])]) -> String {
        let packages: Vec<Value> = packages
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Value> = deps
                    .iter()
                    .map(|(dep, kind)| serde_json::json!({ "name": dep, "kind": kind, "req": "*" }))
                    .collect();
                serde_json::json!({ "name": name, "version": "0.1.0", "dependencies": deps })
            })
            .collect();
        serde_json::json!({ "packages": packages, "workspace_members": [], "version": 1 })
            .to_string()
    }

    /// The workspace as it should be, plus `extra` edges.
    fn workspace_with(extra: &[(&str, &str, Option<&str>)]) -> String {
        let mut graph: Vec<(&str, Vec<Dep<'_>>)> = vec![
            ("stratum-abi", vec![]),
            ("stratum-core", vec![("stratum-abi", None)]),
            ("stratum-vgic", vec![("stratum-core", None)]),
            ("stratum-virtio", vec![("stratum-core", None)]),
            ("stratum-arch", vec![]),
            (
                "stratum-hypervisor",
                vec![
                    ("stratum-abi", None),
                    ("stratum-arch", None),
                    ("stratum-core", None),
                    ("stratum-vgic", None),
                ],
            ),
            (
                "stratum",
                vec![
                    ("stratum-abi", None),
                    ("stratum-core", None),
                    ("serde", None),
                ],
            ),
            ("stratum-guests", vec![("stratum-abi", None)]),
            ("stratum-systests", vec![("stratum-abi", None)]),
            ("xtask", vec![("stratum", None), ("serde_json", None)]),
        ];
        for (from, to, kind) in extra {
            let entry = graph
                .iter_mut()
                .find(|(name, _)| name == from)
                .expect("the synthetic graph has every crate");
            entry.1.push((to, *kind));
        }
        let packages: Vec<(&str, &[Dep<'_>])> =
            graph.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        metadata(&packages)
    }

    #[test]
    fn the_intended_layering_passes() {
        assert_eq!(dependency_violations(&workspace_with(&[])), Ok(vec![]));
        // The arch crate may use core (core <- arch).
        let arch_on_core = workspace_with(&[("stratum-arch", "stratum-core", None)]);
        assert_eq!(dependency_violations(&arch_on_core), Ok(vec![]));
    }

    #[test]
    fn an_upward_edge_is_reported_with_its_crates() {
        let bad = workspace_with(&[("stratum-core", "stratum-arch", None)]);
        let problems = dependency_violations(&bad).expect("valid JSON");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "stratum-core -> stratum-arch (normal): stratum-core may depend only on stratum-abi"
            ),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn vgic_and_arch_stay_apart() {
        for (from, to) in [
            ("stratum-vgic", "stratum-arch"),
            ("stratum-arch", "stratum-vgic"),
            ("stratum-vgic", "stratum-hypervisor"),
            ("stratum-arch", "stratum-hypervisor"),
        ] {
            let bad = workspace_with(&[(from, to, None)]);
            assert_eq!(
                dependency_violations(&bad).map(|p| p.len()),
                Ok(1),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn virtio_is_pure_beside_vgic() {
        // The pure virtio crate may use core, and the hypervisor may use it.
        let ok = workspace_with(&[("stratum-hypervisor", "stratum-virtio", None)]);
        assert_eq!(dependency_violations(&ok), Ok(vec![]));
        for (from, to) in [
            ("stratum-virtio", "stratum-vgic"),
            ("stratum-vgic", "stratum-virtio"),
            ("stratum-virtio", "stratum-arch"),
            ("stratum-core", "stratum-virtio"),
        ] {
            let bad = workspace_with(&[(from, to, None)]);
            assert_eq!(
                dependency_violations(&bad).map(|p| p.len()),
                Ok(1),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn abi_depends_on_no_workspace_crate() {
        let bad = workspace_with(&[("stratum-abi", "stratum-core", Some("dev"))]);
        let problems = dependency_violations(&bad).expect("valid JSON");
        assert_eq!(
            problems,
            ["stratum-abi -> stratum-core (dev): stratum-abi depends on no workspace crate"]
        );
    }

    #[test]
    fn host_tools_tests_and_guests_never_link_el2_crates() {
        for (from, to, kind) in [
            ("stratum", "stratum-arch", None),
            ("stratum-systests", "stratum-hypervisor", Some("dev")),
            ("xtask", "stratum-arch", Some("build")),
            ("stratum-guests", "stratum-arch", None),
        ] {
            let bad = workspace_with(&[(from, to, kind)]);
            let problems = dependency_violations(&bad).expect("valid JSON");
            assert_eq!(problems.len(), 1, "{from} -> {to}: {problems:?}");
            assert!(
                problems[0].contains("never depend on stratum-arch or stratum-hypervisor"),
                "{}",
                problems[0]
            );
        }
        // Other workspace crates are fine for them.
        let ok = workspace_with(&[("stratum-systests", "stratum-core", Some("dev"))]);
        assert_eq!(dependency_violations(&ok), Ok(vec![]));
    }

    #[test]
    fn a_renamed_layer_is_not_silently_unchecked() {
        let json = metadata(&[("stratum-abi", &[]), ("stratum-core", &[])]);
        let problems = dependency_violations(&json).expect("valid JSON");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("stratum-vgic is not in the workspace"));
        assert!(problems[1].starts_with("stratum-virtio is not in the workspace"));
    }

    #[test]
    fn not_metadata_is_an_error() {
        assert!(dependency_violations("not json").is_err());
        assert!(dependency_violations("{}").is_err());
    }

    #[test]
    fn asm_invocations_are_found_with_their_lines() {
        let text = "fn f() {\n    unsafe { core::arch::asm!(\"nop\") };\n}\nglobal_asm!(\"\");\nnaked_asm !(\"ret\");\n";
        assert_eq!(
            asm_uses(text),
            [(2, "asm"), (4, "global_asm"), (5, "naked_asm")]
        );
    }

    #[test]
    fn comments_strings_and_lookalikes_are_not_asm() {
        let text = r####"
//! No `asm!` in this crate; see `global_asm!` in stratum-arch.
/* block /* nested asm!() */ still comment global_asm!() */
const S: &str = "asm!(\"nop\")";
const R: &str = r#"global_asm!("x") "quoted" "#;
const C: char = '"';
fn lifetimes<'a>(x: &'a str) -> bool { let my_asm = 1; x != "" && my_asm != 2 }
macro_rules! m { () => { asm_like!() } }
"####;
        assert!(asm_uses(text).is_empty(), "{:?}", asm_uses(text));
        // What follows a skipped literal is still scanned.
        let after = "let s = \"a\\\"b\"; let c = '\\''; asm!(\"\");";
        assert_eq!(asm_uses(after), [(1, "asm")]);
    }

    #[test]
    fn only_the_arch_crate_and_the_guest_runtime_may_use_asm() {
        assert!(asm_allowed(Path::new("crates/arch-aarch64/src/head.rs")));
        assert!(asm_allowed(Path::new("guests/src/rt.rs")));
        assert!(asm_allowed(Path::new("tools/workload/src/counter.rs")));
        assert!(!asm_allowed(Path::new("tools/other/src/main.rs")));
        assert!(!asm_allowed(Path::new("hypervisor/src/smp.rs")));
        assert!(!asm_allowed(Path::new("crates/core/src/lib.rs")));
        assert!(!asm_allowed(Path::new(
            "crates/arch-aarch64-extra/src/lib.rs"
        )));
    }

    #[test]
    fn a_file_outside_the_allowed_trees_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        let src = dir.join("hypervisor").join("src");
        std::fs::create_dir_all(&src).expect("temp dir");
        std::fs::write(src.join("bad.rs"), "fn f() {}\nglobal_asm!(\"\");\n").expect("write");
        let arch = dir.join("crates").join("arch-aarch64").join("src");
        std::fs::create_dir_all(&arch).expect("temp dir");
        std::fs::write(arch.join("ok.rs"), "global_asm!(\"\");\n").expect("write");
        let problems = asm_violations_in_tree(&dir).expect("scan");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("hypervisor/src/bad.rs:2: `global_asm!` outside crates/arch-aarch64"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn this_workspace_keeps_its_assembly_in_the_arch_crate() {
        let root = crate::root();
        assert_eq!(asm_violations_in_tree(&root), Ok(vec![]));
    }
}
