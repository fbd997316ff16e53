//! `gichammer`: robustness of the (virtual) GIC against garbage. A xorshift
//! PRNG with a fixed, printed seed makes 2000 writes of random widths (8, 16,
//! 32, 64 bits, naturally aligned) and random values to random offsets of the
//! distributor (0..0x10000 on v3, its architected 4 KiB on v2) and, on v3, this CPU's redistributor
//! (0..0x20000), with IRQs masked. Only the `CTLR` enable bits are spared
//! (the guest keeps the distributor on and never enables LPIs). Every access
//! runs with the abort handler armed: an architecturally illegal width may
//! be RAZ/WI or abort; 32-bit accesses, byte accesses to the byte-accessible
//! registers and v3 64-bit `IROUTER` accesses must not abort. Afterwards the
//! GIC is re-initialized and must work: a set-enable bit reads back, an SGI
//! and an SPI still arrive.
#![no_std]
#![no_main]

use stratum_guests::gic::{GICD_CTLR, GICR_CTLR, GICR_SGI_FRAME, Gic, SgiTarget};
use stratum_guests::global::GlobalArray;
use stratum_guests::rng::XorShift;
use stratum_guests::{Checks, exception, gic, irq, mmio, println, timer};

stratum_guests::entry!("gichammer", main);

/// Fixed seed, so a failing run can be repeated exactly.
const SEED: u64 = 0x5eed_0f61_c4a1_1d2b;
/// Random writes.
const WRITES: u32 = 2000;
const SGI: u32 = 3;
const SPI: u32 = 40;

/// Deliveries per INTID after re-initialization.
static COUNT: GlobalArray<u32, 64> = GlobalArray::new(0);
static STRAY: GlobalArray<u32, 1> = GlobalArray::new(0);

fn handler(intid: u32) {
    if intid < 64 {
        COUNT.set(intid as usize, COUNT.get(intid as usize) + 1);
    } else {
        STRAY.set(0, STRAY.get(0) + 1);
    }
}

/// Whether an access of `width` bytes at frame offset `off` is one the
/// architecture requires to work (so it must not abort).
fn legal(g: &Gic, redist: bool, off: usize, width: usize) -> bool {
    match (width, redist, g.is_v3()) {
        (4, _, _) => true,
        // IPRIORITYR (distributor, or the redistributor's SGI frame).
        (1, false, _) if (0x400..0x800).contains(&off) => true,
        (1, true, _) if (GICR_SGI_FRAME + 0x400..GICR_SGI_FRAME + 0x420).contains(&off) => true,
        // v2 ITARGETSR, CPENDSGIR/SPENDSGIR.
        (1, false, false) if (0x800..0xc00).contains(&off) || (0xf10..0xf30).contains(&off) => true,
        // v3 IROUTER<n> for SPIs.
        (8, false, true) => (0x6100..0x7fe0).contains(&off),
        _ => false,
    }
}

/// Per-width tallies: writes, aborts, aborts on legal accesses.
#[derive(Default, Clone, Copy)]
struct Tally {
    writes: u32,
    aborts: u32,
    legal_aborts: u32,
}

fn hammer(g: &Gic, rng: &mut XorShift) -> ([Tally; 4], u32) {
    let mut tally = [Tally::default(); 4];
    let mut spared = 0;
    for _ in 0..WRITES {
        let r = rng.next_u64();
        let mut value = rng.next_u64();
        let redist = g.is_v3() && r & 1 != 0;
        let (base, size) = if redist {
            (g.gicr, 2 * GICR_SGI_FRAME)
        } else if g.is_v3() {
            (g.gicd, 0x1_0000)
        } else {
            // A GICv2 distributor is 4 KiB (the DT's window may be larger).
            (g.gicd, 0x1000)
        };
        let kind = ((r >> 1) & 3) as usize;
        let width = 1usize << kind;
        let off = ((r >> 8) as usize % size) & !(width - 1);
        // Spare the CTLR enable bits: narrow writes into CTLR are skipped,
        // wider ones keep its low byte(s) as they are.
        if off < 4 {
            if width < 4 {
                spared += 1;
                continue;
            }
            let ctlr = if redist {
                g.gicr_read(GICR_CTLR)
            } else {
                g.gicd_read(GICD_CTLR)
            };
            let keep: u64 = if redist { 0x1 } else { 0x1ff };
            value = (value & !keep) | (u64::from(ctlr) & keep);
        }
        let addr = base + off;
        let aborted = exception::expect_abort(|| {
            // SAFETY: `addr` is inside a GIC frame, naturally aligned; the
            // abort handler is armed; the writes cannot enable LPIs or turn
            // off the distributor (see above), and IRQs are masked.
            unsafe {
                match width {
                    1 => mmio::write8(addr, value as u8),
                    2 => mmio::write16(addr, value as u16),
                    4 => mmio::write32(addr, value as u32),
                    _ => mmio::write64(addr, value),
                }
            }
        })
        .is_some();
        let t = &mut tally[kind];
        t.writes += 1;
        if aborted {
            t.aborts += 1;
            if legal(g, redist, off, width) {
                t.legal_aborts += 1;
                if t.legal_aborts <= 10 {
                    println!(
                        "legal {}-bit write to {}+{off:#x} aborted",
                        8 * width,
                        if redist { "GICR" } else { "GICD" }
                    );
                }
            }
        }
    }
    (tally, spared)
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let mut g = platform.gic;
    println!("seed {SEED:#018x}, {WRITES} writes");
    let mut rng = XorShift::new(SEED);
    let (tally, spared) = hammer(&g, &mut rng);
    for (kind, t) in tally.iter().enumerate() {
        println!(
            "{:2}-bit: {} writes, {} aborted",
            8 << kind,
            t.writes,
            t.aborts
        );
    }
    println!("{spared} narrow writes into CTLR skipped");
    println!("still running after the hammer");
    let legal_aborts: u32 = tally.iter().map(|t| t.legal_aborts).sum();
    c.check_count("legal writes that aborted", u64::from(legal_aborts), 0);

    if let Err(e) = g.init() {
        c.check(format_args!("re-initialization: {e}"), false);
        c.finish()
    }
    c.check("re-initialization", true);
    irq::set_handler(Some(handler));
    g.set_priority(SPI, 0x80);
    g.set_edge(SPI, true);
    g.route_to_self(SPI);
    g.enable(SPI);
    g.enable(SGI);
    c.check("set-enable bit reads back (SPI 40)", g.is_enabled(SPI));
    c.check("set-enable bit reads back (SGI 3)", g.is_enabled(SGI));
    g.send_sgi(SGI, SgiTarget::SelfByList);
    irq::spin_until(timer::deadline_us(200_000), || COUNT.get(SGI as usize) > 0);
    g.set_pending(SPI);
    irq::spin_until(timer::deadline_us(200_000), || COUNT.get(SPI as usize) > 0);
    irq::spin_until(timer::deadline_us(20_000), || false);
    c.check_count("SGI 3 deliveries", u64::from(COUNT.get(SGI as usize)), 1);
    c.check_count("SPI 40 deliveries", u64::from(COUNT.get(SPI as usize)), 1);
    let others: u32 = (0..64)
        .filter(|&i| i != SGI as usize && i != SPI as usize)
        .map(|i| COUNT.get(i))
        .sum::<u32>()
        + STRAY.get(0);
    c.check_count("other interrupts", u64::from(others), 0);
    irq::set_handler(None);
    c.finish()
}
