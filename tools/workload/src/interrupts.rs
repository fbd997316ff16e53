//! Interrupt counts from `/proc/interrupts`: the arch timer's and the
//! total, summed over the CPUs, read before and after each test so a result
//! says how many interrupts (and so how many hypervisor exits of that kind)
//! fell inside its window.
//!
//! The file's first line names the CPUs (`CPU0 CPU1 …`); every other line is
//! `LABEL: n0 n1 … description`. `Err:` and `MIS:` are error counters with
//! one column, not interrupts, and are left out of the total.

use std::fs;

/// Counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Interrupts of the line whose description names `arch_timer`.
    pub timer: u64,
    /// Interrupts of every line.
    pub all: u64,
}

impl Counts {
    /// What happened between `self` and the later `after`.
    pub fn until(self, after: Counts) -> Counts {
        Counts {
            timer: after.timer.saturating_sub(self.timer),
            all: after.all.saturating_sub(self.all),
        }
    }
}

/// Parses the text of `/proc/interrupts`; `None` if it has no CPU header.
pub fn parse(text: &str) -> Option<Counts> {
    let mut lines = text.lines();
    let cpus = lines
        .next()?
        .split_whitespace()
        .filter(|w| w.starts_with("CPU"))
        .count();
    if cpus == 0 {
        return None;
    }
    let mut counts = Counts::default();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(label) = words.next() else {
            continue;
        };
        if matches!(label, "Err:" | "MIS:") || !label.ends_with(':') {
            continue;
        }
        let mut sum = 0u64;
        let mut rest = Vec::new();
        for (i, word) in words.enumerate() {
            match word.parse::<u64>() {
                Ok(n) if i < cpus => sum += n,
                _ => rest.push(word),
            }
        }
        counts.all += sum;
        if rest.contains(&"arch_timer") {
            counts.timer += sum;
        }
    }
    Some(counts)
}

/// Reads `/proc/interrupts` now.
pub fn read() -> Result<Counts, String> {
    let text = fs::read_to_string("/proc/interrupts")
        .map_err(|e| format!("cannot read /proc/interrupts: {e}"))?;
    parse(&text).ok_or_else(|| "/proc/interrupts has no CPU header".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-CPU GICv3 guest, as Debian's kernel prints it.
    const TWO_CPUS: &str = "           CPU0       CPU1       \n\
 11:       1507       1422     GICv3  27 Level     arch_timer\n\
 13:        203          0     GICv3  33 Level     uart-pl011\n\
IPI0:        31         40       Rescheduling interrupts\n\
IPI1:         2          5       Function call interrupts\n\
Err:          0\n";

    #[test]
    fn sums_every_cpu_and_finds_the_timer() {
        assert_eq!(
            parse(TWO_CPUS),
            Some(Counts {
                timer: 1507 + 1422,
                all: 1507 + 1422 + 203 + 31 + 40 + 2 + 5
            })
        );
    }

    #[test]
    fn error_counters_and_descriptions_are_not_counted() {
        // A description that starts with a number is not a CPU column.
        let text = "  CPU0\n 5:  7  GIC 10 Level  arch_timer\n 6:  1  GIC 99 Edge 42-thing\n\
                    Err: 1000\nMIS: 12\n";
        assert_eq!(parse(text), Some(Counts { timer: 7, all: 8 }));
        assert_eq!(parse("no header\n 5: 7\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn differences_never_go_negative() {
        let a = Counts { timer: 5, all: 9 };
        let b = Counts { timer: 7, all: 12 };
        assert_eq!(a.until(b), Counts { timer: 2, all: 3 });
        assert_eq!(b.until(a), Counts::default());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_running_kernel_has_counts() {
        let counts = read().expect("readable on Linux");
        assert!(counts.all >= counts.timer);
    }
}
