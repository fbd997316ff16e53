//! Tests of the device tree reader and writer.

use super::*;
use proptest::prelude::*;

const QEMU_V3: &[u8] = include_bytes!("../../testdata/qemu-virt-gicv3.dtb");
const QEMU_V2: &[u8] = include_bytes!("../../testdata/qemu-virt-gicv2.dtb");
const QEMU_MAX: &[u8] = include_bytes!("../../testdata/qemu-virt-max-initrd.dtb");

/// A small tree exercising most of the writer.
fn sample(buf: &mut [u8]) -> Result<usize, FdtError> {
    let mut w = FdtWriter::new(buf)?;
    w.set_boot_cpuid_phys(1);
    w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "test,board")?;
    w.begin_node("aliases")?;
    w.property_string("serial0", "/soc@fe000000/uart@1000")?;
    w.end_node()?;
    w.begin_node("chosen")?;
    w.property_string("stdout-path", "serial0:115200n8")?;
    w.end_node()?;
    w.begin_node("memory@80000000")?;
    w.property_string("device_type", "memory")?;
    w.property_cells(
        "reg",
        &[0, 0x8000_0000, 0, 0x4000_0000, 0x1, 0, 0, 0x1000_0000],
    )?;
    w.end_node()?;
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for (name, id) in [("cpu@0", 0u32), ("cpu@1", 1)] {
        w.begin_node(name)?;
        w.property_string("device_type", "cpu")?;
        w.property_u32("reg", id)?;
        w.end_node()?;
    }
    w.end_node()?;
    w.begin_node("soc@fe000000")?;
    w.property_strings("compatible", &["simple-bus"])?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 1)?;
    w.property_cells("ranges", &[0, 0, 0xfe00_0000, 0x0100_0000])?;
    w.begin_node("uart@1000")?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    w.property_cells("reg", &[0x1000, 0x100])?;
    w.property_u32("phandle", 7)?;
    w.property_empty("dma-coherent")?;
    w.property_u64("big", 0x1122_3344_5566_7788)?;
    w.end_node()?;
    w.begin_node("psci@0")?;
    w.property_cells("reg", &[0, 4])?;
    w.property_string("status", "disabled")?;
    w.end_node()?;
    w.end_node()?;
    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.end_node()?;
    w.end_node()?;
    w.finish()
}

fn sample_blob() -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let len = sample(&mut buf).expect("fits");
    buf.truncate(len);
    buf
}

#[test]
fn round_trip() {
    let blob = sample_blob();
    let fdt = Fdt::new(&blob).expect("valid");
    assert_eq!(fdt.version(), 17);
    assert_eq!(fdt.last_comp_version(), 16);
    assert_eq!(fdt.boot_cpuid_phys(), 1);
    assert_eq!(fdt.total_size(), blob.len());
    assert_eq!(fdt.reservations().count(), 0);
    let root = fdt.root();
    assert_eq!(root.name(), "");
    assert_eq!(
        root.child_cells(),
        Cells {
            address: 2,
            size: 2
        }
    );
    let names: Vec<_> = root.children().map(|n| n.name()).collect();
    assert_eq!(
        names,
        [
            "aliases",
            "chosen",
            "memory@80000000",
            "cpus",
            "soc@fe000000",
            "psci"
        ]
    );
    let mem = fdt.find_node("/memory@80000000").expect("memory");
    assert_eq!(mem.device_type(), Some("memory"));
    let regs: Vec<_> = mem.reg().expect("reg").collect();
    assert_eq!(
        regs,
        [(0x8000_0000, 0x4000_0000), (0x1_0000_0000, 0x1000_0000)]
    );
    let cpu1 = fdt.find_node("/cpus/cpu@1").expect("cpu1");
    assert_eq!(
        cpu1.parent_cells(),
        Cells {
            address: 1,
            size: 0
        }
    );
    assert_eq!(cpu1.reg().expect("reg").collect::<Vec<_>>(), [(1, 0)]);
    assert_eq!(cpu1.base_name(), "cpu");
    assert_eq!(cpu1.unit_address(), Some("1"));
    let uart = fdt.find_node("/soc/uart@1000").expect("uart");
    assert!(uart.is_compatible("arm,primecell"));
    assert!(!uart.is_compatible("arm,pl01"));
    assert_eq!(
        uart.compatible().expect("compat").collect::<Vec<_>>(),
        ["arm,pl011", "arm,primecell"]
    );
    assert_eq!(uart.phandle(), Some(7));
    assert!(uart.has_property("dma-coherent"));
    assert!(uart.property("dma-coherent").expect("flag").is_empty());
    assert_eq!(
        uart.property("big").and_then(|p| p.as_u64()),
        Some(0x1122_3344_5566_7788)
    );
    assert_eq!(uart.property("big").and_then(|p| p.as_u32()), None);
    assert_eq!(uart.property("reg").map(|p| p.cells().count()), Some(2));
    assert_eq!(fdt.translate(&uart, 0x1000), Some(0xfe00_1000));
    assert_eq!(fdt.translate(&uart, 0x0200_0000), None);
    assert_eq!(fdt.translate(&mem, 0x8000_0000), Some(0x8000_0000));
    assert_eq!(fdt.node_by_phandle(7), Some(uart));
    assert_eq!(fdt.node_by_phandle(8), None);
    assert_eq!(fdt.node_by_phandle(0), None);
    assert_eq!(fdt.parent(&uart).map(|n| n.name()), Some("soc@fe000000"));
    assert_eq!(fdt.parent(&root), None);
}

#[test]
fn paths_aliases_and_stdout() {
    let blob = sample_blob();
    let fdt = Fdt::new(&blob).expect("valid");
    assert_eq!(fdt.find_node("/").map(|n| n.name()), Some(""));
    assert_eq!(fdt.find_node("/cpus/").map(|n| n.name()), Some("cpus"));
    // Unit-address-less lookups: exact name first, then base name.
    assert_eq!(fdt.find_node("/psci").map(|n| n.name()), Some("psci"));
    assert_eq!(fdt.find_node("/soc/psci").map(|n| n.name()), Some("psci@0"));
    assert_eq!(
        fdt.find_node("/soc/uart").map(|n| n.name()),
        Some("uart@1000")
    );
    assert_eq!(fdt.find_node("/soc/uart@2000"), None);
    assert_eq!(fdt.find_node("/memory@8"), None);
    assert_eq!(fdt.find_node("/nope"), None);
    assert_eq!(fdt.find_node(""), None);
    assert_eq!(fdt.alias("serial0"), Some("/soc@fe000000/uart@1000"));
    assert_eq!(
        fdt.find_node("serial0").map(|n| n.name()),
        Some("uart@1000")
    );
    assert_eq!(fdt.find_node("missing"), None);
    let (node, options) = fdt.stdout().expect("stdout");
    assert_eq!(node.name(), "uart@1000");
    assert_eq!(options, Some("115200n8"));
    let disabled = fdt.find_node("/soc/psci@0").expect("node");
    assert!(!disabled.is_enabled());
    assert!(fdt.root().is_enabled());
    let found: Vec<_> = fdt
        .find_compatible(&["arm,psci-0.2", "simple-bus"])
        .map(|n| n.name())
        .collect();
    assert_eq!(found, ["soc@fe000000", "psci"]);
    assert_eq!(fdt.nodes().count(), 11);
}

#[test]
fn props_decode() {
    let p = |value: &'static [u8]| Prop { name: "p", value };
    assert_eq!(p(b"abc\0").as_str(), Some("abc"));
    assert_eq!(p(b"abc").as_str(), None);
    assert_eq!(p(b"a\0b\0").as_str(), None);
    assert_eq!(p(b"").as_str(), None);
    assert_eq!(p(b"\xff\0").as_str(), None);
    assert_eq!(
        p(b"a\0\0b\0").as_strs().expect("list").collect::<Vec<_>>(),
        ["a", "", "b"]
    );
    assert!(p(b"a\0b").as_strs().is_none());
    assert_eq!(p(&[0, 0, 0, 5]).as_cells_u64(), Some(5));
    assert_eq!(
        p(&[0, 0, 0, 1, 0, 0, 0, 5]).as_cells_u64(),
        Some(0x1_0000_0005)
    );
    assert_eq!(p(&[0, 0, 5]).as_cells_u64(), None);
    assert_eq!(p(&[0, 0, 0, 1, 2]).cells().collect::<Vec<_>>(), [1]);
}

#[test]
fn strings_are_deduplicated() {
    let mut buf = [0u8; 512];
    let mut w = FdtWriter::new(&mut buf).expect("room");
    w.begin_node("").expect("ok");
    for name in ["a", "b", "c"] {
        w.begin_node(name).expect("ok");
        w.property_u32("reg", 1).expect("ok");
        w.property_string("compatible", "x").expect("ok");
        w.end_node().expect("ok");
    }
    w.end_node().expect("ok");
    let len = w.finish().expect("ok");
    let fdt = Fdt::new(&buf[..len]).expect("valid");
    assert_eq!(fdt.strings.len(), "reg\0compatible\0".len());
    for node in fdt.root().children() {
        assert_eq!(node.property("reg").and_then(|p| p.as_u32()), Some(1));
        assert!(node.is_compatible("x"));
    }
}

#[test]
fn writer_never_overruns_small_buffers() {
    let need = sample_blob().len();
    for size in 0..need {
        let mut buf = vec![0u8; size];
        assert_eq!(
            sample(&mut buf),
            Err(FdtError::BufferTooSmall),
            "size {size}"
        );
    }
    let mut buf = vec![0u8; need];
    assert_eq!(sample(&mut buf), Ok(need));
    assert_eq!(&buf[..], &sample_blob()[..]);
}

#[test]
fn writer_misuse() {
    let mut buf = [0u8; 256];
    let mut w = FdtWriter::new(&mut buf).expect("room");
    assert_eq!(w.property_u32("x", 1), Err(FdtError::PropertyOutsideNode));
    // Errors are sticky.
    assert_eq!(w.begin_node(""), Err(FdtError::PropertyOutsideNode));

    let mut w = FdtWriter::new(&mut buf).expect("room");
    assert_eq!(w.end_node(), Err(FdtError::Unbalanced));

    let mut w = FdtWriter::new(&mut buf).expect("room");
    assert_eq!(w.begin_node("root"), Err(FdtError::InvalidName));

    for bad in ["", "a/b", "a\0b"] {
        let mut w = FdtWriter::new(&mut buf).expect("room");
        w.begin_node("").expect("ok");
        assert_eq!(w.begin_node(bad), Err(FdtError::InvalidName));
        let mut w = FdtWriter::new(&mut buf).expect("room");
        w.begin_node("").expect("ok");
        assert_eq!(w.property_empty(bad), Err(FdtError::InvalidName));
    }

    let mut w = FdtWriter::new(&mut buf).expect("room");
    w.begin_node("").expect("ok");
    assert_eq!(w.property_string("s", "a\0b"), Err(FdtError::InvalidString));

    let mut w = FdtWriter::new(&mut buf).expect("room");
    w.begin_node("").expect("ok");
    w.begin_node("child").expect("ok");
    w.end_node().expect("ok");
    assert_eq!(w.property_u32("x", 1), Err(FdtError::PropertyAfterSubnode));

    let mut w = FdtWriter::new(&mut buf).expect("room");
    w.begin_node("").expect("ok");
    w.end_node().expect("ok");
    assert_eq!(w.begin_node(""), Err(FdtError::Unbalanced));

    let mut w = FdtWriter::new(&mut buf).expect("room");
    w.begin_node("").expect("ok");
    assert_eq!(w.finish(), Err(FdtError::Unbalanced));

    let w = FdtWriter::new(&mut buf).expect("room");
    assert_eq!(w.finish(), Err(FdtError::NoRoot));

    let mut big = [0u8; 1024];
    let mut w = FdtWriter::new(&mut big).expect("room");
    w.begin_node("").expect("ok");
    let mut result = Ok(());
    for _ in 0..MAX_DEPTH {
        result = w.begin_node("n");
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(FdtError::TooDeep));

    assert_eq!(
        FdtWriter::new(&mut [0u8; 16]).err(),
        Some(FdtError::BufferTooSmall)
    );
}

/// Sets the big-endian header field `index` of `blob`.
fn set_field(blob: &mut [u8], index: usize, value: u32) {
    blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn header_validation() {
    let good = sample_blob();
    let check = |index: usize, value: u32, want: FdtError| {
        let mut blob = good.clone();
        set_field(&mut blob, index, value);
        assert_eq!(
            Fdt::new(&blob).err(),
            Some(want),
            "field {index} = {value:#x}"
        );
    };
    check(0, 0xd00d_feee, FdtError::BadMagic);
    check(1, good.len() as u32 + 1, FdtError::Truncated);
    check(1, 20, FdtError::Truncated);
    check(2, 2, FdtError::BadLayout); // misaligned structure block
    check(2, 0x1000_0000, FdtError::BadLayout);
    check(3, u32::MAX, FdtError::BadLayout);
    check(4, 44, FdtError::BadLayout); // misaligned reservation block
    check(4, (good.len() as u32 - 8) & !7, FdtError::BadReservations);
    check(5, 15, FdtError::UnsupportedVersion);
    check(6, 18, FdtError::UnsupportedVersion);
    check(8, u32::MAX - 4, FdtError::BadLayout);
    check(9, 6, FdtError::BadLayout);
    check(9, 8, FdtError::BadStructure);
    assert_eq!(Fdt::new(&good[..30]).err(), Some(FdtError::Truncated));
    assert_eq!(
        Fdt::new(&good[..good.len() - 1]).err(),
        Some(FdtError::Truncated)
    );
    // A longer buffer is fine: the blob is cut to totalsize.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0xff; 64]);
    assert_eq!(Fdt::new(&longer).expect("valid").total_size(), good.len());
    // Version 16 blobs (no size_dt_struct) are read too.
    let mut v16 = good.clone();
    set_field(&mut v16, 5, 16);
    set_field(&mut v16, 9, 0);
    assert!(Fdt::new(&v16).is_ok());
}

/// Builds a blob with a hand-written structure block (`tokens`, as cells)
/// and strings block.
fn raw_blob(tokens: &[u32], strings: &[u8]) -> Vec<u8> {
    let mut blob = vec![0u8; 56];
    for t in tokens {
        blob.extend_from_slice(&t.to_be_bytes());
    }
    let strings_off = blob.len();
    blob.extend_from_slice(strings);
    let fields = [
        FDT_MAGIC,
        blob.len() as u32,
        56,
        strings_off as u32,
        40,
        17,
        16,
        0,
        strings.len() as u32,
        (strings_off - 56) as u32,
    ];
    for (i, f) in fields.into_iter().enumerate() {
        set_field(&mut blob, i, f);
    }
    blob
}

#[test]
fn structure_validation() {
    const B: u32 = FDT_BEGIN_NODE;
    const E: u32 = FDT_END_NODE;
    const P: u32 = FDT_PROP;
    const N: u32 = FDT_NOP;
    const X: u32 = FDT_END;
    let ok = raw_blob(&[N, B, 0, P, 0, 0, N, E, N, X], b"a\0");
    let fdt = Fdt::new(&ok).expect("valid");
    assert_eq!(fdt.root().property("a").map(|p| p.raw().len()), Some(0));
    let cases: &[(&[u32], FdtError)] = &[
        (&[B, 0, E], FdtError::BadStructure),               // no FDT_END
        (&[B, 0, X], FdtError::BadStructure),               // unclosed
        (&[E, X], FdtError::BadStructure),                  // unbalanced
        (&[X], FdtError::BadStructure),                     // no root
        (&[B, 0, E, B, 0, E, X], FdtError::BadStructure),   // two roots
        (&[P, 0, 0, B, 0, E, X], FdtError::BadStructure),   // prop outside
        (&[B, 0, 7, E, X], FdtError::BadStructure),         // bad token
        (&[B, 0, P, 0, 9, E, X], FdtError::BadName),        // name offset past strings
        (&[B, 0, P, 0, 2, E, X], FdtError::BadName),        // unterminated name
        (&[B, 0, P, 100, 0, E, X], FdtError::BadStructure), // value past block
        (&[B, 0x6869_6a6b], FdtError::BadName),             // unterminated node name
        (&[B, 0xff00_0000, E, X], FdtError::BadName),       // non-UTF-8 node name
        (
            &[B, 0, B, 0x6100_0000, E, P, 0, 0, E, X],
            FdtError::PropertyAfterSubnode,
        ),
    ];
    for (tokens, want) in cases {
        let blob = raw_blob(tokens, b"a\0\xff");
        assert_eq!(Fdt::new(&blob).err(), Some(*want), "{tokens:x?}");
    }
    let mut deep = vec![B, 0];
    for _ in 0..MAX_DEPTH {
        deep.extend_from_slice(&[B, 0x6100_0000]);
    }
    let blob = raw_blob(&deep, b"");
    assert_eq!(Fdt::new(&blob).err(), Some(FdtError::TooDeep));
}

#[test]
fn qemu_blobs_parse() {
    for blob in [QEMU_V3, QEMU_V2, QEMU_MAX] {
        let fdt = Fdt::new(blob).expect("QEMU's DTB is valid");
        assert!(fdt.root().is_compatible("linux,dummy-virt"));
        let uart = fdt.find_node("/pl011@9000000").expect("uart");
        assert_eq!(
            uart.reg().expect("reg").collect::<Vec<_>>(),
            [(0x0900_0000, 0x1000)]
        );
        assert_eq!(fdt.stdout().map(|(n, _)| n), Some(uart));
        let gic = fdt
            .node_by_phandle(
                fdt.root()
                    .property("interrupt-parent")
                    .and_then(|p| p.as_u32())
                    .expect("ip"),
            )
            .expect("gic");
        assert!(gic.has_property("interrupt-controller"));
        assert_eq!(
            fdt.find_node("/cpus/cpu@1")
                .and_then(|n| n.reg())
                .map(|r| r.count()),
            Some(1)
        );
        assert_eq!(fdt.find_compatible(&["arm,psci-0.2"]).count(), 1);
        // Every node can be reached by the all-nodes walk and has a parent.
        for node in fdt.nodes().skip(1) {
            assert!(fdt.parent(&node).is_some(), "{}", node.name());
        }
    }
}

/// Runs every read API over `fdt`; must never panic.
fn exercise(fdt: &Fdt<'_>) {
    for node in fdt.nodes().take(500) {
        let _ = node.name();
        for p in node.properties() {
            let _ = (p.as_u32(), p.as_u64(), p.as_str(), p.as_cells_u64());
            if let Some(list) = p.as_strs() {
                let _ = list.count();
            }
            let _ = p.cells().count();
        }
        if let Some(reg) = node.reg() {
            for (addr, _) in reg.take(8) {
                let _ = fdt.translate(&node, addr);
            }
        }
        let _ = node.children().count();
        let _ = (node.phandle(), node.is_enabled(), node.child("x"));
    }
    let _ = fdt.find_node("/cpus/cpu@0");
    let _ = fdt.find_node("serial0/x");
    let _ = fdt.stdout();
    let _ = fdt.node_by_phandle(1);
    let _ = fdt.reservations().take(100).count();
    let _ = fdt.find_compatible(&["arm,gic-v3"]).count();
}

#[test]
fn qemu_blobs_exercise() {
    for blob in [QEMU_V3, QEMU_V2, QEMU_MAX] {
        exercise(&Fdt::new(blob).expect("valid"));
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(fdt) = Fdt::new(&bytes) {
            exercise(&fdt);
        }
    }

    #[test]
    fn mutated_blobs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        which in 0usize..2,
    ) {
        let mut blob = if which == 0 { sample_blob() } else { QEMU_V3.to_vec() };
        for (at, byte) in edits {
            let len = blob.len();
            blob[at % len] = byte;
        }
        let len = blob.len();
        blob.truncate(len - cut % 64);
        if let Ok(fdt) = Fdt::new(&blob) {
            exercise(&fdt);
        }
    }

    #[test]
    fn mutated_header_never_panics(field in 0usize..10, value in any::<u32>()) {
        let mut blob = sample_blob();
        set_field(&mut blob, field, value);
        if let Ok(fdt) = Fdt::new(&blob) {
            exercise(&fdt);
        }
    }
}

/// Decompiles `blob` with `dtc`; returns the source. Panics (failing the
/// test) if `dtc` fails or warns.
pub(crate) fn dtc_decompile(blob: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc is installed (cargo xtask installs it)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(blob)
        .expect("write to dtc");
    let out = child.wait_with_output().expect("dtc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dtc failed: {stderr}");
    assert!(stderr.trim().is_empty(), "dtc warned: {stderr}");
    String::from_utf8(out.stdout).expect("dts is UTF-8")
}

#[test]
fn dtc_accepts_written_blob() {
    let dts = dtc_decompile(&sample_blob());
    for needle in [
        "compatible = \"test,board\";",
        "memory@80000000 {",
        "cpu@1 {",
        "uart@1000 {",
        "compatible = \"arm,pl011\\0arm,primecell\";",
        "dma-coherent;",
        "stdout-path = \"serial0:115200n8\";",
        "big = <0x11223344 0x55667788>;",
    ] {
        assert!(dts.contains(needle), "missing {needle:?} in\n{dts}");
    }
}

/// Found by the `fdt` fuzz target: a node whose `linux,phandle` was 0
/// reported it as its phandle, though no lookup finds a node by 0 (nor by
/// `0xffffffff`): the reserved values are no phandle at all.
#[test]
fn reserved_phandle_values_are_no_phandle() {
    for (name, value) in [
        ("phandle", 0),
        ("linux,phandle", 0),
        ("phandle", u32::MAX),
        ("phandle", 5),
    ] {
        let mut buf = vec![0u8; 512];
        let mut w = FdtWriter::new(&mut buf).expect("room");
        w.begin_node("").expect("root");
        w.begin_node("gic").expect("node");
        w.property_u32(name, value).expect("property");
        w.end_node().expect("end");
        w.end_node().expect("end");
        let len = w.finish().expect("finish");
        let fdt = Fdt::new(&buf[..len]).expect("valid");
        let gic = fdt.find_node("/gic").expect("gic");
        let valid = value != 0 && value != u32::MAX;
        assert_eq!(gic.phandle(), valid.then_some(value), "{name} = {value:#x}");
        assert_eq!(fdt.node_by_phandle(value).is_some(), valid);
    }
}
