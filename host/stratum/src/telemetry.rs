//! Reading the hypervisor's telemetry block (`stratum_abi::telemetry`) out
//! of a running machine, decoding it, and `stratum stats`.
//!
//! The reader is generic over [`PhysMem`] (QMP's `pmemsave` in real use, a
//! byte array in the tests): it checks the `Image` header at the fixed load
//! address, follows its pointer to the block, validates the header (magic,
//! version, sizes, the number of counters) and decodes every VM slot in use.

use std::fmt::Write as _;
use std::path::Path;

use stratum_abi::bytes::{le_u32, le_u64};
use stratum_abi::telemetry::{self as layout, Reason, VmState};
use stratum_core::stats::render_table;

use crate::qmp::Qmp;
use crate::{Error, ErrorKind, Result};

/// Guest-physical memory of the machine the hypervisor runs on.
pub trait PhysMem {
    /// `len` bytes at physical address `addr`.
    fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>>;
}

impl PhysMem for Qmp {
    fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>> {
        self.read_phys(addr, len)
    }
}

/// One VM's slot, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmStats {
    /// Slot index (the VM's index in the system).
    pub id: usize,
    /// Name.
    pub name: String,
    /// State.
    pub state: VmState,
    /// Boot count (known once it stopped; 0 while running).
    pub boot_count: u64,
    /// Counters per vCPU, indexed by [`Reason`] code.
    pub vcpus: Vec<Vec<u64>>,
}

impl VmStats {
    /// The counter of `reason` for `vcpu`.
    pub fn get(&self, vcpu: usize, reason: Reason) -> u64 {
        self.vcpus
            .get(vcpu)
            .and_then(|c| c.get(reason as usize))
            .copied()
            .unwrap_or(0)
    }

    /// The counter of `reason` summed over the vCPUs.
    pub fn total(&self, reason: Reason) -> u64 {
        (0..self.vcpus.len()).map(|v| self.get(v, reason)).sum()
    }
}

/// A trace ring's descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingDesc {
    /// Physical address of the records.
    pub records: u64,
    /// Capacity in records.
    pub capacity: u64,
    /// Records ever written.
    pub head: u64,
}

/// The telemetry block, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the block is.
    pub address: u64,
    /// Frequency of trace timestamps.
    pub counter_hz: u64,
    /// Whether the hypervisor was built with the `trace` feature.
    pub trace: bool,
    /// VM slots in use.
    pub vms: Vec<VmStats>,
    /// Trace rings (empty without the `trace` feature).
    pub rings: Vec<RingDesc>,
}

use crate::config::Board;
use clap::ValueEnum as _;

fn bad(message: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Hypervisor,
        anyhow::anyhow!("telemetry block: {message}"),
    )
}

/// The address of the telemetry block, from the hypervisor's `Image` header
/// where the run's QEMU loaded it: the first of the boards' load addresses
/// ([`crate::config::Board::image_load_address`]: `virt`'s 0x4020_0000,
/// the ZCU102's 0x20_0000) that holds an arm64 `Image` header naming a
/// block with the telemetry magic.
pub fn locate(mem: &mut impl PhysMem) -> Result<u64> {
    let candidates = Board::value_variants()
        .iter()
        .map(|b| b.image_load_address());
    let mut tried = Vec::new();
    for at in candidates {
        tried.push(format!("{at:#x}"));
        let Ok(header) = mem.read(at, 0x40) else {
            continue;
        };
        let magic = le_u32(&header, layout::IMAGE_HEADER_MAGIC as usize);
        if magic != Some(u32::from_le_bytes(*b"ARM\x64")) {
            continue;
        }
        // Another board's address may hold a guest's kernel `Image` (RAM
        // there): only a header naming a telemetry block counts.
        let Some(addr) = le_u64(&header, layout::IMAGE_HEADER_TELEMETRY as usize) else {
            continue;
        };
        let block_magic = mem.read(addr, 8).ok().and_then(|b| le_u64(&b, 0));
        if addr != 0 && block_magic == Some(layout::MAGIC) {
            return Ok(addr);
        }
    }
    Err(bad(format!(
        "no Stratum hypervisor header (an arm64 Image naming a telemetry block) at {}",
        tried.join(" or ")
    )))
}

/// Reads and decodes the block of the machine behind `mem`.
pub fn read_snapshot(mem: &mut impl PhysMem) -> Result<Snapshot> {
    let address = locate(mem)?;
    let header = mem.read(address, layout::HEADER_SIZE as u64)?;
    let total = header_u32(&header, layout::H_TOTAL_SIZE)?;
    check_header(&header)?;
    let block = mem.read(address, u64::from(total))?;
    decode(&block, address)
}

fn header_u32(b: &[u8], at: usize) -> Result<u32> {
    le_u32(b, at).ok_or_else(|| bad("truncated header"))
}

fn check_header(b: &[u8]) -> Result<()> {
    if le_u64(b, layout::H_MAGIC) != Some(layout::MAGIC) {
        return Err(bad("bad magic"));
    }
    let version = header_u32(b, layout::H_VERSION)?;
    if version != layout::VERSION {
        return Err(bad(format!(
            "version {version}, this tool reads version {} (rebuild one or the other)",
            layout::VERSION
        )));
    }
    let reasons = header_u32(b, layout::H_REASONS)? as usize;
    if reasons != Reason::COUNT {
        return Err(bad(format!(
            "{reasons} counters per vCPU, this tool knows {} (rebuild one or the other)",
            Reason::COUNT
        )));
    }
    Ok(())
}

/// Decodes a whole block (`bytes`, read from `address`).
pub fn decode(bytes: &[u8], address: u64) -> Result<Snapshot> {
    check_header(bytes)?;
    let field = |at: usize| header_u32(bytes, at).map(|v| v as usize);
    let (vm_slots, vcpu_slots, ring_slots) = (
        field(layout::H_VM_SLOTS)?,
        field(layout::H_VCPU_SLOTS)?,
        field(layout::H_RING_SLOTS)?,
    );
    let (vm_offset, vm_size) = (field(layout::H_VM_OFFSET)?, field(layout::H_VM_SIZE)?);
    let (ring_offset, ring_size) = (field(layout::H_RING_OFFSET)?, field(layout::H_RING_SIZE)?);
    let flags = header_u32(bytes, layout::H_FLAGS)?;
    let counter_hz = le_u64(bytes, layout::H_COUNTER_HZ).ok_or_else(|| bad("truncated"))?;
    if vm_size < layout::VM_STATS + vcpu_slots * Reason::COUNT * 8
        || ring_size < layout::RING_DESC_SIZE
    {
        return Err(bad("slots too small for their contents"));
    }
    let slot = |base: usize, i: usize, size: usize| -> Result<&[u8]> {
        let start = i
            .checked_mul(size)
            .and_then(|o| o.checked_add(base))
            .ok_or_else(|| bad("slot offset overflows"))?;
        bytes
            .get(start..start + size)
            .ok_or_else(|| bad("shorter than its header says"))
    };
    let mut vms = Vec::new();
    for id in 0..vm_slots {
        let s = slot(vm_offset, id, vm_size)?;
        let state = le_u32(s, layout::VM_STATE).and_then(VmState::from_code);
        let Some(state) = state else {
            return Err(bad(format!("VM slot {id} has an unknown state")));
        };
        if state == VmState::Empty {
            continue;
        }
        let vcpus = (le_u32(s, layout::VM_VCPUS).unwrap_or(0) as usize).min(vcpu_slots);
        let name = &s[layout::VM_NAME..layout::VM_NAME + layout::VM_NAME_LEN];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let counters = (0..vcpus)
            .map(|v| {
                (0..Reason::COUNT)
                    .map(|r| le_u64(s, layout::VM_STATS + (v * Reason::COUNT + r) * 8).unwrap_or(0))
                    .collect()
            })
            .collect();
        vms.push(VmStats {
            id,
            name: String::from_utf8_lossy(&name[..len]).into_owned(),
            state,
            boot_count: le_u64(s, layout::VM_BOOT_COUNT).unwrap_or(0),
            vcpus: counters,
        });
    }
    let trace = flags & layout::FLAG_TRACE != 0;
    let mut rings = Vec::new();
    if trace {
        for i in 0..ring_slots {
            let s = slot(ring_offset, i, ring_size)?;
            let records = le_u64(s, layout::RING_RECORDS).unwrap_or(0);
            let capacity = u64::from(le_u32(s, layout::RING_CAPACITY).unwrap_or(0));
            let record_size = le_u32(s, layout::RING_RECORD_SIZE).unwrap_or(0);
            if records == 0 || capacity == 0 {
                continue;
            }
            if record_size as usize != layout::RECORD_SIZE || !capacity.is_power_of_two() {
                return Err(bad(format!("trace ring {i} has an unknown shape")));
            }
            rings.push(RingDesc {
                records,
                capacity,
                head: le_u64(s, layout::RING_HEAD).unwrap_or(0),
            });
        }
    }
    Ok(Snapshot {
        address,
        counter_hz,
        trace,
        vms,
        rings,
    })
}

/// The statistics tables of every VM in `snapshot`, as `stratum stats`
/// prints them.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    if snapshot.vms.is_empty() {
        out.push_str("no VM has started yet\n");
    }
    for vm in &snapshot.vms {
        let _ = write!(out, "vm{} '{}' ({}", vm.id, vm.name, vm.state.name());
        if vm.boot_count > 0 {
            let _ = write!(out, ", {} boot(s)", vm.boot_count);
        }
        out.push_str("): exits by reason\n");
        let _ = render_table(&mut out, vm.vcpus.len(), |v, r| vm.get(v, r));
    }
    out
}

/// `stratum stats`: the live statistics of the run of `stratum` process
/// `pid` (or the only run), as text.
pub fn stats(pid: Option<u32>) -> Result<String> {
    let socket = crate::qmp::find_socket(pid)?;
    stats_at(&socket)
}

/// The live statistics of the QEMU whose QMP socket is `socket`.
pub fn stats_at(socket: &Path) -> Result<String> {
    let mut qmp = Qmp::connect(socket)?;
    Ok(render(&read_snapshot(&mut qmp)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A machine's memory: sparse regions.
    #[derive(Default)]
    pub(crate) struct FakeMem(pub Vec<(u64, Vec<u8>)>);

    impl PhysMem for FakeMem {
        fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>> {
            for (base, bytes) in &self.0 {
                if addr >= *base && addr + len <= base + bytes.len() as u64 {
                    let at = (addr - base) as usize;
                    return Ok(bytes[at..at + len as usize].to_vec());
                }
            }
            Err(bad(format!("nothing at {addr:#x}")))
        }
    }

    const BLOCK_AT: u64 = 0x4021_0000;

    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A block as the hypervisor lays it out, with `trace` rings at `ring_at`.
    pub(crate) fn block(trace: Option<(u64, u64)>) -> Vec<u8> {
        let mut b = vec![0u8; layout::TOTAL_SIZE];
        put_u64(&mut b, layout::H_MAGIC, layout::MAGIC);
        put_u32(&mut b, layout::H_VERSION, layout::VERSION);
        put_u32(&mut b, layout::H_REASONS, Reason::COUNT as u32);
        put_u32(&mut b, layout::H_VM_SLOTS, layout::VM_SLOTS as u32);
        put_u32(&mut b, layout::H_VCPU_SLOTS, layout::VCPU_SLOTS as u32);
        put_u32(&mut b, layout::H_RING_SLOTS, layout::RING_SLOTS as u32);
        put_u32(&mut b, layout::H_FLAGS, u32::from(trace.is_some()));
        put_u64(&mut b, layout::H_COUNTER_HZ, 62_500_000);
        put_u32(&mut b, layout::H_VM_OFFSET, layout::VM_OFFSET as u32);
        put_u32(&mut b, layout::H_VM_SIZE, layout::VM_SLOT_SIZE as u32);
        put_u32(&mut b, layout::H_RING_OFFSET, layout::RING_OFFSET as u32);
        put_u32(&mut b, layout::H_RING_SIZE, layout::RING_DESC_SIZE as u32);
        put_u32(&mut b, layout::H_TOTAL_SIZE, layout::TOTAL_SIZE as u32);
        // VM 1 "linux", 2 vCPUs, running.
        let vm = layout::VM_OFFSET + layout::VM_SLOT_SIZE;
        put_u32(&mut b, vm + layout::VM_STATE, VmState::Running as u32);
        put_u32(&mut b, vm + layout::VM_VCPUS, 2);
        b[vm + layout::VM_NAME..vm + layout::VM_NAME + 5].copy_from_slice(b"linux");
        let counter = |vcpu: usize, r: Reason| {
            vm + layout::VM_STATS + (vcpu * Reason::COUNT + r as usize) * 8
        };
        put_u64(&mut b, counter(0, Reason::HvcPsciCpuOn), 1);
        put_u64(&mut b, counter(1, Reason::Wfi), 500);
        put_u64(&mut b, counter(1, Reason::IrqVtimer), 7);
        if let Some((records, head)) = trace {
            let r = layout::RING_OFFSET + layout::RING_DESC_SIZE;
            put_u64(&mut b, r + layout::RING_RECORDS, records);
            put_u32(&mut b, r + layout::RING_CAPACITY, 8);
            put_u32(&mut b, r + layout::RING_RECORD_SIZE, 16);
            put_u64(&mut b, r + layout::RING_HEAD, head);
        }
        b
    }

    /// The loaded hypervisor's first bytes: an Image header naming the block.
    pub(crate) fn image_header(block_at: u64) -> Vec<u8> {
        let mut h = vec![0u8; 0x40];
        put_u64(&mut h, layout::IMAGE_HEADER_TELEMETRY as usize, block_at);
        h[0x38..0x3C].copy_from_slice(b"ARM\x64");
        h
    }

    pub(crate) fn machine(block: Vec<u8>) -> FakeMem {
        FakeMem(vec![
            (layout::HYPERVISOR_LOAD_ADDRESS, image_header(BLOCK_AT)),
            (BLOCK_AT, block),
        ])
    }

    #[test]
    fn decodes_the_vms_in_use() {
        let snap = read_snapshot(&mut machine(block(None))).expect("decodes");
        assert_eq!(snap.address, BLOCK_AT);
        assert_eq!(snap.counter_hz, 62_500_000);
        assert!(!snap.trace && snap.rings.is_empty());
        assert_eq!(snap.vms.len(), 1);
        let vm = &snap.vms[0];
        assert_eq!(
            (vm.id, vm.name.as_str(), vm.state),
            (1, "linux", VmState::Running)
        );
        assert_eq!(vm.vcpus.len(), 2);
        assert_eq!(vm.get(0, Reason::HvcPsciCpuOn), 1);
        assert_eq!(vm.get(1, Reason::Wfi), 500);
        assert_eq!(vm.total(Reason::IrqVtimer), 7);
        assert_eq!(vm.get(5, Reason::Wfi), 0);
    }

    #[test]
    fn renders_a_table_per_vm() {
        let snap = read_snapshot(&mut machine(block(None))).expect("decodes");
        let text = render(&snap);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "vm1 'linux' (running): exits by reason");
        assert!(
            lines[1].contains("vcpu0") && lines[1].contains("vcpu1"),
            "{text}"
        );
        assert!(text.contains("hvc PSCI_CPU_ON"), "{text}");
        let total = lines.last().expect("a total row");
        assert_eq!(
            total.split_whitespace().collect::<Vec<_>>(),
            ["total", "1", "507", "508"]
        );
    }

    #[test]
    fn trace_rings_are_described() {
        let snap = read_snapshot(&mut machine(block(Some((0x4100_0000, 20))))).expect("decodes");
        assert!(snap.trace);
        assert_eq!(
            snap.rings,
            [RingDesc {
                records: 0x4100_0000,
                capacity: 8,
                head: 20
            }]
        );
    }

    #[test]
    fn the_header_is_found_where_each_board_loads_the_image() {
        // The ZCU102 loads it at RAM (0) + 2 MiB; nothing at virt's address.
        let mut zcu102 = FakeMem(vec![
            (0x20_0000, image_header(0x21_0000)),
            (0x21_0000, block(None)),
        ]);
        assert_eq!(locate(&mut zcu102).expect("found"), 0x21_0000);
        assert_eq!(
            read_snapshot(&mut zcu102).expect("decodes").address,
            0x21_0000
        );
        let e = locate(&mut FakeMem::default()).expect_err("nothing anywhere");
        assert!(e.to_string().contains("at 0x40200000 or 0x200000"), "{e}");
        // A guest's kernel Image at virt's address (RAM on the ZCU102),
        // naming no telemetry block, is passed over.
        zcu102
            .0
            .push((layout::HYPERVISOR_LOAD_ADDRESS, image_header(0)));
        assert_eq!(locate(&mut zcu102).expect("found past it"), 0x21_0000);
    }

    #[test]
    fn foreign_or_mismatched_blocks_are_refused() {
        let mut no_image = FakeMem(vec![(layout::HYPERVISOR_LOAD_ADDRESS, vec![0; 0x40])]);
        let e = read_snapshot(&mut no_image).expect_err("no header");
        assert!(e.to_string().contains("arm64 Image"), "{e}");

        let mut b = block(None);
        b[0] ^= 1;
        assert!(read_snapshot(&mut machine(b)).is_err());

        let mut b = block(None);
        put_u32(&mut b, layout::H_VERSION, 99);
        let e = read_snapshot(&mut machine(b)).expect_err("version");
        assert!(e.to_string().contains("version 99"), "{e}");

        let mut b = block(None);
        put_u32(&mut b, layout::H_REASONS, 3);
        let e = read_snapshot(&mut machine(b)).expect_err("counters");
        assert!(e.to_string().contains("3 counters"), "{e}");

        let mut b = block(None);
        put_u32(&mut b, layout::H_VM_SLOTS, 1000);
        assert!(decode(&b, BLOCK_AT).is_err(), "slots past the end");

        let mut b = block(None);
        put_u32(&mut b, layout::VM_OFFSET + layout::VM_STATE, 9);
        assert!(decode(&b, BLOCK_AT).is_err(), "unknown state");
    }
}
