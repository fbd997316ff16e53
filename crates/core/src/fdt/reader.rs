//! Reading a flattened device tree: header validation, node navigation,
//! property decoding, `reg` decoding, phandles, aliases and `ranges`
//! address translation. Property decoding lives in `prop`.
//!
//! Invariant: a [`Fdt`] only exists for a blob whose structure block passed
//! [`Fdt::new`]'s validation (tokens well formed, names UTF-8, nodes balanced,
//! properties before subnodes, depth at most [`MAX_DEPTH`]). Walks still
//! check every access and end quietly instead of panicking.

use super::prop::{Prop, RegIter, StrList, read_cells};
use super::{
    FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_MAGIC, FDT_MIN_VERSION, FDT_NOP, FDT_PROP,
    FDT_VERSION, FdtError, HEADER_SIZE, MAX_DEPTH, align4, be32, be64,
};

/// Size of a version-16 header (no `size_dt_struct`).
const HEADER_SIZE_V16: usize = 36;

/// A parsed, validated device tree blob. Borrowed: nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    /// The blob, cut to its `totalsize`.
    blob: &'a [u8],
    structs: &'a [u8],
    pub(super) strings: &'a [u8],
    rsvmap: usize,
    version: u32,
    last_comp_version: u32,
    boot_cpuid_phys: u32,
    /// Offset of the root's `FDT_BEGIN_NODE`, its body and its name.
    root: (usize, usize, &'a str),
}

/// `#address-cells` and `#size-cells` of a bus: how many 32-bit cells an
/// address and a size take in its children's `reg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cells {
    /// `#address-cells`.
    pub address: u32,
    /// `#size-cells`.
    pub size: u32,
}

impl Cells {
    /// The DTSpec defaults when a node lacks the properties: 2 and 1.
    pub const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
    };
}

/// One token of the structure block.
#[derive(Clone, Copy)]
enum Token<'a> {
    Begin(&'a str),
    End,
    Prop(Prop<'a>),
    Nop,
    EndOfTree,
}

/// A node of the tree.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    /// Offset of the node's `FDT_BEGIN_NODE` token in the structure block.
    offset: usize,
    /// Offset of the first token after the node's name.
    body: usize,
    name: &'a str,
    /// The parent's `#address-cells`/`#size-cells`, which `reg` is written in.
    parent_cells: Cells,
}

fn str_at(bytes: &[u8], off: usize) -> Result<&str, FdtError> {
    let tail = bytes.get(off..).ok_or(FdtError::BadName)?;
    let len = tail.iter().position(|&b| b == 0).ok_or(FdtError::BadName)?;
    let raw = tail.get(..len).ok_or(FdtError::BadName)?;
    core::str::from_utf8(raw).map_err(|_| FdtError::BadName)
}

impl<'a> Fdt<'a> {
    /// Validates `bytes` as a device tree blob (header, block layout,
    /// reservation map and the whole structure block).
    pub fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        let field = |i: usize| be32(bytes, i * 4).ok_or(FdtError::Truncated);
        if bytes.len() < HEADER_SIZE_V16 {
            return Err(FdtError::Truncated);
        }
        if field(0)? != FDT_MAGIC {
            return Err(FdtError::BadMagic);
        }
        let total = usize::try_from(field(1)?).map_err(|_| FdtError::Truncated)?;
        let version = field(5)?;
        let last_comp_version = field(6)?;
        if version < FDT_MIN_VERSION || last_comp_version > FDT_VERSION {
            return Err(FdtError::UnsupportedVersion);
        }
        let header_size = if version >= 17 {
            HEADER_SIZE
        } else {
            HEADER_SIZE_V16
        };
        if total > bytes.len() || total < header_size {
            return Err(FdtError::Truncated);
        }
        let blob = bytes.get(..total).ok_or(FdtError::Truncated)?;
        let off = |v: u32| usize::try_from(v).map_err(|_| FdtError::BadLayout);
        let struct_off = off(field(2)?)?;
        let strings_off = off(field(3)?)?;
        let rsvmap = off(field(4)?)?;
        let strings_size = off(field(8)?)?;
        let struct_size = if version >= 17 {
            off(field(9)?)?
        } else {
            // v16: the structure block's size is only known by walking it.
            total.checked_sub(struct_off).ok_or(FdtError::BadLayout)? & !3
        };
        let block = |start: usize, size: usize| {
            let end = start.checked_add(size).ok_or(FdtError::BadLayout)?;
            if start < header_size || end > total {
                return Err(FdtError::BadLayout);
            }
            blob.get(start..end).ok_or(FdtError::BadLayout)
        };
        if !struct_off.is_multiple_of(4)
            || !struct_size.is_multiple_of(4)
            || !rsvmap.is_multiple_of(8)
        {
            return Err(FdtError::BadLayout);
        }
        let structs = block(struct_off, struct_size)?;
        let strings = block(strings_off, strings_size)?;
        block(rsvmap, 0)?;
        let fdt = Fdt {
            blob,
            structs,
            strings,
            rsvmap,
            version,
            last_comp_version,
            boot_cpuid_phys: field(7)?,
            root: (0, 0, ""),
        };
        fdt.check_reservations()?;
        let root = fdt.check_structure()?;
        Ok(Fdt { root, ..fdt })
    }

    fn check_reservations(&self) -> Result<(), FdtError> {
        let mut off = self.rsvmap;
        loop {
            let addr = be64(self.blob, off).ok_or(FdtError::BadReservations)?;
            let size = be64(self.blob, off + 8).ok_or(FdtError::BadReservations)?;
            if addr == 0 && size == 0 {
                return Ok(());
            }
            off = off.checked_add(16).ok_or(FdtError::BadReservations)?;
        }
    }

    /// Walks the whole structure block; returns the root's offset, body
    /// offset and name.
    fn check_structure(&self) -> Result<(usize, usize, &'a str), FdtError> {
        let mut root = None;
        let mut off = 0;
        let mut depth = 0usize;
        let mut root_done = false;
        let mut props_allowed = false;
        loop {
            let (token, next) = self.token(off)?;
            match token {
                Token::Begin(name) => {
                    if root_done {
                        return Err(FdtError::BadStructure);
                    }
                    if root.is_none() {
                        root = Some((off, next, name));
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(FdtError::TooDeep);
                    }
                    props_allowed = true;
                }
                Token::End => {
                    depth = depth.checked_sub(1).ok_or(FdtError::BadStructure)?;
                    root_done = depth == 0;
                    props_allowed = false;
                }
                Token::Prop(_) => {
                    if depth == 0 {
                        return Err(FdtError::BadStructure);
                    }
                    if !props_allowed {
                        return Err(FdtError::PropertyAfterSubnode);
                    }
                }
                Token::Nop => {}
                Token::EndOfTree => {
                    return match root {
                        Some(root) if root_done => Ok(root),
                        _ => Err(FdtError::BadStructure),
                    };
                }
            }
            off = next;
        }
    }

    /// Decodes the token at `off` in the structure block and returns it with
    /// the offset of the next one.
    fn token(&self, off: usize) -> Result<(Token<'a>, usize), FdtError> {
        let s = self.structs;
        let tag = be32(s, off).ok_or(FdtError::BadStructure)?;
        let body = off + 4;
        match tag {
            FDT_BEGIN_NODE => {
                let name = str_at(s, body)?;
                let next = align4(body + name.len() + 1).ok_or(FdtError::BadStructure)?;
                Ok((Token::Begin(name), next))
            }
            FDT_END_NODE => Ok((Token::End, body)),
            FDT_NOP => Ok((Token::Nop, body)),
            FDT_END => Ok((Token::EndOfTree, body)),
            FDT_PROP => {
                let len = be32(s, body).ok_or(FdtError::BadStructure)?;
                let name_off = be32(s, body + 4).ok_or(FdtError::BadStructure)?;
                let len = usize::try_from(len).map_err(|_| FdtError::BadStructure)?;
                let start = body + 8;
                let end = start.checked_add(len).ok_or(FdtError::BadStructure)?;
                let value = s.get(start..end).ok_or(FdtError::BadStructure)?;
                let name_off = usize::try_from(name_off).map_err(|_| FdtError::BadName)?;
                let name = str_at(self.strings, name_off)?;
                let next = align4(end).ok_or(FdtError::BadStructure)?;
                Ok((Token::Prop(Prop { name, value }), next))
            }
            _ => Err(FdtError::BadStructure),
        }
    }

    /// The blob, cut to the header's `totalsize`.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// The header's `totalsize`.
    pub fn total_size(&self) -> usize {
        self.blob.len()
    }

    /// The header's `version`.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The header's `last_comp_version`.
    pub fn last_comp_version(&self) -> u32 {
        self.last_comp_version
    }

    /// The header's `boot_cpuid_phys`: the `reg` of the boot CPU's node.
    pub fn boot_cpuid_phys(&self) -> u32 {
        self.boot_cpuid_phys
    }

    /// The memory reservation block's `(address, size)` entries.
    pub fn reservations(&self) -> Reservations<'a> {
        Reservations {
            blob: self.blob,
            off: self.rsvmap,
        }
    }

    /// The root node.
    pub fn root(&self) -> Node<'a> {
        let (offset, body, name) = self.root;
        Node {
            fdt: *self,
            offset,
            body,
            name,
            parent_cells: Cells::DEFAULT,
        }
    }

    /// Every node in document order (depth first, parents before children).
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes {
            fdt: *self,
            off: 0,
            depth: 0,
            cells: [Cells::DEFAULT; MAX_DEPTH],
            done: false,
        }
    }

    /// The node at `path`.
    ///
    /// `path` is absolute (`/cpus/cpu@0`) or starts with an alias
    /// (`serial0`, `serial0/child`). A component without a unit address
    /// (`psci`) matches a node named exactly so, or else the first node whose
    /// name before the `@` is that (`psci@0`); one with a unit address must
    /// match exactly.
    pub fn find_node(&self, path: &str) -> Option<Node<'a>> {
        let (mut node, rest) = if let Some(rest) = path.strip_prefix('/') {
            (self.root(), rest)
        } else {
            let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
            let target = self.alias(alias)?;
            // An alias must name an absolute path; no alias chains.
            if !target.starts_with('/') {
                return None;
            }
            (self.find_node(target)?, rest)
        };
        for component in rest.split('/').filter(|c| !c.is_empty()) {
            node = node.child(component)?;
        }
        Some(node)
    }

    /// The path an alias in `/aliases` stands for.
    pub fn alias(&self, name: &str) -> Option<&'a str> {
        self.root().child("aliases")?.property(name)?.as_str()
    }

    /// The node with `phandle` (or the legacy `linux,phandle`) `phandle`.
    pub fn node_by_phandle(&self, phandle: u32) -> Option<Node<'a>> {
        if phandle == 0 || phandle == u32::MAX {
            return None;
        }
        self.nodes().find(|n| n.phandle() == Some(phandle))
    }

    /// All nodes whose `compatible` lists any of `compatibles`, in document
    /// order.
    pub fn find_compatible<'s>(
        &self,
        compatibles: &'s [&'s str],
    ) -> impl Iterator<Item = Node<'a>> + use<'a, 's> {
        self.nodes()
            .filter(move |n| compatibles.iter().any(|c| n.is_compatible(c)))
    }

    /// The console device named by `/chosen/stdout-path` (or the legacy
    /// `linux,stdout-path`), resolved through `/aliases` when it names an
    /// alias, with the options after a `:` (such as `115200n8`), if any.
    pub fn stdout(&self) -> Option<(Node<'a>, Option<&'a str>)> {
        let chosen = self.root().child("chosen")?;
        let value = chosen
            .property("stdout-path")
            .or_else(|| chosen.property("linux,stdout-path"))?
            .as_str()?;
        let (path, options) = match value.split_once(':') {
            Some((path, options)) => (path, Some(options)),
            None => (value, None),
        };
        Some((self.find_node(path)?, options))
    }

    /// The ancestors of `node`, outermost (the root) first, or `None` when
    /// `node` is not in this tree. The root has no ancestors.
    pub fn ancestors(&self, node: &Node<'a>) -> Option<Ancestors<'a>> {
        let mut stack = [0usize; MAX_DEPTH];
        let mut nodes = self.nodes();
        while let Some(n) = nodes.next() {
            let depth = nodes.depth;
            let slot = stack.get_mut(depth.checked_sub(1)?)?;
            *slot = n.offset;
            if n.offset == node.offset {
                return Some(Ancestors {
                    fdt: *self,
                    offsets: stack,
                    len: depth - 1,
                    next: 0,
                });
            }
        }
        None
    }

    /// The parent of `node` (`None` for the root).
    pub fn parent(&self, node: &Node<'a>) -> Option<Node<'a>> {
        self.ancestors(node)?.last()
    }

    /// Translates `addr`, in the address space of `node`'s parent bus (what
    /// its `reg` holds), into a CPU physical address through the `ranges` of
    /// every bus above it. `None` when a bus has no `ranges` (its children are
    /// not memory mapped), no `ranges` entry covers the address, or cells are
    /// wider than 64 bits.
    pub fn translate(&self, node: &Node<'a>, addr: u64) -> Option<u64> {
        let ancestors = self.ancestors(node)?;
        let mut buses = [None; MAX_DEPTH];
        let mut count = 0;
        for a in ancestors {
            *buses.get_mut(count)? = Some(a);
            count += 1;
        }
        let mut addr = addr;
        // Walk from the node's parent up to (not including) the root.
        for i in (1..count).rev() {
            let bus = buses.get(i).copied().flatten()?;
            addr = bus.translate_child_address(addr)?;
        }
        Some(addr)
    }

    fn node_at(&self, offset: usize, parent_cells: Cells) -> Option<Node<'a>> {
        match self.token(offset) {
            Ok((Token::Begin(name), body)) => Some(Node {
                fdt: *self,
                offset,
                body,
                name,
                parent_cells,
            }),
            _ => None,
        }
    }

    /// The offset after the subtree whose `FDT_BEGIN_NODE` is at `offset`.
    fn skip_subtree(&self, offset: usize) -> Option<usize> {
        let mut off = offset;
        let mut depth = 0usize;
        loop {
            let (token, next) = self.token(off).ok()?;
            match token {
                Token::Begin(_) => depth += 1,
                Token::End => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(next);
                    }
                }
                Token::EndOfTree => return None,
                Token::Prop(_) | Token::Nop => {}
            }
            off = next;
        }
    }
}

impl<'a> Node<'a> {
    /// The node's full name, unit address included (`cpu@0`); empty for the
    /// root.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The name without the unit address (`cpu` for `cpu@0`).
    pub fn base_name(&self) -> &'a str {
        self.name.split('@').next().unwrap_or(self.name)
    }

    /// The unit address (`0` for `cpu@0`), if the name has one.
    pub fn unit_address(&self) -> Option<&'a str> {
        self.name.split_once('@').map(|(_, unit)| unit)
    }

    /// The node's properties, in order.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            fdt: self.fdt,
            off: self.body,
        }
    }

    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<Prop<'a>> {
        self.properties().find(|p| p.name == name)
    }

    /// Whether the node has a property called `name` (for flags such as
    /// `interrupt-controller`).
    pub fn has_property(&self, name: &str) -> bool {
        self.property(name).is_some()
    }

    /// The node's children, in order.
    pub fn children(&self) -> Children<'a> {
        Children {
            fdt: self.fdt,
            off: self.body,
            cells: self.child_cells(),
        }
    }

    /// The child matching `name`: exactly, or (when `name` has no `@`) by the
    /// name before its unit address; an exact match wins.
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        let mut fallback = None;
        for child in self.children() {
            if child.name == name {
                return Some(child);
            }
            if fallback.is_none() && !name.contains('@') && child.base_name() == name {
                fallback = Some(child);
            }
        }
        fallback
    }

    /// The `#address-cells`/`#size-cells` this node gives its children's
    /// `reg` (DTSpec defaults 2 and 1 when absent).
    pub fn child_cells(&self) -> Cells {
        let get = |name, default| {
            self.property(name)
                .and_then(|p| p.as_u32())
                .unwrap_or(default)
        };
        Cells {
            address: get("#address-cells", Cells::DEFAULT.address),
            size: get("#size-cells", Cells::DEFAULT.size),
        }
    }

    /// The parent's cells, which this node's `reg` is written in.
    pub fn parent_cells(&self) -> Cells {
        self.parent_cells
    }

    /// The `reg` entries as `(address, size)`, decoded with the parent's
    /// cells. `None` when there is no `reg`, its length is not a whole number
    /// of entries, or a cell count exceeds 2.
    pub fn reg(&self) -> Option<RegIter<'a>> {
        self.reg_with(self.parent_cells)
    }

    /// The `reg` entries decoded with explicit cells.
    pub fn reg_with(&self, cells: Cells) -> Option<RegIter<'a>> {
        RegIter::new(self.property("reg")?.value, cells)
    }

    /// The `compatible` strings.
    pub fn compatible(&self) -> Option<StrList<'a>> {
        self.property("compatible")?.as_strs()
    }

    /// Whether `compatible` lists `compat`.
    pub fn is_compatible(&self, compat: &str) -> bool {
        self.compatible()
            .is_some_and(|mut list| list.any(|c| c == compat))
    }

    /// `phandle` (or the legacy `linux,phandle`). `None` for 0 and
    /// `0xffffffff`, which the specification reserves (no node has them,
    /// as [`Fdt::node_by_phandle`] agrees), so an `interrupt-parent = <0>`
    /// never names a node that carries such a value.
    pub fn phandle(&self) -> Option<u32> {
        self.property("phandle")
            .or_else(|| self.property("linux,phandle"))?
            .as_u32()
            .filter(|&p| p != 0 && p != u32::MAX)
    }

    /// Whether `status` is absent, `"okay"` or `"ok"`.
    pub fn is_enabled(&self) -> bool {
        match self.property("status") {
            None => true,
            Some(p) => matches!(p.as_str(), Some("okay" | "ok")),
        }
    }

    /// `device_type`, if a string.
    pub fn device_type(&self) -> Option<&'a str> {
        self.property("device_type")?.as_str()
    }

    /// Translates an address from this bus's child address space into its
    /// parent's through `ranges`.
    fn translate_child_address(&self, addr: u64) -> Option<u64> {
        let ranges = self.property("ranges")?;
        if ranges.value.is_empty() {
            return Some(addr);
        }
        let child = self.child_cells();
        let parent = self.parent_cells;
        let entry_cells = child.address + parent.address + child.size;
        if child.address > 2 || parent.address > 2 || child.size > 2 {
            return None;
        }
        let entry_len = usize::try_from(entry_cells).ok()? * 4;
        if entry_len == 0 || !ranges.value.len().is_multiple_of(entry_len) {
            return None;
        }
        for entry in ranges.value.chunks_exact(entry_len) {
            let (child_base, rest) = read_cells(entry, child.address)?;
            let (parent_base, rest) = read_cells(rest, parent.address)?;
            let (size, _) = read_cells(rest, child.size)?;
            if let Some(off) = addr.checked_sub(child_base)
                && off < size
            {
                return parent_base.checked_add(off);
            }
        }
        None
    }
}

impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.fdt.structs, other.fdt.structs) && self.offset == other.offset
    }
}

impl Eq for Node<'_> {}

/// The memory reservation block's entries.
#[derive(Clone, Debug)]
pub struct Reservations<'a> {
    blob: &'a [u8],
    off: usize,
}

impl Iterator for Reservations<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let addr = be64(self.blob, self.off)?;
        let size = be64(self.blob, self.off.checked_add(8)?)?;
        if addr == 0 && size == 0 {
            return None;
        }
        self.off += 16;
        Some((addr, size))
    }
}

/// A node's properties.
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    fdt: Fdt<'a>,
    off: usize,
}

impl<'a> Iterator for Properties<'a> {
    type Item = Prop<'a>;

    fn next(&mut self) -> Option<Prop<'a>> {
        loop {
            let (token, next) = self.fdt.token(self.off).ok()?;
            match token {
                Token::Prop(p) => {
                    self.off = next;
                    return Some(p);
                }
                Token::Nop => self.off = next,
                Token::Begin(_) | Token::End | Token::EndOfTree => return None,
            }
        }
    }
}

/// A node's children.
#[derive(Clone, Debug)]
pub struct Children<'a> {
    fdt: Fdt<'a>,
    off: usize,
    cells: Cells,
}

impl<'a> Iterator for Children<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let (token, next) = self.fdt.token(self.off).ok()?;
            match token {
                Token::Prop(_) | Token::Nop => self.off = next,
                Token::Begin(_) => {
                    let node = self.fdt.node_at(self.off, self.cells)?;
                    self.off = self.fdt.skip_subtree(self.off)?;
                    return Some(node);
                }
                Token::End | Token::EndOfTree => return None,
            }
        }
    }
}

/// Every node of a tree, depth first.
#[derive(Clone, Debug)]
pub struct Nodes<'a> {
    fdt: Fdt<'a>,
    off: usize,
    /// Depth of the node last returned (the root is 1).
    depth: usize,
    /// `cells[d]`: the cells a node at depth `d + 1` gives its children.
    cells: [Cells; MAX_DEPTH],
    done: bool,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        while !self.done {
            let Ok((token, next)) = self.fdt.token(self.off) else {
                self.done = true;
                return None;
            };
            match token {
                Token::Begin(_) => {
                    let parent_cells = match self.depth.checked_sub(1) {
                        Some(d) => *self.cells.get(d)?,
                        None => Cells::DEFAULT,
                    };
                    let node = self.fdt.node_at(self.off, parent_cells)?;
                    *self.cells.get_mut(self.depth)? = node.child_cells();
                    self.depth += 1;
                    self.off = next;
                    return Some(node);
                }
                Token::End => {
                    self.depth = self.depth.saturating_sub(1);
                    self.off = next;
                }
                Token::Prop(_) | Token::Nop => self.off = next,
                Token::EndOfTree => self.done = true,
            }
        }
        None
    }
}

/// The ancestors of a node, outermost first (see [`Fdt::ancestors`]).
#[derive(Clone, Debug)]
pub struct Ancestors<'a> {
    fdt: Fdt<'a>,
    offsets: [usize; MAX_DEPTH],
    len: usize,
    next: usize,
}

impl<'a> Iterator for Ancestors<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        if self.next >= self.len {
            return None;
        }
        let offset = *self.offsets.get(self.next)?;
        // The cells of each ancestor's own parent: the one before it.
        let parent_cells = match self.next.checked_sub(1) {
            Some(i) => {
                let parent = self.fdt.node_at(*self.offsets.get(i)?, Cells::DEFAULT)?;
                parent.child_cells()
            }
            None => Cells::DEFAULT,
        };
        self.next += 1;
        self.fdt.node_at(offset, parent_cells)
    }
}
