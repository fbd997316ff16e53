//! Secondary vCPUs for the multi-vCPU guests: PSCI `CPU_ON` with an entry
//! point in this image that gives each vCPU its own stack, FP/SIMD and the
//! runtime's vectors, then runs the function the guest registered.
//!
//! The runtime's other globals assume one CPU (see [`crate::global`]): code
//! on a secondary vCPU must not print while vCPU 0 does, take IRQs or arm
//! expected aborts. It may read and write its own [`crate::global`] cells
//! (an aligned 64-bit volatile store is single-copy atomic), which is how
//! the guests report from secondaries.

use core::cell::UnsafeCell;

use crate::global::Global;
use crate::smccc;

/// Secondary vCPUs this runtime can start (vCPU 0 is the boot vCPU).
pub const MAX_CPUS: usize = 8;
/// Stack per secondary vCPU.
const STACK_SIZE: usize = 16 * 1024;

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .global stratum_secondary_entry
    .type stratum_secondary_entry, %function
stratum_secondary_entry:
    // x0 = the CPU_ON context: the address of this vCPU's `Boot` record.
    ldr     x1, [x0]
    mov     sp, x1
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    adrp    x1, stratum_vectors
    add     x1, x1, :lo12:stratum_vectors
    msr     vbar_el1, x1
    isb
    ldr     x0, [x0, #8]
    bl      stratum_secondary_main
1:  wfe
    b       1b
    .size stratum_secondary_entry, . - stratum_secondary_entry
"#
);

unsafe extern "C" {
    fn stratum_secondary_entry();
}

/// What the entry code reads for one secondary vCPU (layout fixed by the asm).
#[repr(C)]
#[derive(Clone, Copy)]
struct Boot {
    stack_top: u64,
    index: u64,
}

/// Boot records, one per vCPU index.
#[repr(C, align(16))]
struct BootRecords(UnsafeCell<[Boot; MAX_CPUS]>);

// SAFETY: vCPU 0 writes record `i` before `CPU_ON` starts vCPU `i` (the
// hypercall orders it), and only vCPU `i` reads it afterwards.
unsafe impl Sync for BootRecords {}

static BOOT: BootRecords = BootRecords(UnsafeCell::new(
    [Boot {
        stack_top: 0,
        index: 0,
    }; MAX_CPUS],
));

/// The stacks of the secondary vCPUs.
#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_CPUS]>);

// SAFETY: each stack is used only by the vCPU it was given to, through its
// address; Rust code never forms a reference to the contents.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

/// What every secondary vCPU runs, with its index.
static MAIN: Global<Option<fn(usize) -> !>> = Global::new(None);

/// Rust side of the secondary entry.
#[unsafe(no_mangle)]
extern "C" fn stratum_secondary_main(index: u64) -> ! {
    match MAIN.get() {
        Some(main) => main(index as usize),
        None => crate::report::hang("secondary vCPU started without a main"),
    }
}

/// Starts vCPU `index` (1..[`MAX_CPUS`]) with affinity `mpidr` through PSCI
/// `CPU_ON`, to run `main(index)` on its own stack. Returns the PSCI status.
pub fn start_cpu(index: usize, mpidr: u64, main: fn(usize) -> !) -> i64 {
    if index == 0 || index >= MAX_CPUS {
        return smccc::INVALID_PARAMETERS;
    }
    MAIN.set(Some(main));
    let stack_top = STACKS.0.get() as usize + (index + 1) * STACK_SIZE;
    // SAFETY: `index < MAX_CPUS`; vCPU `index` is not running yet (or
    // CPU_ON refuses to start it again), so nothing reads the record now.
    let record = unsafe {
        let record = BOOT.0.get().cast::<Boot>().add(index);
        record.write_volatile(Boot {
            stack_top: stack_top as u64,
            index: index as u64,
        });
        record
    };
    smccc::cpu_on(
        mpidr,
        stratum_secondary_entry as *const () as u64,
        record as u64,
    )
}
