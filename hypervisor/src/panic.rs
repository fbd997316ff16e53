//! The panic handler and EL2's own exceptions: print an epitaph and stop.
//!
//! A panic means a broken hypervisor invariant (guests cannot cause one). The
//! epitaph names the message, the CPU and the EL2 syndrome registers, then
//! the machine stops with `HYPERVISOR_PANIC`.

use core::fmt::Write;
use core::panic::PanicInfo;

use stratum_abi::exit;
use stratum_arch::{id, sysreg};

use crate::system;

struct Forced(Option<(stratum_core::platform::UartKind, usize)>);

impl Write for Forced {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::write_fmt_forced(format_args!("{s}"), self.0);
        Ok(())
    }
}

fn epitaph(what: core::fmt::Arguments<'_>) -> ! {
    let mut out = Forced(system::settings().and_then(|s| s.uart));
    let _ = writeln!(
        out,
        "\n[stratum] PANIC on CPU {}: {what}\n[stratum]   ESR_EL2={:#018x} ELR_EL2={:#018x} FAR_EL2={:#018x} SPSR_EL2={:#x}",
        id::affinity(sysreg::mpidr_el1()),
        sysreg::esr_el2(),
        sysreg::elr_el2(),
        sysreg::far_el2(),
        sysreg::spsr_el2(),
    );
    system::shutdown(exit::HYPERVISOR_PANIC)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    epitaph(format_args!("{info}"))
}

/// An exception taken from EL2 itself (a hypervisor bug), called by the EL2
/// vectors (`stratum_arch::vectors`): `kind` is the vector slot (0–3
/// SP_EL0, 4–7 SP_EL2; sync, IRQ, FIQ, SError).
#[unsafe(no_mangle)]
pub(crate) extern "C" fn hyp_fault(kind: u64, _frame: usize) -> ! {
    const KINDS: [&str; 4] = ["synchronous exception", "IRQ", "FIQ", "SError"];
    epitaph(format_args!("{} taken at EL2", KINDS[(kind & 3) as usize]))
}
