//! Writing a flattened device tree into a caller-provided buffer.
//!
//! The structure block grows up from just after the header and an empty
//! memory reservation block; the strings block grows down from the end of the
//! buffer. Until [`FdtWriter::finish`], a property's name offset holds the
//! distance of its string from the buffer's end; `finish` rewrites each into
//! a real offset, moves the strings down behind the structure block and
//! writes the header. No allocation, and no panic: running out of room, or
//! misuse (unbalanced nodes, bad names), is an [`FdtError`]. The first error
//! is sticky: every later call returns it again.

use super::{
    FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_MAGIC, FDT_PROP, FDT_VERSION, FdtError, HEADER_SIZE,
    MAX_DEPTH, align4, be32,
};

/// Where the memory reservation block (just its `(0, 0)` terminator) starts.
const RSVMAP_OFFSET: usize = HEADER_SIZE;
/// Where the structure block starts.
const STRUCT_OFFSET: usize = RSVMAP_OFFSET + 16;
/// `last_comp_version` written in the header: v17 blobs read as v16.
const LAST_COMP_VERSION: u32 = 16;

/// Builds a device tree blob in a borrowed buffer.
#[derive(Debug)]
pub struct FdtWriter<'buf> {
    buf: &'buf mut [u8],
    /// End of the structure block written so far.
    pos: usize,
    /// Start of the strings written so far (they end at `buf.len()`).
    strings_low: usize,
    depth: usize,
    root_written: bool,
    /// Whether the current node may still take properties (no subnode yet).
    props_allowed: bool,
    boot_cpuid_phys: u32,
    error: Option<FdtError>,
}

fn check_name(name: &str) -> Result<(), FdtError> {
    if name.is_empty() || name.contains(['\0', '/']) {
        return Err(FdtError::InvalidName);
    }
    Ok(())
}

impl<'buf> FdtWriter<'buf> {
    /// A writer over `buf`. Fails when `buf` cannot even hold an empty tree.
    pub fn new(buf: &'buf mut [u8]) -> Result<Self, FdtError> {
        // Header, reservation terminator, root begin/end, FDT_END.
        if buf.len() < STRUCT_OFFSET + 16 {
            return Err(FdtError::BufferTooSmall);
        }
        let strings_low = buf.len();
        Ok(Self {
            buf,
            pos: STRUCT_OFFSET,
            strings_low,
            depth: 0,
            root_written: false,
            props_allowed: false,
            boot_cpuid_phys: 0,
            error: None,
        })
    }

    /// Sets the header's `boot_cpuid_phys` (the boot CPU's `reg`).
    pub fn set_boot_cpuid_phys(&mut self, id: u32) {
        self.boot_cpuid_phys = id;
    }

    /// Runs `f` unless an earlier call failed; remembers its error.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), FdtError>,
    ) -> Result<(), FdtError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let result = f(self);
        if let Err(e) = result {
            self.error = Some(e);
        }
        result
    }

    /// Reserves `len` bytes (padded to 4) of the structure block, zeroed.
    fn reserve(&mut self, len: usize) -> Result<&mut [u8], FdtError> {
        let padded = align4(len).ok_or(FdtError::BufferTooSmall)?;
        let start = self.pos;
        let end = start.checked_add(padded).ok_or(FdtError::BufferTooSmall)?;
        if end > self.strings_low {
            return Err(FdtError::BufferTooSmall);
        }
        self.pos = end;
        let out = self
            .buf
            .get_mut(start..end)
            .ok_or(FdtError::BufferTooSmall)?;
        out.fill(0);
        Ok(out)
    }

    fn put_u32(&mut self, v: u32) -> Result<(), FdtError> {
        self.reserve(4)?.copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    /// Opens a node. The first node is the root and must be named `""`;
    /// others need a non-empty name without `/` or NUL (`cpu@0`).
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        self.guarded(|w| {
            if w.depth == 0 {
                if w.root_written {
                    return Err(FdtError::Unbalanced);
                }
                if !name.is_empty() {
                    return Err(FdtError::InvalidName);
                }
            } else {
                check_name(name)?;
            }
            if w.depth >= MAX_DEPTH {
                return Err(FdtError::TooDeep);
            }
            w.put_u32(FDT_BEGIN_NODE)?;
            let out = w.reserve(name.len() + 1)?;
            out.get_mut(..name.len())
                .ok_or(FdtError::BufferTooSmall)?
                .copy_from_slice(name.as_bytes());
            w.depth += 1;
            w.root_written = true;
            w.props_allowed = true;
            Ok(())
        })
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        self.guarded(|w| {
            if w.depth == 0 {
                return Err(FdtError::Unbalanced);
            }
            w.put_u32(FDT_END_NODE)?;
            w.depth -= 1;
            w.props_allowed = false;
            Ok(())
        })
    }

    /// The distance from the buffer's end of `name` in the strings block,
    /// adding it if not there yet.
    fn intern(&mut self, name: &str) -> Result<u32, FdtError> {
        let end = self.buf.len();
        let mut at = self.strings_low;
        while at < end {
            let tail = self.buf.get(at..end).ok_or(FdtError::BufferTooSmall)?;
            let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            if tail.get(..len) == Some(name.as_bytes()) {
                return u32::try_from(end - at).map_err(|_| FdtError::ValueTooLarge);
            }
            at += len + 1;
        }
        let need = name.len() + 1;
        let low = self
            .strings_low
            .checked_sub(need)
            .filter(|&low| low >= self.pos)
            .ok_or(FdtError::BufferTooSmall)?;
        let dst = self
            .buf
            .get_mut(low..low + need)
            .ok_or(FdtError::BufferTooSmall)?;
        let (text, nul) = dst.split_at_mut(name.len());
        text.copy_from_slice(name.as_bytes());
        nul.fill(0);
        self.strings_low = low;
        u32::try_from(end - low).map_err(|_| FdtError::ValueTooLarge)
    }

    /// Writes a property of `len` bytes whose value `fill` produces in place.
    fn property_with(
        &mut self,
        name: &str,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), FdtError>,
    ) -> Result<(), FdtError> {
        self.guarded(|w| {
            if w.depth == 0 {
                return Err(FdtError::PropertyOutsideNode);
            }
            if !w.props_allowed {
                return Err(FdtError::PropertyAfterSubnode);
            }
            check_name(name)?;
            let len32 = u32::try_from(len).map_err(|_| FdtError::ValueTooLarge)?;
            let name_dist = w.intern(name)?;
            w.put_u32(FDT_PROP)?;
            w.put_u32(len32)?;
            w.put_u32(name_dist)?;
            let out = w.reserve(len)?;
            fill(out.get_mut(..len).ok_or(FdtError::BufferTooSmall)?)
        })
    }

    /// A property with a raw value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        self.property_with(name, value.len(), |out| {
            out.copy_from_slice(value);
            Ok(())
        })
    }

    /// A property without a value (`interrupt-controller;`).
    pub fn property_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.property(name, &[])
    }

    /// A one-cell property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A two-cell (64-bit) property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A property of big-endian cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        let Some(len) = cells.len().checked_mul(4) else {
            return self.guarded(|_| Err(FdtError::ValueTooLarge));
        };
        self.property_with(name, len, |out| {
            for (dst, cell) in out.chunks_exact_mut(4).zip(cells) {
                dst.copy_from_slice(&cell.to_be_bytes());
            }
            Ok(())
        })
    }

    /// A string property (NUL-terminated in the blob).
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), FdtError> {
        self.property_strings(name, &[value])
    }

    /// A string-list property (`compatible = "a", "b"`).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), FdtError> {
        if values.iter().any(|v| v.contains('\0')) {
            return self.guarded(|_| Err(FdtError::InvalidString));
        }
        let Some(len) = values
            .iter()
            .try_fold(0usize, |acc, v| acc.checked_add(v.len() + 1))
        else {
            return self.guarded(|_| Err(FdtError::ValueTooLarge));
        };
        self.property_with(name, len, |out| {
            let mut at = 0;
            for v in values {
                let dst = out
                    .get_mut(at..at + v.len())
                    .ok_or(FdtError::BufferTooSmall)?;
                dst.copy_from_slice(v.as_bytes());
                at += v.len() + 1;
            }
            Ok(())
        })
    }

    /// Completes the blob: checks every node is closed, rewrites property
    /// name offsets, moves the strings block behind the structure block and
    /// writes the header. Returns `totalsize`, the blob's length at the start
    /// of the buffer.
    pub fn finish(mut self) -> Result<usize, FdtError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.root_written {
            return Err(FdtError::NoRoot);
        }
        if self.depth != 0 {
            return Err(FdtError::Unbalanced);
        }
        self.put_u32(FDT_END)?;
        let struct_end = self.pos;
        let strings_len = self.buf.len() - self.strings_low;
        self.patch_name_offsets(strings_len)?;
        self.buf
            .copy_within(self.strings_low..self.buf.len(), struct_end);
        let total = struct_end + strings_len;
        let as_u32 = |v: usize| u32::try_from(v).map_err(|_| FdtError::ValueTooLarge);
        let header = [
            FDT_MAGIC,
            as_u32(total)?,
            as_u32(STRUCT_OFFSET)?,
            as_u32(struct_end)?,
            as_u32(RSVMAP_OFFSET)?,
            FDT_VERSION,
            LAST_COMP_VERSION,
            self.boot_cpuid_phys,
            as_u32(strings_len)?,
            as_u32(struct_end - STRUCT_OFFSET)?,
        ];
        for (dst, field) in self.buf.chunks_exact_mut(4).zip(header) {
            dst.copy_from_slice(&field.to_be_bytes());
        }
        self.buf
            .get_mut(RSVMAP_OFFSET..STRUCT_OFFSET)
            .ok_or(FdtError::BufferTooSmall)?
            .fill(0);
        Ok(total)
    }

    /// Turns each property's distance-from-end name offset into an offset in
    /// a strings block of `strings_len` bytes.
    fn patch_name_offsets(&mut self, strings_len: usize) -> Result<(), FdtError> {
        let mut off = STRUCT_OFFSET;
        while off < self.pos {
            let token = be32(self.buf, off).ok_or(FdtError::BadStructure)?;
            off += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let tail = self.buf.get(off..self.pos).ok_or(FdtError::BadStructure)?;
                    let len = tail
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(FdtError::BadStructure)?;
                    off = align4(off + len + 1).ok_or(FdtError::BadStructure)?;
                }
                FDT_PROP => {
                    let len = be32(self.buf, off).ok_or(FdtError::BadStructure)?;
                    let dist = be32(self.buf, off + 4).ok_or(FdtError::BadStructure)?;
                    let dist = usize::try_from(dist).map_err(|_| FdtError::BadStructure)?;
                    let name_off = strings_len
                        .checked_sub(dist)
                        .ok_or(FdtError::BadStructure)?;
                    let name_off = u32::try_from(name_off).map_err(|_| FdtError::ValueTooLarge)?;
                    self.buf
                        .get_mut(off + 4..off + 8)
                        .ok_or(FdtError::BadStructure)?
                        .copy_from_slice(&name_off.to_be_bytes());
                    let len = usize::try_from(len).map_err(|_| FdtError::BadStructure)?;
                    off = align4(off + 8 + len).ok_or(FdtError::BadStructure)?;
                }
                FDT_END_NODE | FDT_END => {}
                _ => return Err(FdtError::BadStructure),
            }
        }
        Ok(())
    }
}
