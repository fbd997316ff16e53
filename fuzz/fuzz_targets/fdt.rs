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
//! that reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_core::fdt::{Fdt, FdtWriter, Node};
use stratum_core::guest_dt;
use stratum_core::platform::Platform;

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
