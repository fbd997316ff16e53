//! A small GIC driver for the interrupt test guests: GICv2 (memory-mapped
//! distributor and CPU interface) and GICv3 (distributor, this CPU's
//! redistributor, and the `ICC_*` system-register CPU interface).
//!
//! The version and frame addresses come from the device tree
//! ([`crate::fdt::Devices`]). Only when there is no usable device tree (QEMU
//! booting the ELF directly puts its 1 MiB DTB nowhere the guest can find it)
//! does [`Gic::discover`] fall back to the QEMU `virt` layout, taking the
//! version from `ID_AA64PFR0_EL1.GIC`, and it says so on the console.
//!
//! Every interrupt is configured as Group 1 (non-secure). The CPU interface
//! is set up so that it works whatever group the interrupt ends up in: on v2
//! `GICC_CTLR` enables both groups with `AckCtl`, so `GICC_IAR` acknowledges
//! either (a GIC without security extensions, or a virtual CPU interface,
//! treats the guest as "secure" for this purpose).
//!
//! Every register access is one `ldr`/`str` ([`crate::mmio`]); 32-bit unless
//! a method says otherwise.

use core::arch::asm;

use crate::fdt::{Devices, GicVersion};
use crate::global::Global;
use crate::{mmio, println, sysreg};

/// Distributor control register.
pub const GICD_CTLR: usize = 0x0000;
/// Interrupt controller type register.
pub const GICD_TYPER: usize = 0x0004;
/// Implementer identification register.
pub const GICD_IIDR: usize = 0x0008;
/// Interrupt group registers (1 bit per INTID).
pub const GICD_IGROUPR: usize = 0x0080;
/// Set-enable registers (1 bit per INTID).
pub const GICD_ISENABLER: usize = 0x0100;
/// Clear-enable registers.
pub const GICD_ICENABLER: usize = 0x0180;
/// Set-pending registers.
pub const GICD_ISPENDR: usize = 0x0200;
/// Clear-pending registers.
pub const GICD_ICPENDR: usize = 0x0280;
/// Set-active registers.
pub const GICD_ISACTIVER: usize = 0x0300;
/// Clear-active registers.
pub const GICD_ICACTIVER: usize = 0x0380;
/// Priority registers (1 byte per INTID).
pub const GICD_IPRIORITYR: usize = 0x0400;
/// v3: group modifier registers (0 with `IGROUPR` = 1: non-secure Group 1;
/// RAZ/WI with a single security state).
pub const GICD_IGRPMODR: usize = 0x0d00;
/// v2: CPU targets registers (1 byte per INTID).
pub const GICD_ITARGETSR: usize = 0x0800;
/// Configuration registers (2 bits per INTID; `0b10` = edge).
pub const GICD_ICFGR: usize = 0x0c00;
/// v2: software generated interrupt register.
pub const GICD_SGIR: usize = 0x0f00;
/// v2: SGI clear-pending registers (1 byte per SGI, 1 bit per source CPU).
pub const GICD_CPENDSGIR: usize = 0x0f10;
/// v3: interrupt routing registers (64-bit, one per INTID; SPIs only).
pub const GICD_IROUTER: usize = 0x6000;
/// v2: peripheral ID2 register of the distributor.
pub const GICD_PIDR2_V2: usize = 0x0fe8;
/// v3: peripheral ID2 register of the distributor and the redistributors.
pub const GIC_PIDR2_V3: usize = 0xffe8;

/// v3 `GICD_CTLR.RWP`: a register write is still taking effect.
pub const GICD_CTLR_RWP: u32 = 1 << 31;
/// v3 `GICD_CTLR`: `ARE_NS` (`ARE` with a single security state).
pub const GICD_CTLR_ARE: u32 = 1 << 4;
/// `GICD_CTLR.EnableGrp1A` (v3 NS view) / `EnableGrp1` (v2 and v3 with DS=1).
pub const GICD_CTLR_GRP1: u32 = 1 << 1;
/// `GICD_CTLR.EnableGrp1` (v3 NS view) / `EnableGrp0` (v2 and v3 with DS=1).
pub const GICD_CTLR_GRP0: u32 = 1 << 0;

/// v3 redistributor control register (`RD_base`).
pub const GICR_CTLR: usize = 0x0000;
/// v3 redistributor type register (64-bit, read as two words).
pub const GICR_TYPER: usize = 0x0008;
/// v3 redistributor wake register.
pub const GICR_WAKER: usize = 0x0014;
/// `GICR_WAKER.ProcessorSleep`.
pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// `GICR_WAKER.ChildrenAsleep`.
pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// `GICR_TYPER.Last`: the last redistributor of its region.
pub const GICR_TYPER_LAST: u64 = 1 << 4;
/// Offset of the SGI/PPI frame (`SGI_base`) from `RD_base`.
pub const GICR_SGI_FRAME: usize = 0x1_0000;

/// v2 CPU interface control register.
pub const GICC_CTLR: usize = 0x0000;
/// v2 priority mask register.
pub const GICC_PMR: usize = 0x0004;
/// v2 binary point register.
pub const GICC_BPR: usize = 0x0008;
/// v2 interrupt acknowledge register.
pub const GICC_IAR: usize = 0x000c;
/// v2 end of interrupt register.
pub const GICC_EOIR: usize = 0x0010;
/// v2 running priority register.
pub const GICC_RPR: usize = 0x0014;
/// v2 aliased binary point register (Group 1).
pub const GICC_ABPR: usize = 0x001c;

/// INTIDs from this one up are special (1020–1023; 1023 = spurious).
pub const SPECIAL_INTID: u32 = 1020;
/// The non-secure EL1 virtual timer's PPI.
pub const INTID_VTIMER: u32 = 27;
/// The non-secure EL1 physical timer's PPI.
pub const INTID_PTIMER: u32 = 30;

/// QEMU `virt`'s GIC layout, used only without a device tree.
const VIRT_GICD: usize = 0x0800_0000;
const VIRT_GICC: usize = 0x0801_0000;
const VIRT_GICR: (usize, usize) = (0x080a_0000, 0xf6_0000);

/// Bounded polls for `RWP` and `GICR_WAKER` handshakes.
const POLL_LIMIT: u32 = 1_000_000;

/// Where an SGI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiTarget {
    /// This CPU, named explicitly (v3: its Aff0 in `TargetList`, Aff1–3 from
    /// `MPIDR`; v2: `TargetListFilter = 0b00` with its CPU mask).
    SelfByList,
    /// v2 only: `TargetListFilter = 0b10`, "this CPU".
    SelfByFilter,
    /// Every CPU but this one (v3: `IRM = 1`; v2: `TargetListFilter = 0b01`).
    AllButSelf,
}

/// One discovered GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// v2 or v3.
    pub version: GicVersion,
    /// Distributor base.
    pub gicd: usize,
    /// v2: CPU interface base (0 on v3).
    pub gicc: usize,
    /// v3: the redistributor region `(base, size)` from the DT.
    pub gicr_region: (usize, usize),
    /// v3: this CPU's redistributor `RD_base` (0 until found, and on v2).
    pub gicr: usize,
    /// Whether the addresses came from the device tree.
    pub from_dt: bool,
}

/// The GIC the IRQ vector acknowledges through (set by [`Gic::init`]).
static CURRENT: Global<Option<Gic>> = Global::new(None);

/// The initialized GIC, if any.
pub fn current() -> Option<Gic> {
    CURRENT.get()
}

macro_rules! icc_write {
    ($reg:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: writing this GIC CPU-interface register at EL1 only changes
        // interrupt state, which the caller manages.
        unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags)) }
    }};
}

macro_rules! icc_read {
    ($reg:literal) => {{
        let value: u64;
        // SAFETY: reading this GIC CPU-interface register at EL1 has no side
        // effect beyond what its name says (IAR acknowledges; callers know).
        unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nostack, preserves_flags)) }
        value
    }};
}

fn isb() {
    // SAFETY: a barrier.
    unsafe { asm!("isb", options(nostack, preserves_flags)) }
}

/// `ID_AA64PFR0_EL1.GIC`: non-zero when the GICv3 system registers exist.
pub fn has_gicv3_sysregs() -> bool {
    let pfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack, preserves_flags))
    };
    (pfr0 >> 24) & 0xf != 0
}

impl Gic {
    /// The GIC from the device tree, or the QEMU `virt` layout when there is
    /// none (saying so). Prints one line `gic: v<N> from the device tree …`.
    pub fn discover(devices: Option<&Devices>) -> Gic {
        let gic = match devices.and_then(|d| d.gic) {
            Some(node) => Gic {
                version: node.version,
                gicd: node.distributor.0 as usize,
                gicc: if node.version == GicVersion::V2 {
                    node.second.0 as usize
                } else {
                    0
                },
                gicr_region: if node.version == GicVersion::V3 {
                    (node.second.0 as usize, node.second.1 as usize)
                } else {
                    (0, 0)
                },
                gicr: 0,
                from_dt: true,
            },
            None => {
                let version = if has_gicv3_sysregs() {
                    GicVersion::V3
                } else {
                    GicVersion::V2
                };
                Gic {
                    version,
                    gicd: VIRT_GICD,
                    gicc: if version == GicVersion::V2 {
                        VIRT_GICC
                    } else {
                        0
                    },
                    gicr_region: if version == GicVersion::V3 {
                        VIRT_GICR
                    } else {
                        (0, 0)
                    },
                    gicr: 0,
                    from_dt: false,
                }
            }
        };
        let v = gic.version_number();
        if gic.from_dt {
            match gic.version {
                GicVersion::V2 => println!(
                    "gic: v2 from the device tree: GICD {:#x} GICC {:#x}",
                    gic.gicd, gic.gicc
                ),
                GicVersion::V3 => println!(
                    "gic: v3 from the device tree: GICD {:#x} GICR region {:#x}+{:#x}",
                    gic.gicd, gic.gicr_region.0, gic.gicr_region.1
                ),
            }
        } else {
            println!(
                "gic: v{v} assumed (no device tree; QEMU virt layout, version from ID_AA64PFR0_EL1)"
            );
        }
        gic
    }

    /// 2 or 3.
    pub fn version_number(&self) -> u32 {
        match self.version {
            GicVersion::V2 => 2,
            GicVersion::V3 => 3,
        }
    }

    /// Whether this is a GICv3.
    pub fn is_v3(&self) -> bool {
        self.version == GicVersion::V3
    }

    /// Reads distributor register `off`.
    pub fn gicd_read(&self, off: usize) -> u32 {
        // SAFETY: `off` is inside the distributor frame (callers use the
        // register constants); GICD reads have no side effects.
        unsafe { mmio::read32(self.gicd + off) }
    }

    /// Writes distributor register `off`.
    pub fn gicd_write(&self, off: usize, value: u32) {
        // SAFETY: `off` is inside the distributor frame; the test owns the GIC.
        unsafe { mmio::write32(self.gicd + off, value) }
    }

    /// Reads v3 redistributor (`RD_base`) register `off`.
    pub fn gicr_read(&self, off: usize) -> u32 {
        // SAFETY: `gicr` is this CPU's redistributor (found by `init`); reads
        // of its registers have no side effects.
        unsafe { mmio::read32(self.gicr + off) }
    }

    /// Writes v3 redistributor (`RD_base`) register `off`.
    pub fn gicr_write(&self, off: usize, value: u32) {
        // SAFETY: as for `gicr_read`; the test owns the GIC.
        unsafe { mmio::write32(self.gicr + off, value) }
    }

    fn gicc_read(&self, off: usize) -> u32 {
        // SAFETY: `gicc` is the v2 CPU interface; only IAR has a side effect,
        // and `ack` is its only caller.
        unsafe { mmio::read32(self.gicc + off) }
    }

    fn gicc_write(&self, off: usize, value: u32) {
        // SAFETY: `gicc` is the v2 CPU interface; the test owns it.
        unsafe { mmio::write32(self.gicc + off, value) }
    }

    /// The frame holding the per-INTID registers of `intid`: the v3
    /// redistributor's SGI frame for SGIs and PPIs, else the distributor.
    /// (The SGI frame uses the distributor's offsets for INTIDs 0–31.)
    pub fn frame_for(&self, intid: u32) -> usize {
        if intid < 32 && self.is_v3() {
            self.gicr + GICR_SGI_FRAME
        } else {
            self.gicd
        }
    }

    /// Reads the per-INTID register at `base_off` (e.g. [`GICD_ISPENDR`])
    /// word that holds `intid`'s bit, and returns that bit.
    fn bit(&self, base_off: usize, intid: u32) -> bool {
        let addr = self.frame_for(intid) + base_off + 4 * (intid / 32) as usize;
        // SAFETY: a bitmap register of the GIC; reads have no side effects.
        unsafe { mmio::read32(addr) & (1 << (intid % 32)) != 0 }
    }

    /// Writes `intid`'s bit (only) to the W1S/W1C register at `base_off`.
    fn set_bit(&self, base_off: usize, intid: u32) {
        let addr = self.frame_for(intid) + base_off + 4 * (intid / 32) as usize;
        // SAFETY: a write-one-to-set/clear register of the GIC.
        unsafe { mmio::write32(addr, 1 << (intid % 32)) }
    }

    /// Enables `intid` at the distributor/redistributor.
    pub fn enable(&self, intid: u32) {
        self.set_bit(GICD_ISENABLER, intid);
        self.wait_rwp(intid);
    }

    /// Disables `intid` (and waits for it to take effect).
    pub fn disable(&self, intid: u32) {
        self.set_bit(GICD_ICENABLER, intid);
        self.wait_rwp(intid);
    }

    /// Whether `intid` is enabled.
    pub fn is_enabled(&self, intid: u32) -> bool {
        self.bit(GICD_ISENABLER, intid)
    }

    /// Makes `intid` pending (`ISPENDR`).
    pub fn set_pending(&self, intid: u32) {
        self.set_bit(GICD_ISPENDR, intid);
    }

    /// Clears `intid`'s pending state (`ICPENDR`).
    pub fn clear_pending(&self, intid: u32) {
        self.set_bit(GICD_ICPENDR, intid);
    }

    /// Whether `intid` is pending (`ISPENDR`).
    pub fn is_pending(&self, intid: u32) -> bool {
        self.bit(GICD_ISPENDR, intid)
    }

    /// Whether `intid` is pending as `ICPENDR` shows it (the clear-pending
    /// registers read the same state as `ISPENDR`).
    pub fn is_pending_by_icpendr(&self, intid: u32) -> bool {
        self.bit(GICD_ICPENDR, intid)
    }

    /// Whether `intid` is active (`ISACTIVER`).
    pub fn is_active(&self, intid: u32) -> bool {
        self.bit(GICD_ISACTIVER, intid)
    }

    /// Sets `intid`'s priority (read-modify-write of its 32-bit word).
    pub fn set_priority(&self, intid: u32, priority: u8) {
        let addr = self.frame_for(intid) + GICD_IPRIORITYR + (intid as usize & !3);
        let shift = 8 * (intid % 4);
        // SAFETY: the IPRIORITYR word holding `intid`; single CPU, so the
        // read-modify-write cannot race.
        unsafe {
            let word = mmio::read32(addr) & !(0xff << shift);
            mmio::write32(addr, word | (u32::from(priority) << shift));
        }
    }

    /// `intid`'s priority (from its 32-bit word).
    pub fn priority(&self, intid: u32) -> u8 {
        let addr = self.frame_for(intid) + GICD_IPRIORITYR + (intid as usize & !3);
        // SAFETY: the IPRIORITYR word holding `intid`; no read side effects.
        let word = unsafe { mmio::read32(addr) };
        (word >> (8 * (intid % 4))) as u8
    }

    /// Configures SPI or PPI `intid` as edge- (`true`) or level-triggered.
    pub fn set_edge(&self, intid: u32, edge: bool) {
        let addr = self.frame_for(intid) + GICD_ICFGR + 4 * (intid / 16) as usize;
        let shift = 2 * (intid % 16);
        // SAFETY: the ICFGR word holding `intid`; single CPU RMW.
        unsafe {
            let word = mmio::read32(addr) & !(0b11 << shift);
            mmio::write32(addr, word | (u32::from(edge) << (shift + 1)));
        }
    }

    /// Routes SPI `intid` to this CPU (v3 `IROUTER` = own affinity, 64-bit
    /// store; v2 `ITARGETSR` byte = own CPU mask).
    pub fn route_to_self(&self, intid: u32) {
        if intid < 32 {
            return;
        }
        match self.version {
            GicVersion::V3 => {
                let addr = self.gicd + GICD_IROUTER + 8 * intid as usize;
                // SAFETY: the 64-bit, 64-bit-accessible IROUTER of this SPI.
                unsafe { mmio::write64(addr, sysreg::mpidr_affinity()) }
            }
            GicVersion::V2 => {
                let addr = self.gicd + GICD_ITARGETSR + intid as usize;
                // SAFETY: ITARGETSR is byte-accessible; this SPI's byte.
                unsafe { mmio::write8(addr, self.cpu_mask()) }
            }
        }
    }

    /// v2: this CPU's bit in `ITARGETSR` (read from the read-only, banked
    /// `ITARGETSR0`, which names the reading CPU). A uniprocessor GICv2 makes
    /// every `ITARGETSR` RAZ/WI; its one CPU interface is then CPU 0.
    pub fn cpu_mask(&self) -> u8 {
        match self.gicd_read(GICD_ITARGETSR) as u8 {
            0 => 1,
            mask => mask,
        }
    }

    /// v2: whether the distributor serves a single CPU interface
    /// (`GICD_TYPER.CPUNumber == 0`, so `ITARGETSR` is RAZ/WI).
    pub fn uniprocessor(&self) -> bool {
        (self.gicd_read(GICD_TYPER) >> 5) & 7 == 0
    }

    /// Number of interrupt lines the distributor implements (up to 1020).
    pub fn lines(&self) -> u32 {
        (32 * ((self.gicd_read(GICD_TYPER) & 0x1f) + 1)).min(SPECIAL_INTID)
    }

    /// Waits for a v3 register write to take effect (`RWP` of the frame
    /// that holds `intid`); nothing on v2.
    fn wait_rwp(&self, intid: u32) {
        if !self.is_v3() {
            return;
        }
        let ctlr = if intid < 32 {
            self.gicr + GICR_CTLR
        } else {
            self.gicd + GICD_CTLR
        };
        for _ in 0..POLL_LIMIT {
            // SAFETY: GICD_CTLR / GICR_CTLR reads have no side effects.
            if unsafe { mmio::read32(ctlr) } & GICD_CTLR_RWP == 0 {
                return;
            }
        }
        println!("gic: RWP stuck at {ctlr:#x}");
    }

    /// Finds this CPU's redistributor in the region: the frame whose
    /// `GICR_TYPER.Affinity` equals `MPIDR_EL1`'s, stopping at `Last`.
    pub fn find_redistributor(&self) -> Option<usize> {
        let mpidr = sysreg::mpidr_el1();
        let want = ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff);
        let (base, size) = self.gicr_region;
        let mut off = 0;
        while off + 2 * GICR_SGI_FRAME <= size {
            let rd = base + off;
            // SAFETY: inside the redistributor region from the DT.
            let typer = unsafe { read_typer(rd) };
            if typer >> 32 == want {
                return Some(rd);
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            // GICv4 redistributors (VLPIS) have two more 64 KiB frames.
            off += if typer & 2 != 0 { 4 } else { 2 } * GICR_SGI_FRAME;
        }
        None
    }

    /// Wakes the v3 redistributor (`ProcessorSleep` = 0, wait for
    /// `ChildrenAsleep` = 0). Returns whether it woke.
    pub fn wake(&self) -> bool {
        self.set_sleep(false)
    }

    /// Sets or clears `GICR_WAKER.ProcessorSleep` and waits for
    /// `ChildrenAsleep` to follow. Returns whether it did.
    pub fn set_sleep(&self, sleep: bool) -> bool {
        let waker = self.gicr_read(GICR_WAKER);
        let waker = if sleep {
            waker | WAKER_PROCESSOR_SLEEP
        } else {
            waker & !WAKER_PROCESSOR_SLEEP
        };
        self.gicr_write(GICR_WAKER, waker);
        (0..POLL_LIMIT).any(|_| (self.gicr_read(GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0) == sleep)
    }

    /// Puts the GIC into a known state and enables it for this CPU: every
    /// interrupt disabled, not pending, not active, Group 1, priority 0xA0,
    /// SPIs routed here; distributor on (v3: affinity routing), redistributor
    /// awake, CPU interface on with `PMR = 0xFF` and binary point 0. Makes
    /// this the GIC the IRQ vector uses.
    pub fn init(&mut self) -> Result<(), &'static str> {
        if self.is_v3() {
            self.gicr = self
                .find_redistributor()
                .ok_or("no redistributor with this CPU's affinity")?;
        }
        // Distributor off while reconfiguring.
        self.gicd_write(GICD_CTLR, 0);
        self.wait_rwp(32);
        let lines = self.lines();
        for n in 1..(lines as usize).div_ceil(32) {
            self.gicd_write(GICD_ICENABLER + 4 * n, u32::MAX);
            self.gicd_write(GICD_ICPENDR + 4 * n, u32::MAX);
            self.gicd_write(GICD_ICACTIVER + 4 * n, u32::MAX);
            self.gicd_write(GICD_IGROUPR + 4 * n, u32::MAX);
            if self.is_v3() {
                self.gicd_write(GICD_IGRPMODR + 4 * n, 0);
            }
        }
        self.wait_rwp(32);
        for intid in 32..lines {
            self.set_priority(intid, 0xa0);
            self.route_to_self(intid);
        }
        let ctlr = match self.version {
            GicVersion::V3 => GICD_CTLR_ARE | GICD_CTLR_GRP1 | GICD_CTLR_GRP0,
            GicVersion::V2 => GICD_CTLR_GRP1 | GICD_CTLR_GRP0,
        };
        self.gicd_write(GICD_CTLR, ctlr);
        self.wait_rwp(32);

        if self.is_v3() && !self.wake() {
            return Err("redistributor did not wake (GICR_WAKER.ChildrenAsleep stuck)");
        }
        let banked = self.frame_for(0);
        // SAFETY: the banked SGI/PPI registers of this CPU (all four).
        unsafe {
            mmio::write32(banked + GICD_ICENABLER, u32::MAX);
            mmio::write32(banked + GICD_ICPENDR, u32::MAX);
            mmio::write32(banked + GICD_ICACTIVER, u32::MAX);
            mmio::write32(banked + GICD_IGROUPR, u32::MAX);
        }
        if self.is_v3() {
            // SAFETY: the redistributor's GICR_IGRPMODR0.
            unsafe { mmio::write32(banked + GICD_IGRPMODR, 0) };
        }
        if !self.is_v3() {
            for n in 0..4 {
                self.gicd_write(GICD_CPENDSGIR + 4 * n, u32::MAX);
            }
        }
        self.wait_rwp(0);
        for intid in 0..32 {
            self.set_priority(intid, 0xa0);
        }

        match self.version {
            GicVersion::V3 => {
                let sre = icc_read!("s3_0_c12_c12_5");
                icc_write!("s3_0_c12_c12_5", sre | 1);
                isb();
                icc_write!("s3_0_c4_c6_0", 0xff); // PMR
                icc_write!("s3_0_c12_c12_3", 0); // BPR1
                icc_write!("s3_0_c12_c12_4", 0); // CTLR: EOImode 0
                icc_write!("s3_0_c12_c12_7", 1); // IGRPEN1
                isb();
            }
            GicVersion::V2 => {
                self.gicc_write(GICC_PMR, 0xff);
                self.gicc_write(GICC_BPR, 0);
                self.gicc_write(GICC_ABPR, 0);
                // EnableGrp0 | EnableGrp1 | AckCtl.
                self.gicc_write(GICC_CTLR, 0b111);
            }
        }
        CURRENT.set(Some(*self));
        Ok(())
    }

    /// Acknowledges the highest-priority pending interrupt: the raw IAR value
    /// (v2 SGIs carry the source CPU in bits 12:10). [`Gic::intid`] extracts the
    /// INTID; pass the raw value to [`Gic::eoi`].
    pub fn ack(&self) -> u32 {
        match self.version {
            GicVersion::V3 => {
                let iar = icc_read!("s3_0_c12_c12_0");
                iar as u32
            }
            GicVersion::V2 => self.gicc_read(GICC_IAR),
        }
    }

    /// The INTID in a raw IAR value (v2: bits 9:0; v3: bits 23:0).
    pub fn intid(&self, iar: u32) -> u32 {
        match self.version {
            GicVersion::V2 => iar & 0x3ff,
            GicVersion::V3 => iar & 0xff_ffff,
        }
    }

    /// Signals end of interrupt for a value [`Gic::ack`] returned.
    pub fn eoi(&self, iar: u32) {
        match self.version {
            GicVersion::V3 => {
                icc_write!("s3_0_c12_c12_1", u64::from(iar));
                isb();
            }
            GicVersion::V2 => self.gicc_write(GICC_EOIR, iar),
        }
    }

    /// Sets the priority mask (only interrupts of numerically lower priority
    /// are signalled).
    pub fn set_pmr(&self, pmr: u8) {
        match self.version {
            GicVersion::V3 => {
                icc_write!("s3_0_c4_c6_0", u64::from(pmr));
                isb();
            }
            GicVersion::V2 => self.gicc_write(GICC_PMR, u32::from(pmr)),
        }
    }

    /// The priority mask as read back.
    pub fn pmr(&self) -> u8 {
        match self.version {
            GicVersion::V3 => icc_read!("s3_0_c4_c6_0") as u8,
            GicVersion::V2 => self.gicc_read(GICC_PMR) as u8,
        }
    }

    /// The running priority: that of the highest-priority active interrupt
    /// (0xFF when none is active).
    pub fn running_priority(&self) -> u8 {
        match self.version {
            GicVersion::V3 => icc_read!("s3_0_c12_c11_3") as u8,
            GicVersion::V2 => self.gicc_read(GICC_RPR) as u8,
        }
    }

    /// The binary point as read back (v3 `ICC_BPR1_EL1`, v2 `GICC_ABPR` and
    /// `GICC_BPR`).
    pub fn binary_points(&self) -> (u32, u32) {
        match self.version {
            GicVersion::V3 => (icc_read!("s3_0_c12_c12_3") as u32, 0),
            GicVersion::V2 => (self.gicc_read(GICC_ABPR), self.gicc_read(GICC_BPR)),
        }
    }

    /// Sends SGI `sgi` (0–15) to `target`. [`SgiTarget::SelfByFilter`] on v3
    /// is the same as [`SgiTarget::SelfByList`].
    pub fn send_sgi(&self, sgi: u32, target: SgiTarget) {
        let sgi = sgi & 0xf;
        match self.version {
            GicVersion::V3 => {
                let mpidr = sysreg::mpidr_el1();
                let value = match target {
                    SgiTarget::AllButSelf => (1 << 40) | (u64::from(sgi) << 24),
                    SgiTarget::SelfByList | SgiTarget::SelfByFilter => {
                        let aff0 = mpidr & 0xff;
                        let aff1 = (mpidr >> 8) & 0xff;
                        let aff2 = (mpidr >> 16) & 0xff;
                        let aff3 = (mpidr >> 32) & 0xff;
                        // RS selects the block of 16 Aff0 values.
                        let rs = aff0 >> 4;
                        (aff3 << 48)
                            | (rs << 44)
                            | (aff2 << 32)
                            | (u64::from(sgi) << 24)
                            | (aff1 << 16)
                            | (1 << (aff0 & 0xf))
                    }
                };
                icc_write!("s3_0_c12_c11_5", value); // ICC_SGI1R_EL1
                isb();
            }
            GicVersion::V2 => {
                let value = match target {
                    SgiTarget::SelfByList => (u32::from(self.cpu_mask()) << 16) | sgi,
                    SgiTarget::SelfByFilter => (0b10 << 24) | sgi,
                    SgiTarget::AllButSelf => (0b01 << 24) | sgi,
                };
                // NSATT (bit 15) = 1: the SGI is Group 1 (ignored where the
                // guest is not "secure").
                self.gicd_write(GICD_SGIR, value | (1 << 15));
            }
        }
    }
}

/// Reads the 64-bit `GICR_TYPER` of the redistributor at `rd` as two words.
///
/// # Safety
/// `rd` must be a redistributor frame (`RD_base`).
pub unsafe fn read_typer(rd: usize) -> u64 {
    // SAFETY: per the caller; GICR_TYPER reads have no side effects.
    let (lo, hi) = unsafe {
        (
            mmio::read32(rd + GICR_TYPER),
            mmio::read32(rd + GICR_TYPER + 4),
        )
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// What an interrupt guest learned at start-up.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// The initialized GIC.
    pub gic: Gic,
    /// The device tree's devices, if there was a usable tree.
    pub devices: Option<Devices>,
    /// Number of CPUs in the device tree (0 without one).
    pub cpus: u32,
}

/// Finds the device tree (at `x0`, or QEMU's at the start of RAM), discovers
/// and initializes the GIC, and prints what it found. Fails the test if the
/// GIC cannot be brought up.
pub fn bring_up(dtb: usize) -> Platform {
    let (devices, cpus) = match crate::fdt::locate_devices(dtb) {
        Ok((summary, devices)) => (Some(devices), summary.cpus),
        Err(e) => {
            println!("device tree: none usable at x0 = {dtb:#x} ({e})");
            (None, 0)
        }
    };
    let mut gic = Gic::discover(devices.as_ref());
    if let Err(e) = gic.init() {
        crate::report::fail(format_args!("GIC init: {e}"))
    }
    if gic.is_v3() {
        println!("gic: this CPU's redistributor at {:#x}", gic.gicr);
    }
    Platform { gic, devices, cpus }
}
