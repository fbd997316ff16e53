//! A small, defensive flattened-device-tree reader: just enough for a guest to
//! print what its hypervisor told it (`/memory` `reg`, the number of CPUs,
//! `/chosen/bootargs`) and to find the devices the interrupt tests use (the
//! GIC and its version, the timer, the PL011 and its interrupt).
//!
//! Pure code over a byte slice (unit-tested on the host). Every offset read from
//! the blob is bounds-checked; a malformed blob gives an [`FdtError`], never a
//! panic or an out-of-bounds read. Byte-wise big-endian reads keep it safe with
//! the MMU off (no unaligned accesses).

/// `FDT_MAGIC`.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest blob the reader accepts (a guest DT is a few KiB).
pub const MAX_TOTALSIZE: usize = 2 << 20;
/// Size of the header fields the reader needs (version 17 header).
const HEADER_LEN: usize = 40;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a blob was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob does not start with the FDT magic number.
    BadMagic,
    /// `totalsize` is smaller than the header or larger than [`MAX_TOTALSIZE`].
    BadTotalSize,
    /// The version is older than 16 (the first with this layout).
    UnsupportedVersion,
    /// The structure or strings block lies outside the blob.
    BlockOutOfBounds,
    /// A token, name or property runs past the end of the structure block.
    Truncated,
    /// An unknown structure token.
    BadToken,
    /// Nodes nest too deeply or end without having begun.
    BadNesting,
    /// A property name offset points outside the strings block.
    BadStringOffset,
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadMagic => "bad magic",
            Self::BadTotalSize => "bad totalsize",
            Self::UnsupportedVersion => "unsupported version",
            Self::BlockOutOfBounds => "structure/strings block out of bounds",
            Self::Truncated => "truncated structure block",
            Self::BadToken => "bad structure token",
            Self::BadNesting => "bad node nesting",
            Self::BadStringOffset => "bad property name offset",
        })
    }
}

pub(crate) fn be32(data: &[u8], off: usize) -> Option<u32> {
    let bytes = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Reads `totalsize` from a blob header, after checking the magic number; for
/// sizing a slice over a DTB found at a raw address.
pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
    if be32(header, 0) != Some(FDT_MAGIC) {
        return Err(FdtError::BadMagic);
    }
    let size = be32(header, 4).ok_or(FdtError::BadTotalSize)? as usize;
    if !(HEADER_LEN..=MAX_TOTALSIZE).contains(&size) {
        return Err(FdtError::BadTotalSize);
    }
    Ok(size)
}

/// A validated blob.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
}

/// What a guest wants to know from its DT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary<'a> {
    /// First `(base, size)` of the first `/memory` node's `reg`.
    pub memory: Option<(u64, u64)>,
    /// Number of `cpu` nodes under `/cpus`.
    pub cpus: u32,
    /// `/chosen/bootargs` (without its NUL), if present and valid UTF-8.
    pub bootargs: Option<&'a str>,
    /// `#address-cells` of the root (default 2).
    pub address_cells: u32,
    /// `#size-cells` of the root (default 1).
    pub size_cells: u32,
}

/// The top-level node a property belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    Root,
    Memory,
    Cpus,
    Chosen,
    Other,
}

fn node_name_is(name: &[u8], base: &[u8]) -> bool {
    name == base || (name.starts_with(base) && name.get(base.len()) == Some(&b'@'))
}

/// Reads a big-endian number of `cells` 32-bit cells (1 or 2) at `off`.
pub(crate) fn read_cells(value: &[u8], off: usize, cells: u32) -> Option<u64> {
    match cells {
        1 => be32(value, off).map(u64::from),
        2 => Some((u64::from(be32(value, off)?) << 32) | u64::from(be32(value, off + 4)?)),
        _ => None,
    }
}

impl<'a> Fdt<'a> {
    /// Validates the header of `blob` (which may be longer than `totalsize`).
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        let size = total_size(blob)?;
        let blob = blob.get(..size).ok_or(FdtError::BadTotalSize)?;
        let field = |i: usize| be32(blob, i * 4).ok_or(FdtError::BadTotalSize);
        let (off_struct, off_strings) = (field(2)? as usize, field(3)? as usize);
        let version = field(5)?;
        let (size_strings, size_struct) = (field(8)? as usize, field(9)? as usize);
        if version < 16 {
            return Err(FdtError::UnsupportedVersion);
        }
        let block = |off: usize, len: usize| {
            off.checked_add(len)
                .and_then(|end| blob.get(off..end))
                .ok_or(FdtError::BlockOutOfBounds)
        };
        Ok(Self {
            structs: block(off_struct, size_struct)?,
            strings: block(off_strings, size_strings)?,
        })
    }

    fn string(&self, off: usize) -> Result<&'a [u8], FdtError> {
        let rest = self.strings.get(off..).ok_or(FdtError::BadStringOffset)?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(FdtError::BadStringOffset)?;
        Ok(&rest[..len])
    }

    /// Walks the structure block once, calling `visit(depth, token)` for each
    /// node start (depth counts the node itself: the root is 1), node end
    /// (the depth of the node that ends) and property (the depth of the node
    /// it belongs to). Checks the nesting and every bound on the way.
    pub(crate) fn walk(&self, mut visit: impl FnMut(u32, Token<'a>)) -> Result<(), FdtError> {
        let s = self.structs;
        let mut depth = 0u32;
        let mut off = 0usize;
        loop {
            let token = be32(s, off).ok_or(FdtError::Truncated)?;
            off += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let rest = s.get(off..).ok_or(FdtError::Truncated)?;
                    let len = rest
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(FdtError::Truncated)?;
                    off = (off + len + 1 + 3) & !3;
                    depth += 1;
                    if depth > 64 {
                        return Err(FdtError::BadNesting);
                    }
                    visit(depth, Token::Begin(&rest[..len]));
                }
                FDT_END_NODE => {
                    if depth == 0 {
                        return Err(FdtError::BadNesting);
                    }
                    visit(depth, Token::End);
                    depth -= 1;
                }
                FDT_PROP => {
                    let len = be32(s, off).ok_or(FdtError::Truncated)? as usize;
                    let name_off = be32(s, off + 4).ok_or(FdtError::Truncated)? as usize;
                    let start = off + 8;
                    let value = start
                        .checked_add(len)
                        .and_then(|end| s.get(start..end))
                        .ok_or(FdtError::Truncated)?;
                    off = (start + len + 3) & !3;
                    visit(depth, Token::Prop(self.string(name_off)?, value));
                }
                FDT_NOP => {}
                FDT_END => break,
                _ => return Err(FdtError::BadToken),
            }
        }
        if depth != 0 {
            return Err(FdtError::BadNesting);
        }
        Ok(())
    }

    /// Walks the structure block once and collects the [`Summary`].
    pub fn summary(&self) -> Result<Summary<'a>, FdtError> {
        let mut out = Summary {
            address_cells: 2,
            size_cells: 1,
            ..Summary::default()
        };
        let mut memory_reg: Option<&'a [u8]> = None;
        let mut top = Top::Other;
        self.walk(|depth, token| match token {
            Token::Begin(name) => match depth {
                1 => top = Top::Root,
                2 => {
                    top = if node_name_is(name, b"memory") {
                        Top::Memory
                    } else if name == b"cpus" {
                        Top::Cpus
                    } else if name == b"chosen" {
                        Top::Chosen
                    } else {
                        Top::Other
                    }
                }
                3 if top == Top::Cpus && node_name_is(name, b"cpu") => out.cpus += 1,
                _ => {}
            },
            Token::End => {
                if depth == 2 {
                    top = Top::Root;
                }
            }
            Token::Prop(name, value) => match (depth, top, name) {
                (1, Top::Root, b"#address-cells") => {
                    out.address_cells = be32(value, 0).unwrap_or(2);
                }
                (1, Top::Root, b"#size-cells") => out.size_cells = be32(value, 0).unwrap_or(1),
                (2, Top::Memory, b"reg") if memory_reg.is_none() => memory_reg = Some(value),
                (2, Top::Chosen, b"bootargs") => {
                    let text = value.strip_suffix(&[0]).unwrap_or(value);
                    out.bootargs = core::str::from_utf8(text).ok();
                }
                _ => {}
            },
        })?;
        if let Some(reg) = memory_reg {
            let base = read_cells(reg, 0, out.address_cells);
            let size = read_cells(reg, 4 * out.address_cells as usize, out.size_cells);
            if let (Some(base), Some(size)) = (base, size) {
                out.memory = Some((base, size));
            }
        }
        Ok(out)
    }

    /// The `reg` (MPIDR affinity) of each `cpu` node under `/cpus`, in
    /// order: the first `N` into `out`; returns how many there are in all.
    pub fn cpu_ids(&self, out: &mut [u64]) -> Result<usize, FdtError> {
        let mut cells = 1u32;
        let (mut in_cpus, mut in_cpu) = (false, false);
        let mut count = 0usize;
        self.walk(|depth, token| match token {
            Token::Begin(name) => {
                if depth == 2 {
                    in_cpus = name == b"cpus";
                }
                in_cpu = depth == 3 && in_cpus && node_name_is(name, b"cpu");
                if in_cpu {
                    count += 1;
                }
            }
            Token::End => in_cpu = false,
            Token::Prop(name, value) => {
                if depth == 2 && in_cpus && name == b"#address-cells" {
                    cells = be32(value, 0).unwrap_or(1);
                } else if depth == 3
                    && in_cpu
                    && name == b"reg"
                    && let (Some(slot), Some(id)) =
                        (out.get_mut(count - 1), read_cells(value, 0, cells))
                {
                    *slot = id;
                }
            }
        })?;
        Ok(count)
    }

    /// Finds the devices the interrupt tests need among the root's children:
    /// the GIC (by `compatible`), the architected timer and the PL011.
    pub fn devices(&self) -> Result<Devices, FdtError> {
        let (mut address_cells, mut size_cells) = (2u32, 1u32);
        let mut node = NodeProps::default();
        let mut out = Devices::default();
        let mut gic: Option<(GicVersion, &'a [u8])> = None;
        self.walk(|depth, token| match token {
            Token::Begin(_) if depth == 2 => node = NodeProps::default(),
            Token::Prop(name, value) if depth == 1 => match name {
                b"#address-cells" => address_cells = be32(value, 0).unwrap_or(2),
                b"#size-cells" => size_cells = be32(value, 0).unwrap_or(1),
                _ => {}
            },
            Token::Prop(name, value) if depth == 2 => match name {
                b"compatible" => node.compatible = Some(value),
                b"reg" => node.reg = Some(value),
                b"interrupts" => node.interrupts = Some(value),
                b"clock-frequency" => node.clock_frequency = be32(value, 0),
                _ => {}
            },
            Token::End if depth == 2 => {
                let compatible = node.compatible.unwrap_or(&[]);
                if let Some(version) = gic_version(compatible) {
                    if gic.is_none() {
                        gic = node.reg.map(|reg| (version, reg));
                    }
                } else if has_compatible(compatible, b"arm,armv8-timer") {
                    out.timer_frequency = node.clock_frequency;
                    out.timer_found = true;
                } else if has_compatible(compatible, b"arm,pl011") && out.uart.is_none() {
                    let base = node.reg.and_then(|reg| read_cells(reg, 0, address_cells));
                    let spi = node.interrupts.and_then(|irq| {
                        // <type number flags>: type 0 is an SPI.
                        (be32(irq, 0)? == 0).then_some(be32(irq, 4)?)
                    });
                    if let (Some(base), Some(spi)) = (base, spi) {
                        out.uart = Some(Pl011Node {
                            base,
                            intid: spi.saturating_add(32),
                        });
                    }
                }
            }
            _ => {}
        })?;
        if let Some((version, reg)) = gic {
            let stride = 4 * (address_cells + size_cells) as usize;
            let region = |i: usize| -> Option<(u64, u64)> {
                let off = i * stride;
                Some((
                    read_cells(reg, off, address_cells)?,
                    read_cells(reg, off + 4 * address_cells as usize, size_cells)?,
                ))
            };
            if let (Some(distributor), Some(second)) = (region(0), region(1)) {
                out.gic = Some(GicNode {
                    version,
                    distributor,
                    second,
                });
            }
        }
        Ok(out)
    }
}

/// One structure-block token, as [`Fdt::walk`] reports it.
#[derive(Clone, Copy)]
pub(crate) enum Token<'a> {
    /// A node starts; its name (with any `@unit`).
    Begin(&'a [u8]),
    /// The current node ends.
    End,
    /// A property: name and value.
    Prop(&'a [u8], &'a [u8]),
}

/// The properties of a top-level node that [`Fdt::devices`] looks at.
#[derive(Clone, Copy, Default)]
struct NodeProps<'a> {
    compatible: Option<&'a [u8]>,
    reg: Option<&'a [u8]>,
    interrupts: Option<&'a [u8]>,
    clock_frequency: Option<u32>,
}

/// Whether the NUL-separated string list `list` contains `want`.
pub(crate) fn has_compatible(list: &[u8], want: &[u8]) -> bool {
    list.split(|&b| b == 0).any(|s| s == want)
}

/// The GIC architecture version a `compatible` list names, if it is a GIC.
fn gic_version(compatible: &[u8]) -> Option<GicVersion> {
    const V2: [&[u8]; 4] = [
        b"arm,cortex-a15-gic",
        b"arm,gic-400",
        b"arm,cortex-a7-gic",
        b"arm,cortex-a9-gic",
    ];
    if has_compatible(compatible, b"arm,gic-v3") {
        Some(GicVersion::V3)
    } else if V2.iter().any(|c| has_compatible(compatible, c)) {
        Some(GicVersion::V2)
    } else {
        None
    }
}

/// GIC architecture version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2: memory-mapped CPU interface (`arm,cortex-a15-gic`, `arm,gic-400`).
    V2,
    /// GICv3: system-register CPU interface, redistributors (`arm,gic-v3`).
    V3,
}

/// The interrupt controller node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicNode {
    /// v2 or v3, from `compatible`.
    pub version: GicVersion,
    /// Distributor `(base, size)`: the first `reg` entry.
    pub distributor: (u64, u64),
    /// The second `reg` entry: the CPU interface (v2) or the first
    /// redistributor region (v3).
    pub second: (u64, u64),
}

/// The PL011 node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pl011Node {
    /// Base address (first `reg` entry).
    pub base: u64,
    /// Its interrupt as an INTID (its SPI number + 32).
    pub intid: u32,
}

/// What [`Fdt::devices`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// The GIC, if a node with a known `compatible` and two `reg` entries exists.
    pub gic: Option<GicNode>,
    /// A `arm,armv8-timer` node exists.
    pub timer_found: bool,
    /// Its `clock-frequency`, if it has one (firmware should program
    /// `CNTFRQ_EL0` instead, so usually absent).
    pub timer_frequency: Option<u32>,
    /// The first PL011 with an SPI.
    pub uart: Option<Pl011Node>,
}

/// Forms a blob slice over a DTB at a raw guest-physical address (MMU off), if
/// the magic number and size there look right.
///
/// # Safety
/// `addr` must be readable for 8 bytes and, if it holds an FDT header, for the
/// `totalsize` it states; nothing may write that memory while the slice lives.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub unsafe fn blob_at(addr: usize) -> Result<&'static [u8], FdtError> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return Err(FdtError::BadMagic);
    }
    // SAFETY: the caller guarantees 8 readable bytes at `addr`.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = total_size(header)?;
    // SAFETY: the caller guarantees `size` readable bytes when the header is valid.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size) })
}

/// Start of guest RAM in a Stratum VM (and on QEMU `virt`), where QEMU puts its
/// own DTB when it boots an ELF kernel with `x0 = 0`.
pub const RAM_BASE: usize = 0x4000_0000;

/// Finds and summarises the guest's DT: at `x0`, or, when `x0` is 0 (QEMU
/// booting an ELF directly), at [`RAM_BASE`], saying so on the console.
/// Returns the address used and the summary.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn locate(x0: usize) -> Result<(usize, Summary<'static>), FdtError> {
    let addr = if x0 == 0 {
        crate::println!("x0 = 0: no DTB pointer; probing {RAM_BASE:#x} (QEMU ELF boot)");
        RAM_BASE
    } else {
        x0
    };
    // SAFETY: by the boot protocol `x0` points at the DTB in guest RAM (and
    // RAM_BASE is RAM); the image never writes there. A wrong pointer can at
    // worst abort, which the exception handler reports as a test failure.
    let blob = unsafe { blob_at(addr) }?;
    Ok((addr, Fdt::new(blob)?.summary()?))
}

/// Like [`locate`], but returns the devices ([`Fdt::devices`]) and the summary.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn locate_devices(x0: usize) -> Result<(Summary<'static>, Devices), FdtError> {
    let (addr, summary) = locate(x0)?;
    // SAFETY: `locate` just validated a blob at `addr` (see its SAFETY note).
    let blob = unsafe { blob_at(addr) }?;
    Ok((summary, Fdt::new(blob)?.devices()?))
}

/// The guest's DT as a validated [`Fdt`] (at `x0`, or QEMU's at
/// [`RAM_BASE`]; see [`locate`]), with the address it was found at.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn locate_fdt(x0: usize) -> Result<(usize, Fdt<'static>), FdtError> {
    let (addr, _) = locate(x0)?;
    // SAFETY: `locate` just validated a blob at `addr` (see its SAFETY note).
    let blob = unsafe { blob_at(addr) }?;
    Ok((addr, Fdt::new(blob)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built by `dtc -I dts -O dtb tests-data/guest.dts` (source alongside).
    const GUEST_DTB: &[u8] = include_bytes!("../tests-data/guest.dtb");

    #[test]
    fn reads_a_guest_tree() {
        let fdt = Fdt::new(GUEST_DTB).expect("fixture is valid");
        let s = fdt.summary().expect("fixture is valid");
        assert_eq!(s.memory, Some((0x4000_0000, 0x100_0000)));
        assert_eq!(s.cpus, 2);
        assert_eq!(s.bootargs, Some("console=ttyAMA0 stratum.test=1"));
        assert_eq!((s.address_cells, s.size_cells), (2, 2));
    }

    /// QEMU 7.2's own `virt` trees (`-machine dumpdtb=…`, repacked with
    /// `dtc -I dtb -O dtb`), one per GIC version.
    const QEMU_GICV2: &[u8] = include_bytes!("../tests-data/qemu-virt-gicv2.dtb");
    const QEMU_GICV3: &[u8] = include_bytes!("../tests-data/qemu-virt-gicv3.dtb");

    #[test]
    fn finds_the_gic_timer_and_uart() {
        let uart = Some(Pl011Node {
            base: 0x0900_0000,
            intid: 33,
        });
        let v2 = Fdt::new(QEMU_GICV2)
            .expect("valid")
            .devices()
            .expect("valid");
        assert_eq!(
            v2.gic,
            Some(GicNode {
                version: GicVersion::V2,
                distributor: (0x0800_0000, 0x1_0000),
                second: (0x0801_0000, 0x1_0000),
            })
        );
        assert_eq!(v2.uart, uart);
        assert!(v2.timer_found);
        assert_eq!(v2.timer_frequency, None);
        let v3 = Fdt::new(QEMU_GICV3)
            .expect("valid")
            .devices()
            .expect("valid");
        assert_eq!(
            v3.gic,
            Some(GicNode {
                version: GicVersion::V3,
                distributor: (0x0800_0000, 0x1_0000),
                second: (0x080a_0000, 0xf6_0000),
            })
        );
        assert_eq!(v3.uart, uart);
        // The fixture has a timer with a clock-frequency, a v3 GIC, no UART IRQ.
        let g = Fdt::new(GUEST_DTB)
            .expect("valid")
            .devices()
            .expect("valid");
        assert_eq!(g.timer_frequency, Some(62_500_000));
        assert_eq!(g.gic.map(|g| g.version), Some(GicVersion::V3));
        assert_eq!(g.uart, None);
    }

    #[test]
    fn compatible_lists() {
        assert!(has_compatible(
            b"arm,pl011\0arm,primecell\0",
            b"arm,primecell"
        ));
        assert!(!has_compatible(b"arm,pl0111\0", b"arm,pl011"));
        assert_eq!(gic_version(b"arm,gic-400\0"), Some(GicVersion::V2));
        assert_eq!(gic_version(b"arm,gic-v3-its\0"), None);
    }

    #[test]
    fn rejects_bad_magic_and_sizes() {
        assert_eq!(Fdt::new(&[0; 64]).err(), Some(FdtError::BadMagic));
        assert_eq!(Fdt::new(&[]).err(), Some(FdtError::BadMagic));
        let mut blob = GUEST_DTB.to_vec();
        blob[4..8].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert_eq!(Fdt::new(&blob).err(), Some(FdtError::BadTotalSize));
        // totalsize larger than the bytes we have.
        let short = &GUEST_DTB[..GUEST_DTB.len() - 1];
        assert_eq!(Fdt::new(short).err(), Some(FdtError::BadTotalSize));
    }

    #[test]
    fn rejects_blocks_out_of_bounds() {
        let mut blob = GUEST_DTB.to_vec();
        blob[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(Fdt::new(&blob).err(), Some(FdtError::BlockOutOfBounds));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let fdt = Fdt::new(GUEST_DTB).expect("fixture is valid");
        let struct_len = fdt.structs.len();
        // Shrink the structure block one word at a time.
        for cut in (0..struct_len).step_by(4) {
            let mut blob = GUEST_DTB.to_vec();
            blob[36..40].copy_from_slice(&(cut as u32).to_be_bytes());
            if let Ok(f) = Fdt::new(&blob) {
                assert!(f.summary().is_err(), "cut at {cut} accepted");
            }
        }
        // Flip every byte of the blob; nothing may panic.
        for i in 0..GUEST_DTB.len() {
            let mut blob = GUEST_DTB.to_vec();
            blob[i] ^= 0xff;
            if let Ok(f) = Fdt::new(&blob) {
                let _ = f.summary();
                let _ = f.devices();
            }
        }
    }
}
