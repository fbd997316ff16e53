//! `gicregs`: distributor (and v3 redistributor) registers read back as the
//! architecture says after writes: `GICD_CTLR`; `GICD_TYPER` (ITLinesNumber,
//! CPUNumber, v3 IDbits); `GICD_IIDR` read-only; `PIDR2.ArchRev` matching the
//! DT's GIC version; `IGROUPR`; `ISENABLER`/`ICENABLER` write-1-to-set/clear;
//! `IPRIORITYR` by word and by byte (the implemented priority bits are
//! printed as a mask and must include 0xF0); `ICFGR` for SPIs (SGIs read-only
//! edge); v3 64-bit `IROUTER`; v2 `ITARGETSR` by byte; v3 `GICR_TYPER`
//! (`Last`, affinity) and the `GICR_WAKER` handshake; reserved offsets read
//! as zero. IRQs stay masked throughout.
#![no_std]
#![no_main]

use stratum_guests::gic::{
    GIC_PIDR2_V3, GICD_CTLR, GICD_CTLR_ARE, GICD_CTLR_GRP0, GICD_CTLR_GRP1, GICD_ICENABLER,
    GICD_ICFGR, GICD_IGROUPR, GICD_IIDR, GICD_IPRIORITYR, GICD_IROUTER, GICD_ISENABLER,
    GICD_ITARGETSR, GICD_PIDR2_V2, GICD_TYPER, GICR_TYPER_LAST, Gic,
};
use stratum_guests::{Checks, gic, mmio, println, sysreg};

stratum_guests::entry!("gicregs", main);

fn read(addr: usize) -> u32 {
    // SAFETY: callers pass GIC register addresses; reads have no side effects
    // (none of these is an acknowledge register).
    unsafe { mmio::read32(addr) }
}

fn write(addr: usize, value: u32) {
    // SAFETY: callers pass GIC registers of interrupts this test owns.
    unsafe { mmio::write32(addr, value) }
}

fn read8(addr: usize) -> u8 {
    // SAFETY: a byte-accessible GIC register (IPRIORITYR / ITARGETSR).
    unsafe { mmio::read8(addr) }
}

fn write8(addr: usize, value: u8) {
    // SAFETY: a byte-accessible GIC register of an interrupt this test owns.
    unsafe { mmio::write8(addr, value) }
}

fn ctlr_typer_iidr_pidr(c: &mut Checks, g: &Gic, dt_cpus: u32) {
    let ctlr = g.gicd_read(GICD_CTLR);
    println!("GICD_CTLR: {ctlr:#010x}");
    let want = if g.is_v3() {
        GICD_CTLR_ARE | GICD_CTLR_GRP1
    } else {
        GICD_CTLR_GRP1 | GICD_CTLR_GRP0
    };
    c.check_eq(
        "GICD_CTLR enables as written",
        u64::from(ctlr & want),
        u64::from(want),
    );

    let typer = g.gicd_read(GICD_TYPER);
    let it_lines = typer & 0x1f;
    let cpu_number = (typer >> 5) & 7;
    println!(
        "GICD_TYPER: {typer:#010x}: ITLinesNumber {it_lines} ({} INTIDs), CPUNumber {cpu_number}",
        32 * (it_lines + 1)
    );
    c.check(
        "GICD_TYPER.ITLinesNumber covers the UART's SPI 33",
        it_lines >= 1,
    );
    if g.is_v3() {
        let id_bits = (typer >> 19) & 0x1f;
        let lpis = (typer >> 17) & 1;
        println!("GICD_TYPER.IDbits {id_bits}, LPIS {lpis}");
        // At least 10 INTID bits (SPIs up to 1019); with LPIs at least 14
        // (IHI 0069 GICD_TYPER.IDbits). A GIC without LPIs may report 9,
        // as KVM and Stratum do, or more, as QEMU's emulated GIC does.
        let floor = if lpis == 1 { 13 } else { 9 };
        c.check(
            format_args!("GICD_TYPER.IDbits >= {floor} (LPIS {lpis})"),
            id_bits >= floor,
        );
    } else if dt_cpus > 0 {
        c.check_count(
            "GICD_TYPER.CPUNumber + 1 = CPUs in the DT",
            u64::from(cpu_number + 1),
            u64::from(dt_cpus),
        );
    }

    let iidr = g.gicd_read(GICD_IIDR);
    println!("GICD_IIDR: {iidr:#010x}");
    g.gicd_write(GICD_IIDR, !iidr);
    c.check_eq(
        "GICD_IIDR is read-only",
        u64::from(g.gicd_read(GICD_IIDR)),
        u64::from(iidr),
    );

    let pidr2_off = if g.is_v3() {
        GIC_PIDR2_V3
    } else {
        GICD_PIDR2_V2
    };
    let pidr2 = g.gicd_read(pidr2_off);
    println!("GICD_PIDR2: {pidr2:#010x}");
    c.check_count(
        "GICD_PIDR2.ArchRev matches the GIC version",
        u64::from((pidr2 >> 4) & 0xf),
        u64::from(g.version_number()),
    );
    if g.is_v3() {
        let pidr2 = g.gicr_read(GIC_PIDR2_V3);
        c.check_count("GICR_PIDR2.ArchRev", u64::from((pidr2 >> 4) & 0xf), 3);
    }
}

fn groups_and_enables(c: &mut Checks, g: &Gic) {
    let banked = g.frame_for(0);
    c.check_eq(
        "IGROUPR0 (SGIs/PPIs) all Group 1",
        u64::from(read(banked + GICD_IGROUPR)),
        0xffff_ffff,
    );
    c.check_eq(
        "GICD_IGROUPR1 (SPIs 32-63) all Group 1",
        u64::from(g.gicd_read(GICD_IGROUPR + 4)),
        0xffff_ffff,
    );
    g.gicd_write(GICD_IGROUPR + 4, 0x0000_ffff);
    println!(
        "GICD_IGROUPR1 after writing 0x0000ffff: {:#010x}",
        g.gicd_read(GICD_IGROUPR + 4)
    );
    g.gicd_write(GICD_IGROUPR + 4, 0xffff_ffff);

    // SPIs 45-47 in GICD_I[SC]ENABLER1; PPI 20 in the banked word 0.
    let spis = (0b111 << 13, GICD_ISENABLER + 4, GICD_ICENABLER + 4, g.gicd);
    let ppi = (1 << 20, GICD_ISENABLER, GICD_ICENABLER, banked);
    for (name, (bits, set, clear, base)) in [("SPIs 45-47", spis), ("PPI 20", ppi)] {
        let bits: u32 = bits;
        write(base + clear, bits);
        c.check_eq(
            format_args!("{name}: ICENABLER clears"),
            u64::from(read(base + set) & bits),
            0,
        );
        write(base + set, bits);
        c.check_eq(
            format_args!("{name}: ISENABLER sets (ISENABLER view)"),
            u64::from(read(base + set) & bits),
            u64::from(bits),
        );
        c.check_eq(
            format_args!("{name}: ISENABLER sets (ICENABLER view)"),
            u64::from(read(base + clear) & bits),
            u64::from(bits),
        );
        if bits.count_ones() > 1 {
            let low = bits & bits.wrapping_neg();
            write(base + clear, low);
            c.check_eq(
                format_args!("{name}: ICENABLER clears only the bits written"),
                u64::from(read(base + set) & bits),
                u64::from(bits & !low),
            );
            write(base + set, 0);
            c.check_eq(
                format_args!("{name}: writing 0 to ISENABLER changes nothing"),
                u64::from(read(base + set) & bits),
                u64::from(bits & !low),
            );
        }
        write(base + clear, bits);
    }
}

fn priorities(c: &mut Checks, g: &Gic) {
    let pri = g.gicd + GICD_IPRIORITYR;
    write8(pri + 44, 0xff);
    let mask = read8(pri + 44);
    println!("implemented priority bits: mask {mask:#04x}");
    c.check("priority mask includes 0xf0", mask & 0xf0 == 0xf0);
    let m = u32::from(mask) * 0x0101_0101;
    write(pri + 40, 0x4030_2010);
    c.check_eq(
        "IPRIORITYR word write (SPIs 40-43)",
        u64::from(read(pri + 40)),
        u64::from(0x4030_2010 & m),
    );
    write8(pri + 41, 0xa5);
    c.check_eq(
        "IPRIORITYR byte write changes only its byte",
        u64::from(read(pri + 40)),
        u64::from(0x4030_a510 & m),
    );
    c.check_eq(
        "IPRIORITYR byte read",
        u64::from(read8(pri + 41)),
        u64::from(0xa5 & mask),
    );
    let banked = g.frame_for(0) + GICD_IPRIORITYR;
    write8(banked + 5, 0x90);
    c.check_eq(
        "SGI 5 priority byte write, word read",
        u64::from((read(banked + 4) >> 8) & 0xff),
        u64::from(0x90 & mask),
    );
    for intid in [5, 40, 41, 42, 43, 44] {
        g.set_priority(intid, 0xa0);
    }
}

fn configs(c: &mut Checks, g: &Gic) {
    let sgi_cfg = read(g.frame_for(0) + GICD_ICFGR);
    c.check_eq(
        "ICFGR0: SGIs edge, read-only",
        u64::from(sgi_cfg),
        0xaaaa_aaaa,
    );
    // ICFGR2: INTIDs 32-47. Keep 32-39 (the UART) level, 40-47 edge.
    let cfg = g.gicd + GICD_ICFGR + 8;
    let saved = read(cfg);
    write(cfg, 0xaaaa_0000);
    c.check_eq("ICFGR2: SPIs 40-47 edge", u64::from(read(cfg)), 0xaaaa_0000);
    write(cfg, 0);
    c.check_eq("ICFGR2: SPIs 40-47 level", u64::from(read(cfg)), 0);
    write(cfg, saved);
}

fn routing(c: &mut Checks, g: &Gic) {
    if g.is_v3() {
        let addr = g.gicd + GICD_IROUTER + 8 * 46;
        let own = sysreg::mpidr_affinity();
        let other = 0x0002_0301; // Aff2 2, Aff1 3, Aff0 1: no such PE, still stored
        for (what, value) in [("other affinity", other), ("own affinity", own)] {
            // SAFETY: IROUTER46 is a 64-bit, 64-bit-accessible register of an
            // SPI this test owns (disabled).
            let got = unsafe {
                mmio::write64(addr, value);
                mmio::read64(addr)
            };
            c.check_eq(format_args!("IROUTER 64-bit readback ({what})"), got, value);
            let halves = (u64::from(read(addr + 4)) << 32) | u64::from(read(addr));
            c.check_eq(
                format_args!("IROUTER 32-bit halves ({what})"),
                halves,
                value,
            );
        }
    } else {
        let target = g.gicd + GICD_ITARGETSR;
        let own = read8(target);
        println!(
            "ITARGETSR0 (own CPU): {own:#04x}{}",
            if g.uniprocessor() {
                " (uniprocessor: RAZ/WI)"
            } else {
                ""
            }
        );
        write8(target, 0xff);
        c.check_eq(
            "ITARGETSR0 is read-only",
            u64::from(read8(target)),
            u64::from(own),
        );
        let want = if g.uniprocessor() { 0 } else { g.cpu_mask() };
        write8(target + 46, g.cpu_mask());
        c.check_eq(
            "ITARGETSR byte readback (SPI 46)",
            u64::from(read8(target + 46)),
            u64::from(want),
        );
        write8(target + 46, 0xff);
        c.check_eq(
            "ITARGETSR keeps only existing CPUs (SPI 46)",
            u64::from(read8(target + 46)),
            u64::from(if g.uniprocessor() { 0 } else { own }),
        );
        g.route_to_self(46);
    }
}

fn redistributor(c: &mut Checks, g: &Gic, dt_cpus: u32) {
    // SAFETY: `gicr` is this CPU's redistributor.
    let typer = unsafe { gic::read_typer(g.gicr) };
    let mpidr = sysreg::mpidr_el1();
    let aff = ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff);
    println!(
        "GICR_TYPER: {typer:#018x}: Processor_Number {}, Last {}",
        (typer >> 8) & 0xffff,
        (typer & GICR_TYPER_LAST != 0) as u8
    );
    c.check_eq("GICR_TYPER.Affinity = MPIDR affinity", typer >> 32, aff);
    if dt_cpus == 1 {
        c.check("GICR_TYPER.Last (only CPU)", typer & GICR_TYPER_LAST != 0);
    }
    c.check(
        "GICR_WAKER: ProcessorSleep=1 -> ChildrenAsleep=1",
        g.set_sleep(true),
    );
    c.check(
        "GICR_WAKER: ProcessorSleep=0 -> ChildrenAsleep=0",
        g.set_sleep(false),
    );
}

fn reserved(c: &mut Checks, g: &Gic) {
    let mut nonzero = 0;
    for off in [0x14, 0x18, 0x1c, 0x60, 0x70, 0x7c, 0xf30, 0xf40, 0xf7c] {
        let v = g.gicd_read(off);
        if v != 0 {
            nonzero += 1;
            println!("reserved GICD+{off:#x} reads {v:#x}");
        }
    }
    if g.is_v3() {
        for off in [0x50, 0x58, 0x60] {
            let v = g.gicr_read(off);
            if v != 0 {
                nonzero += 1;
                println!("reserved GICR+{off:#x} reads {v:#x}");
            }
        }
    }
    c.check_count("reserved offsets reading non-zero", nonzero, 0);
}

fn main(dtb: usize) -> ! {
    let mut c = Checks::new();
    let platform = gic::bring_up(dtb);
    let g = platform.gic;
    ctlr_typer_iidr_pidr(&mut c, &g, platform.cpus);
    groups_and_enables(&mut c, &g);
    priorities(&mut c, &g);
    configs(&mut c, &g);
    routing(&mut c, &g);
    if g.is_v3() {
        redistributor(&mut c, &g, platform.cpus);
    }
    reserved(&mut c, &g);
    c.finish()
}
