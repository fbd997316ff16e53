//! Where an EL2 instruction belongs: the categories of the breakdown and
//! the one table ([`RULES`]) that maps the source of an instruction (its
//! file and function, inlined frames included) to one of them.
//!
//! An instruction's frames come innermost first (what `llvm-symbolizer
//! --inlining` prints): the first frame that a rule names decides. Frames
//! that no rule names (the standard library, small helpers such as address
//! newtypes or system-register accessors) pass the decision outwards, to
//! the code that called them; an instruction none of whose frames is named
//! is [`Category::Other`].

/// A category of EL2 work, in the order the breakdown prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// The exception vector, saving the guest's x0–x30 and restoring them
    /// up to `eret` (`crates/arch-aarch64/src/vectors.rs`).
    Vector,
    /// The exit's entry and dispatch: `handle_guest_exit`, the per-CPU and
    /// VM lookups, applying the decided action (`hypervisor/src/exit.rs`,
    /// `core::vmexit`).
    Entry,
    /// Decoding the syndrome or the trapped instruction (`core::esr`,
    /// `core::insn`).
    Decode,
    /// Emulating what the guest asked for: device registers on the bus (the
    /// vGIC's distributor and redistributors, the PL011), SMCCC/PSCI calls,
    /// ID registers.
    Emulation,
    /// Interrupts: acknowledging physical ones, pending virtual ones, the
    /// list registers (fill, fold), injected exceptions.
    Injection,
    /// Scheduling and switching: run queues, the vCPU lifecycle, blocking
    /// in `WFI`, the EL1 context and FP switch.
    Scheduling,
    /// The exit statistics and telemetry.
    Statistics,
    /// Taking and releasing locks.
    Locks,
    /// `memcpy`, `memset` and friends called out of line.
    Copy,
    /// Everything no rule names.
    Other,
}

impl Category {
    /// Every category, in print order.
    pub const ALL: [Self; 10] = [
        Self::Vector,
        Self::Entry,
        Self::Decode,
        Self::Emulation,
        Self::Injection,
        Self::Scheduling,
        Self::Statistics,
        Self::Locks,
        Self::Copy,
        Self::Other,
    ];

    /// The column heading.
    pub fn label(self) -> &'static str {
        match self {
            Self::Vector => "vector+save/restore",
            Self::Entry => "entry/dispatch",
            Self::Decode => "decode",
            Self::Emulation => "emulation",
            Self::Injection => "injection/LRs",
            Self::Scheduling => "scheduling/switch",
            Self::Statistics => "statistics",
            Self::Locks => "locks",
            Self::Copy => "memcpy/memset",
            Self::Other => "other",
        }
    }

    /// The key in `results.json`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Entry => "entry",
            Self::Decode => "decode",
            Self::Emulation => "emulation",
            Self::Injection => "injection",
            Self::Scheduling => "scheduling",
            Self::Statistics => "statistics",
            Self::Locks => "locks",
            Self::Copy => "copy",
            Self::Other => "other",
        }
    }
}

/// One source frame of an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function, demangled ([`demangle`]).
    pub function: String,
    /// The source file as the debug information names it (absolute, or
    /// `??` when there is none, as for assembly).
    pub file: String,
}

/// What a rule looks at.
#[derive(Clone, Copy, Debug)]
pub enum Match {
    /// A source file or directory, relative to the workspace root: matches
    /// a frame whose file is it or lies under it.
    File(&'static str),
    /// A function's exact name (symbols defined in assembly, the C library
    /// helpers).
    Function(&'static str),
}

impl Match {
    fn matches(self, frame: &Frame) -> bool {
        match self {
            Self::File(path) => {
                let file = frame.file.as_str();
                file == path
                    || file
                        .match_indices(path)
                        .any(|(i, _)| i > 0 && file.as_bytes()[i - 1] == b'/')
            }
            Self::Function(name) => frame.function == name,
        }
    }
}

/// The table: which sources belong to which category. The first rule that
/// matches a frame wins, so a file listed twice takes its first category.
pub const RULES: &[(Category, Match)] = &[
    // The vector and the register save/restore, in assembly.
    (Category::Vector, Match::Function("el2_vectors")),
    (Category::Vector, Match::Function("guest_exit_common")),
    (Category::Vector, Match::Function("guest_resume")),
    (Category::Vector, Match::Function("enter_guest")),
    (
        Category::Vector,
        Match::File("crates/arch-aarch64/src/vectors.rs"),
    ),
    // Out-of-line copies.
    (Category::Copy, Match::Function("memcpy")),
    (Category::Copy, Match::Function("memmove")),
    (Category::Copy, Match::Function("memset")),
    (Category::Copy, Match::Function("memcmp")),
    (Category::Copy, Match::Function("bcmp")),
    (Category::Locks, Match::File("hypervisor/src/sync.rs")),
    (
        Category::Locks,
        Match::File("crates/arch-aarch64/src/sync.rs"),
    ),
    (
        Category::Statistics,
        Match::File("crates/core/src/stats.rs"),
    ),
    (
        Category::Statistics,
        Match::File("hypervisor/src/telemetry.rs"),
    ),
    (Category::Decode, Match::File("crates/core/src/esr.rs")),
    (Category::Decode, Match::File("crates/core/src/insn")),
    // Emulation: the bus and its devices, calls, ID registers.
    (Category::Emulation, Match::File("crates/core/src/bus")),
    (Category::Emulation, Match::File("crates/core/src/mmio")),
    (Category::Emulation, Match::File("crates/core/src/pl011.rs")),
    (
        Category::Emulation,
        Match::File("crates/core/src/console.rs"),
    ),
    (Category::Emulation, Match::File("crates/core/src/psci.rs")),
    (Category::Emulation, Match::File("crates/core/src/idreg.rs")),
    (Category::Emulation, Match::File("crates/core/src/ring.rs")),
    (
        Category::Emulation,
        Match::File("hypervisor/src/console.rs"),
    ),
    (Category::Emulation, Match::File("crates/vgic/src/dist")),
    (
        Category::Emulation,
        Match::File("crates/vgic/src/redist.rs"),
    ),
    (Category::Emulation, Match::File("crates/vgic/src/regs.rs")),
    (Category::Emulation, Match::File("crates/vgic/src/sgi.rs")),
    (Category::Emulation, Match::File("crates/vgic/src/power.rs")),
    (
        Category::Emulation,
        Match::File("crates/vgic/src/vmexit_impl.rs"),
    ),
    // Interrupts: virtual state, list registers, the physical GIC.
    (Category::Injection, Match::File("crates/vgic/src/fill.rs")),
    (Category::Injection, Match::File("crates/vgic/src/lr.rs")),
    (Category::Injection, Match::File("crates/vgic/src/state.rs")),
    (Category::Injection, Match::File("crates/vgic/src")),
    (
        Category::Injection,
        Match::File("crates/core/src/inject.rs"),
    ),
    (Category::Injection, Match::File("hypervisor/src/irq.rs")),
    (
        Category::Injection,
        Match::File("crates/arch-aarch64/src/gic"),
    ),
    // Scheduling, the lifecycle and the context switch.
    (Category::Scheduling, Match::File("hypervisor/src/sched.rs")),
    (
        Category::Scheduling,
        Match::File("hypervisor/src/lifecycle.rs"),
    ),
    (
        Category::Scheduling,
        Match::File("crates/core/src/sched.rs"),
    ),
    (
        Category::Scheduling,
        Match::File("crates/core/src/lifecycle"),
    ),
    (
        Category::Scheduling,
        Match::File("crates/arch-aarch64/src/el1.rs"),
    ),
    (
        Category::Scheduling,
        Match::File("crates/arch-aarch64/src/fpsimd.rs"),
    ),
    // The exit's own glue.
    (Category::Entry, Match::Function("handle_guest_exit")),
    (Category::Entry, Match::File("hypervisor/src/exit.rs")),
    (Category::Entry, Match::File("hypervisor/src/percpu.rs")),
    (Category::Entry, Match::File("hypervisor/src/system.rs")),
    (Category::Entry, Match::File("hypervisor/src/head.rs")),
    (Category::Entry, Match::File("crates/core/src/vmexit")),
];

/// The category of an instruction whose frames are `frames`, innermost
/// first.
pub fn classify(frames: &[Frame]) -> Category {
    let rule = |frame: &Frame| {
        RULES
            .iter()
            .find(|(_, m)| m.matches(frame))
            .map(|&(category, _)| category)
    };
    frames
        .iter()
        .find_map(|frame| {
            // Code whose line-table row names no file of ours (line 0,
            // attributed to an inlined library helper or to nothing): the
            // file its function's module path names.
            rule(frame).or_else(|| {
                let file = source_of(&frame.function)?;
                rule(&Frame {
                    function: frame.function.clone(),
                    file,
                })
            })
        })
        .unwrap_or(Category::Other)
}

/// Where the workspace's crates keep their sources, by crate name.
const CRATE_DIRS: [(&str, &str); 4] = [
    ("stratum_hypervisor", "hypervisor/src"),
    ("stratum_core", "crates/core/src"),
    ("stratum_vgic", "crates/vgic/src"),
    ("stratum_arch", "crates/arch-aarch64/src"),
];

/// The source file a workspace function's path names: the crate's
/// directory, then its modules (the lowercase segments before the item's
/// name or type): `stratum_hypervisor::irq::service` is in
/// `hypervisor/src/irq.rs`, `stratum_vgic::state::Vgic::kick_bits` in
/// `crates/vgic/src/state.rs`.
pub fn source_of(function: &str) -> Option<String> {
    let mut segments = function.split("::");
    let krate = segments.next()?;
    let dir = CRATE_DIRS.iter().find(|(k, _)| *k == krate)?.1;
    let mut modules: Vec<&str> = segments
        .take_while(|s| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.is_empty()
        })
        .collect();
    // The last lowercase segment is the function itself unless a type
    // followed it.
    let rest = function.split("::").count() - 1 - modules.len();
    if rest == 0 {
        modules.pop();
    }
    if modules.is_empty() {
        return None;
    }
    Some(format!("{dir}/{}.rs", modules.join("/")))
}

/// A readable Rust name from what `llvm-symbolizer` prints: it demangles
/// the Itanium layer of Rust's legacy mangling but leaves the `$LT$`-style
/// escapes, `..` for `::` and the `::h<hash>` suffix.
pub fn demangle(name: &str) -> String {
    let name = name
        .strip_prefix('_')
        .filter(|n| n.starts_with('$'))
        .unwrap_or(name);
    let name = match name.rfind("::h") {
        Some(i) if name.len() - i == 19 && name[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            &name[..i]
        }
        _ => name,
    };
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix("..") {
            out += "::";
            rest = tail;
            continue;
        }
        if rest.starts_with('$')
            && let Some(end) = rest[1..].find('$')
        {
            let escape = &rest[1..=end];
            let text = match escape {
                "LT" => Some("<".to_owned()),
                "GT" => Some(">".to_owned()),
                "LP" => Some("(".to_owned()),
                "RP" => Some(")".to_owned()),
                "C" => Some(",".to_owned()),
                "RF" => Some("&".to_owned()),
                "BP" => Some("*".to_owned()),
                "SP" => Some("@".to_owned()),
                _ => escape
                    .strip_prefix('u')
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .and_then(char::from_u32)
                    .map(String::from),
            };
            if let Some(text) = text {
                out += &text;
                rest = &rest[end + 2..];
                continue;
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            file: file.to_owned(),
        }
    }

    #[test]
    fn the_innermost_named_frame_decides() {
        // A standard-library helper inlined into the ESR decoder, inlined
        // into the exit handler: decode.
        let frames = [
            frame(
                "core::num::<impl u64>::wrapping_add",
                "/rustc/abc/library/core/src/num/mod.rs",
            ),
            frame(
                "stratum_core::esr::decode",
                "/work/main/crates/core/src/esr.rs",
            ),
            frame("handle_guest_exit", "/work/main/hypervisor/src/exit.rs"),
        ];
        assert_eq!(classify(&frames), Category::Decode);
        // The same helper called from the exit glue itself: entry.
        assert_eq!(
            classify(&[frames[0].clone(), frames[2].clone()]),
            Category::Entry
        );
        // A lock inside the scheduler is a lock.
        let lock = [
            frame(
                "core::sync::atomic::atomic_compare_exchange",
                "/rustc/abc/library/core/src/sync/atomic.rs",
            ),
            frame(
                "stratum_hypervisor::sync::SpinLock<T>::lock",
                "/w/hypervisor/src/sync.rs",
            ),
            frame(
                "stratum_hypervisor::sched::schedule",
                "/w/hypervisor/src/sched.rs",
            ),
        ];
        assert_eq!(classify(&lock), Category::Locks);
    }

    #[test]
    fn every_kind_of_source_has_its_category() {
        let cases = [
            ("el2_vectors", "??", Category::Vector),
            (
                "guest_exit_common",
                "stratum_hypervisor.7fc3-cgu.0",
                Category::Vector,
            ),
            (
                "memcpy",
                "/rustc/x/library/compiler-builtins/src/macros.rs",
                Category::Copy,
            ),
            ("x", "/w/crates/core/src/stats.rs", Category::Statistics),
            ("x", "/w/hypervisor/src/telemetry.rs", Category::Statistics),
            ("x", "/w/hypervisor/src/sync.rs", Category::Locks),
            ("x", "/w/crates/arch-aarch64/src/sync.rs", Category::Locks),
            ("x", "/w/crates/core/src/insn/decode.rs", Category::Decode),
            ("x", "/w/crates/core/src/bus.rs", Category::Emulation),
            ("x", "/w/crates/core/src/bus/window.rs", Category::Emulation),
            ("x", "/w/crates/core/src/psci.rs", Category::Emulation),
            ("x", "/w/crates/vgic/src/dist_v3.rs", Category::Emulation),
            ("x", "/w/crates/vgic/src/fill.rs", Category::Injection),
            ("x", "/w/crates/vgic/src/new_module.rs", Category::Injection),
            ("x", "/w/hypervisor/src/irq.rs", Category::Injection),
            (
                "x",
                "/w/crates/arch-aarch64/src/gic/v3.rs",
                Category::Injection,
            ),
            ("x", "/w/hypervisor/src/sched.rs", Category::Scheduling),
            (
                "x",
                "/w/crates/core/src/lifecycle/vcpu.rs",
                Category::Scheduling,
            ),
            (
                "x",
                "/w/crates/arch-aarch64/src/el1.rs",
                Category::Scheduling,
            ),
            ("x", "/w/hypervisor/src/exit.rs", Category::Entry),
            ("x", "/w/crates/core/src/vmexit/early.rs", Category::Entry),
            ("x", "/w/hypervisor/src/main.rs", Category::Other),
            (
                "x",
                "/rustc/abc/library/core/src/fmt/mod.rs",
                Category::Other,
            ),
        ];
        for (function, file, want) in cases {
            assert_eq!(
                classify(&[frame(function, file)]),
                want,
                "{function} in {file}"
            );
        }
        assert_eq!(classify(&[]), Category::Other);
    }

    #[test]
    fn code_without_a_file_goes_by_its_module_path() {
        assert_eq!(
            source_of("stratum_hypervisor::irq::service").as_deref(),
            Some("hypervisor/src/irq.rs")
        );
        assert_eq!(
            source_of("stratum_vgic::state::Vgic::kick_bits").as_deref(),
            Some("crates/vgic/src/state.rs")
        );
        assert_eq!(
            source_of("stratum_core::lifecycle::vcpu::step").as_deref(),
            Some("crates/core/src/lifecycle/vcpu.rs")
        );
        assert_eq!(source_of("stratum_hypervisor::main"), None);
        assert_eq!(source_of("core::fmt::write"), None);
        assert_eq!(source_of("<stratum_vgic::Vgic as x>::read"), None);
        assert_eq!(
            classify(&[frame("stratum_hypervisor::sched::run_next", "??")]),
            Category::Scheduling
        );
        assert_eq!(
            classify(&[frame("stratum_vgic::state::Vgic::kick_bits", "")]),
            Category::Injection
        );
        assert_eq!(
            classify(&[frame(
                "stratum_hypervisor::irq::service",
                "/rustc/abc/library/core/src/option.rs"
            )]),
            Category::Injection
        );
        // A known file wins over the path.
        assert_eq!(
            classify(&[frame(
                "stratum_hypervisor::sched::run_next",
                "/w/hypervisor/src/exit.rs"
            )]),
            Category::Entry
        );
    }

    #[test]
    fn file_rules_match_whole_path_components() {
        // `core/src/bus` must not match a file that merely ends the same way
        // inside another name, nor the standard library's `core`.
        assert_eq!(
            classify(&[frame("x", "/w/crates/xcrates/core/src/esr.rs")]),
            Category::Other
        );
        assert_eq!(
            classify(&[frame("x", "/rustc/abc/library/core/src/esr.rs")]),
            Category::Other
        );
        assert_eq!(
            classify(&[frame("x", "crates/core/src/esr.rs")]),
            Category::Decode
        );
        // Functions match exactly, not by prefix.
        assert_eq!(classify(&[frame("memcpy_like", "??")]), Category::Other);
    }

    #[test]
    fn every_category_is_printed_once() {
        let mut keys: Vec<&str> = Category::ALL.iter().map(|c| c.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), Category::ALL.len());
        // Every rule's category is one that is printed.
        assert!(RULES.iter().all(|(c, _)| Category::ALL.contains(c)));
    }

    #[test]
    fn demangles_what_the_symbolizer_leaves() {
        assert_eq!(
            demangle("stratum_hypervisor::vm::Vm::load::h71d1ac1b562ae5ad"),
            "stratum_hypervisor::vm::Vm::load"
        );
        assert_eq!(
            demangle(
                "_$LT$stratum_arch..gic..GicError$u20$as$u20$core..fmt..Display$GT$::fmt::h75f4cf6eca853c63"
            ),
            "<stratum_arch::gic::GicError as core::fmt::Display>::fmt"
        );
        assert_eq!(
            demangle("<core::fmt::Formatter>::pad"),
            "<core::fmt::Formatter>::pad"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
        // Not a hash: kept.
        assert_eq!(demangle("a::hello"), "a::hello");
        assert_eq!(demangle("a$RF$b$C$c$XY$"), "a&b,c$XY$");
    }
}
