//! The flattened device-tree reader (`stratum_core::fdt`) and what reads
//! trees with it: the host platform description
//! (`stratum_core::platform::Platform::from_fdt`) and the guest DT
//! fragment check (`stratum_core::guest_dt::check_fragment`).
//!
//! Checked: `Fdt::new` never panics and a tree it accepts answers every
//! query without panicking (nodes, properties in every typed view, `reg`,
//! parents, ancestors, address translation, aliases, `stdout-path`,
//! phandles); each node's path (from its ancestors) finds a node of that
//! name, and each phandle finds a node carrying it; and writing the tree
//! back with `FdtWriter` (node by node, property by property) gives a tree
//! that reads back the same; and EL2's map of an accepted platform
//! (`el2map::plan`) is Normal exactly where its RAM is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_core::fdt::{Fdt, FdtWriter, Node};
use stratum_core::guest_dt;
use stratum_core::platform::Platform;

/// EL2's map of an accepted platform (`el2map::plan`, the image at the
/// first bank's first 2 MiB): when it lays one out, every 2 MiB block of
/// the first 256 GiB maps to itself, as Normal memory exactly when a bank
/// covers it whole and no `no-map` reservation touches it, else as Device
/// and execute-never.
fn el2_map(platform: &Platform<'_>) {
    use stratum_core::el2map::{self, L2_TABLES, TABLE_ENTRIES};
    const GIB: u64 = 1 << 30;
    const BLOCK: u64 = 2 << 20;
    let Some(first) = platform.memory().first() else {
        return;
    };
    let image = first.base.0.next_multiple_of(BLOCK);
    let mut l1 = Box::new([0u64; TABLE_ENTRIES]);
    let mut l2 = Box::new([[0u64; TABLE_ENTRIES]; L2_TABLES]);
    let l2_base = 0x4000_0000;
    let laid = el2map::plan(
        platform.memory(),
        platform.reserved(),
        image..image.saturating_add(1),
        &mut l1,
        &mut l2,
        l2_base,
    );
    if laid.is_err() {
        return;
    }
    let ram = |at: u64| {
        let end = at + BLOCK;
        platform
            .memory()
            .iter()
            .any(|r| r.base.0 <= at && end <= r.base.0.saturating_add(r.size))
            && !platform.reserved().iter().any(|r| {
                r.no_map
                    && r.region.base.0 < end
                    && at < r.region.base.0.saturating_add(r.region.size)
            })
    };
    // Every block of a gigabyte split into 2 MiB blocks; of a gigabyte
    // mapped whole, its first and last blocks and those where a bank or a
    // reservation starts or ends (where a wrong answer would be).
    let edges: Vec<u64> = platform
        .memory()
        .iter()
        .map(|r| (r.base.0, r.size))
        .chain(
            platform
                .reserved()
                .iter()
                .map(|r| (r.region.base.0, r.region.size)),
        )
        .flat_map(|(base, size)| [base, base.saturating_add(size).saturating_sub(1)])
        .map(|a| a & !(BLOCK - 1))
        .collect();
    let mut probes: Vec<u64> = Vec::new();
    for g in 0..el2map::L1_ENTRIES as u64 {
        let (start, end) = (g * GIB, (g + 1) * GIB);
        if l1[g as usize] & 0b11 == 0b11 {
            probes.extend((start..end).step_by(BLOCK as usize));
        } else {
            probes.extend([start, end - BLOCK]);
            probes.extend(edges.iter().copied().filter(|&e| (start..end).contains(&e)));
        }
    }
    for at in probes {
        let top = l1[(at / GIB) as usize];
        let desc = if top & 0b11 == 0b11 {
            let table = ((top & !0xfff) - l2_base) / 4096;
            l2[table as usize][((at % GIB) / BLOCK) as usize]
        } else {
            top
        };
        let size = if top & 0b11 == 0b11 { BLOCK } else { GIB };
        assert_eq!(
            desc & ((1 << 48) - 1) & !(size - 1),
            at & !(size - 1),
            "identity at {at:#x}"
        );
        let normal = desc & 0xfff == el2map::NORMAL & 0xfff;
        assert_eq!(normal, ram(at), "Normal exactly where RAM is, at {at:#x}");
        assert_eq!(
            desc & (1 << 54) == 0,
            normal,
            "only RAM executable, at {at:#x}"
        );
    }
}

/// One node as the reader saw it: depth, name, properties.
type Flat = Vec<(usize, String, Vec<(String, Vec<u8>)>)>;

fn flatten<'a>(node: Node<'a>, depth: usize, out: &mut Flat) {
    let props = node
        .properties()
        .map(|p| (p.name().to_owned(), p.raw().to_vec()))
        .collect();
    out.push((depth, node.name().to_owned(), props));
    for child in node.children() {
        flatten(child, depth + 1, out);
    }
}

fn write(node: Node<'_>, w: &mut FdtWriter<'_>) -> Result<(), stratum_core::fdt::FdtError> {
    w.begin_node(node.name())?;
    for p in node.properties() {
        w.property(p.name(), p.raw())?;
    }
    for child in node.children() {
        write(child, w)?;
    }
    w.end_node()
}

fn query(fdt: &Fdt<'_>) {
    let _ = (
        fdt.total_size(),
        fdt.version(),
        fdt.last_comp_version(),
        fdt.boot_cpuid_phys(),
    );
    for r in fdt.reservations().take(64) {
        let _ = r;
    }
    let _ = fdt.alias("serial0");
    let _ = fdt.stdout();
    let _ = fdt
        .find_compatible(&["arm,pl011", "arm,gic-v3", "arm,cortex-a15-gic"])
        .count();
    for node in fdt.nodes().take(512) {
        let _ = (node.base_name(), node.unit_address(), node.device_type());
        let _ = (node.is_enabled(), node.child_cells(), node.parent_cells());
        for p in node.properties() {
            let _ = (
                p.is_empty(),
                p.as_u32(),
                p.as_u64(),
                p.as_cells_u64(),
                p.as_str(),
            );
            if let Some(strs) = p.as_strs() {
                let _ = strs.count();
            }
            let _ = p.cells().count();
        }
        if let Some(reg) = node.reg() {
            for (addr, _size) in reg.take(64) {
                let _ = fdt.translate(&node, addr);
            }
        }
        if let Some(list) = node.compatible() {
            let _ = list.count();
        }
        let _ = fdt.parent(&node);
        // The node's path finds a node of its name (for a tree with a
        // nameless root and named nodes whose names are unique among their
        // siblings, as the spec has it: with two siblings of one name a
        // path names the first, as in Linux).
        if let Some(ancestors) = fdt.ancestors(&node) {
            let chain: Vec<Node<'_>> = ancestors.chain([node]).collect();
            let names: Vec<&str> = chain[..chain.len() - 1].iter().map(|a| a.name()).collect();
            let named = |n: &&str| !n.is_empty() && !n.contains('/');
            let unique = chain.windows(2).all(|pair| {
                let name = pair[1].name();
                pair[0].children().filter(|c| c.name() == name).count() == 1
            });
            if let Some((root, inner)) = names.split_first()
                && root.is_empty()
                && inner.iter().all(named)
                && named(&node.name())
                && unique
            {
                let mut path = String::new();
                for n in inner.iter().chain([&node.name()]) {
                    path.push('/');
                    path.push_str(n);
                }
                assert!(fdt.find_node(&path).is_some(), "{path} finds nothing");
            }
        }
        if let Some(ph) = node.phandle() {
            let found = fdt.node_by_phandle(ph).expect("a phandle finds its node");
            assert_eq!(found.phandle(), Some(ph));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = guest_dt::check_fragment(data, ["pl031", "rtc"]);
    let fdt = match Fdt::new(data) {
        Ok(fdt) => fdt,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    query(&fdt);
    if let Ok(platform) = Platform::from_fdt(&fdt) {
        let _ = (platform.memory().len(), platform.cpus().len());
        el2_map(&platform);
    }

    // Write the tree back and read it again.
    let mut before = Flat::new();
    flatten(fdt.root(), 0, &mut before);
    let mut buf = vec![0u8; data.len() * 2 + 4096];
    let mut w = match FdtWriter::new(&mut buf) {
        Ok(w) => w,
        Err(_) => return,
    };
    w.set_boot_cpuid_phys(fdt.boot_cpuid_phys());
    if write(fdt.root(), &mut w).is_err() {
        // The writer refuses what the reader tolerates (a name with a
        // character the spec forbids, say): nothing to compare.
        return;
    }
    let len = w.finish().expect("a balanced tree finishes");
    let again = Fdt::new(&buf[..len]).expect("the writer's tree reads back");
    let mut after = Flat::new();
    flatten(again.root(), 0, &mut after);
    assert_eq!(before, after, "the tree changed through the writer");
    assert_eq!(again.boot_cpuid_phys(), fdt.boot_cpuid_phys());
});
