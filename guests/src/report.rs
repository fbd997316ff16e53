//! The console protocol the system-test harness reads.
//!
//! - `STRATUM-TEST PASS <name>` then PSCI `SYSTEM_OFF` ([`pass`]);
//! - `STRATUM-TEST FAIL <name>: <why>` then `SYSTEM_OFF` ([`fail`]).
//!
//! The harness checks the console, not only QEMU's exit status, so a guest that
//! powers off without a verdict still fails its test.

use core::fmt::Display;

use stratum_abi::console::TEST_PREFIX;

use crate::smccc;
use crate::start::guest_name;

/// Prints the PASS line and powers the VM off.
pub fn pass() -> ! {
    crate::println!("{TEST_PREFIX} PASS {}", guest_name());
    smccc::system_off()
}

/// Prints the FAIL line with `why` and powers the VM off.
pub fn fail(why: impl Display) -> ! {
    crate::println!("{TEST_PREFIX} FAIL {}: {why}", guest_name());
    smccc::system_off()
}

/// The command line's number `key=N` ([`crate::args::number`]), or
/// `default` when absent; a malformed value fails the test, naming `key`.
pub fn arg_number(cmdline: &str, key: &str, default: u64) -> u64 {
    crate::args::number(cmdline, key, default).unwrap_or_else(|e| fail(format_args!("{key}: {e}")))
}

/// Last resort when a power-state call returned: report and park the vCPU.
pub fn hang(why: &str) -> ! {
    crate::println!("{TEST_PREFIX} FAIL {}: {why}", guest_name());
    loop {
        // SAFETY: `wfe` only waits for an event; interrupts are masked.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) }
    }
}

/// A running tally of named checks, one console line each.
#[derive(Debug, Default)]
pub struct Checks {
    total: u32,
    failed: u32,
}

impl Checks {
    /// No checks yet.
    pub const fn new() -> Self {
        Self {
            total: 0,
            failed: 0,
        }
    }

    /// Records a check; prints `check <what>: ok|FAILED`. Returns `ok`.
    pub fn check(&mut self, what: impl Display, ok: bool) -> bool {
        self.total += 1;
        if !ok {
            self.failed += 1;
        }
        crate::println!("check {what}: {}", if ok { "ok" } else { "FAILED" });
        ok
    }

    /// Records `got == want`, printing both values.
    pub fn check_eq(&mut self, what: impl Display, got: u64, want: u64) -> bool {
        self.check(
            format_args!("{what}: got {got:#x}, want {want:#x}"),
            got == want,
        )
    }

    /// Records `got == want` for counts, printing both in decimal.
    pub fn check_count(&mut self, what: impl Display, got: u64, want: u64) -> bool {
        self.check(format_args!("{what}: got {got}, want {want}"), got == want)
    }

    /// Records `got == want` for signed status codes, printing both values.
    pub fn check_status(&mut self, what: impl Display, got: i64, want: i64) -> bool {
        self.check(format_args!("{what}: got {got}, want {want}"), got == want)
    }

    /// Number of failed checks so far.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Passes if every check passed, otherwise fails naming the count.
    pub fn finish(self) -> ! {
        if self.failed == 0 {
            crate::println!("all {} checks passed", self.total);
            pass()
        } else {
            fail(format_args!(
                "{} of {} checks failed",
                self.failed, self.total
            ))
        }
    }
}
