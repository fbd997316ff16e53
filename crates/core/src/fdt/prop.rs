//! Properties: decoding values as cells, numbers, strings and string lists,
//! and `reg` entries.

use super::{Cells, be32};

/// A property: a name and an uninterpreted byte value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a [u8],
}

/// Reads a `cells`-cell big-endian number (at most 2 cells) from the front of
/// `bytes`, returning it and the rest.
pub(super) fn read_cells(bytes: &[u8], cells: u32) -> Option<(u64, &[u8])> {
    let len = usize::try_from(cells).ok()?.checked_mul(4)?;
    if cells > 2 || bytes.len() < len {
        return None;
    }
    let (head, rest) = bytes.split_at(len);
    let value = head
        .chunks_exact(4)
        .try_fold(0u64, |acc, c| Some((acc << 32) | u64::from(be32(c, 0)?)))?;
    Some((value, rest))
}

impl<'a> Prop<'a> {
    /// The property's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The raw value.
    pub fn raw(&self) -> &'a [u8] {
        self.value
    }

    /// Whether the value is empty (a flag property).
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The value as one big-endian cell; `None` unless exactly 4 bytes.
    pub fn as_u32(&self) -> Option<u32> {
        let b: [u8; 4] = self.value.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// The value as a big-endian 64-bit number; `None` unless exactly 8
    /// bytes.
    pub fn as_u64(&self) -> Option<u64> {
        let b: [u8; 8] = self.value.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    /// The value as one or two cells (4 or 8 bytes), as `linux,initrd-start`
    /// and similar properties are written.
    pub fn as_cells_u64(&self) -> Option<u64> {
        match self.value.len() {
            4 => self.as_u32().map(u64::from),
            _ => self.as_u64(),
        }
    }

    /// The value as a single NUL-terminated UTF-8 string.
    pub fn as_str(&self) -> Option<&'a str> {
        let (last, body) = self.value.split_last()?;
        if *last != 0 || body.contains(&0) {
            return None;
        }
        core::str::from_utf8(body).ok()
    }

    /// The value as a list of NUL-terminated UTF-8 strings.
    pub fn as_strs(&self) -> Option<StrList<'a>> {
        let (last, body) = self.value.split_last()?;
        if *last != 0 {
            return None;
        }
        let all = core::str::from_utf8(body).ok()?;
        Some(StrList { rest: Some(all) })
    }

    /// The value as big-endian cells (a trailing partial cell is ignored).
    pub fn cells(&self) -> impl Iterator<Item = u32> + use<'a> {
        self.value.chunks_exact(4).filter_map(|c| be32(c, 0))
    }
}

/// The strings of a string-list property.
#[derive(Clone, Debug)]
pub struct StrList<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for StrList<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.split_once('\0') {
            Some((head, tail)) => {
                self.rest = Some(tail);
                Some(head)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// `(address, size)` entries of a `reg` property.
#[derive(Clone, Debug)]
pub struct RegIter<'a> {
    rest: &'a [u8],
    cells: Cells,
}

impl<'a> RegIter<'a> {
    pub(super) fn new(value: &'a [u8], cells: Cells) -> Option<Self> {
        if cells.address > 2 || cells.size > 2 {
            return None;
        }
        let entry = usize::try_from(cells.address + cells.size).ok()? * 4;
        if entry == 0 || !value.len().is_multiple_of(entry) {
            return None;
        }
        Some(Self { rest: value, cells })
    }
}

impl Iterator for RegIter<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let (addr, rest) = read_cells(self.rest, self.cells.address)?;
        let (size, rest) = read_cells(rest, self.cells.size)?;
        if rest.len() == self.rest.len() {
            return None;
        }
        self.rest = rest;
        Some((addr, size))
    }
}
