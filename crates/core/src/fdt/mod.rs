//! Flattened device trees (DTSpec v0.4, blob format version 17).
//!
//! - [`Fdt`] reads a blob. It is hostile input (firmware is trusted, but a
//!   malformed tree must still never panic the hypervisor): [`Fdt::new`]
//!   validates the header, the memory reservation block and the whole
//!   structure block once, so navigation afterwards only walks a tree known to
//!   be well formed; every access is still bounds-checked.
//! - [`FdtWriter`] builds a blob into a caller-provided buffer, without
//!   allocation: nodes and properties are written in order, the strings block
//!   is deduplicated, and every failure (buffer too small, unbalanced nodes,
//!   bad names) is an [`FdtError`], never a panic.
//!
//! Layout of a blob: a 40-byte header, the memory reservation block (8-byte
//! aligned, `(address, size)` pairs of big-endian `u64` ending with `(0, 0)`),
//! the structure block (4-byte aligned tokens `FDT_BEGIN_NODE`,
//! `FDT_END_NODE`, `FDT_PROP`, `FDT_NOP`, `FDT_END`) and the strings block
//! (NUL-terminated property names).

mod prop;
mod reader;
mod writer;

pub use prop::{Prop, RegIter, StrList};
pub use reader::{Ancestors, Cells, Children, Fdt, Node, Nodes, Properties, Reservations};
pub use writer::FdtWriter;

/// The magic number every blob starts with.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The blob format version the writer produces and the highest the reader
/// understands.
pub const FDT_VERSION: u32 = 17;
/// The oldest version whose layout the reader accepts (v16 lacks
/// `size_dt_struct`).
pub const FDT_MIN_VERSION: u32 = 16;
/// Size of a version-17 header in bytes.
pub const HEADER_SIZE: usize = 40;
/// Deepest node nesting accepted (the root is depth 1). Real trees stay
/// below 10; the bound keeps every walk's bookkeeping in fixed-size arrays.
pub const MAX_DEPTH: usize = 32;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a blob could not be read or written. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is shorter than its header or than the size it declares.
    Truncated,
    /// The blob does not start with the device tree magic 0xd00dfeed.
    BadMagic,
    /// The blob's version is not one this reader understands (16 or 17).
    UnsupportedVersion,
    /// A block of the blob lies outside it, overlaps the header, or is misaligned.
    BadLayout,
    /// The memory reservation block is not terminated within the blob.
    BadReservations,
    /// The structure block holds an unknown or truncated token, or is not one
    /// balanced root node followed by FDT_END.
    BadStructure,
    /// Nodes are nested deeper than `MAX_DEPTH`.
    TooDeep,
    /// A node or property name is not NUL-terminated UTF-8 inside its block.
    BadName,
    /// A property appears after a subnode of the same node.
    PropertyAfterSubnode,
    /// The output buffer is too small for the tree.
    BufferTooSmall,
    /// `end_node` without an open node, `finish` with nodes still open, or a
    /// second root node.
    Unbalanced,
    /// A property was written outside any node.
    PropertyOutsideNode,
    /// `finish` was called before any node was written.
    NoRoot,
    /// A node or property name is empty, contains NUL or '/', or the root
    /// node's name is not empty.
    InvalidName,
    /// A string property value contains a NUL byte.
    InvalidString,
    /// A property value is larger than the format can describe.
    ValueTooLarge,
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let msg = match self {
            Self::Truncated => "device tree truncated",
            Self::BadMagic => "device tree has a bad magic (not 0xd00dfeed)",
            Self::UnsupportedVersion => "device tree version is not 16 or 17",
            Self::BadLayout => "device tree block out of bounds or misaligned",
            Self::BadReservations => "device tree memory reservation block not terminated",
            Self::BadStructure => "device tree structure block malformed",
            Self::TooDeep => "device tree nodes nested too deeply",
            Self::BadName => "device tree name not NUL-terminated UTF-8",
            Self::PropertyAfterSubnode => "device tree property after a subnode",
            Self::BufferTooSmall => "device tree buffer too small",
            Self::Unbalanced => "device tree nodes unbalanced",
            Self::PropertyOutsideNode => "device tree property outside a node",
            Self::NoRoot => "device tree has no root node",
            Self::InvalidName => "invalid device tree node or property name",
            Self::InvalidString => "device tree string contains NUL",
            Self::ValueTooLarge => "device tree property value too large",
        };
        f.write_str(msg)
    }
}

/// Reads a big-endian `u32` at `off`, or `None` when out of bounds.
fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let b: [u8; 4] = bytes.get(off..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Reads a big-endian `u64` at `off`, or `None` when out of bounds.
fn be64(bytes: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    let b: [u8; 8] = bytes.get(off..end)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Rounds `x` up to a multiple of 4, or `None` on overflow.
fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

#[cfg(test)]
pub(crate) mod tests;
