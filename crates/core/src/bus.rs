//! A VM's MMIO device bus: which emulated device answers an access to a
//! guest-physical address.
//!
//! Every emulated device of a VM (the vGIC distributor and redistributors,
//! the PL011, virtio-mmio transports) registers its register windows when the
//! VM is built ([`MmioBus::insert`], overlaps refused). A trapped access is
//! routed by address ([`MmioBus::find`]) and carried out through one trait,
//! [`MmioDevice`]; the exit path never names a device, so adding one never
//! touches the dispatcher ([`crate::vmexit`]).
//!
//! A window may be *banked*: `count` equal banks of `stride` bytes, one
//! device answering all of them with the bank's index (the GICv3
//! redistributors, one per vCPU; the 32 virtio-mmio transports of QEMU
//! `virt`). A window carries a `region` tag of the device's choosing, so
//! one device can own several windows (the GIC's distributor and
//! redistributors).
//!
//! Devices never call back into the hypervisor: what an access does besides
//! answering (bytes for the console, an interrupt line that may have moved,
//! a queue notify to serve) is recorded in [`Effects`], which the glue
//! applies after the exit.
//!
//! Invariants: windows never overlap, and are kept sorted by start address.

use crate::access::AccessSize;
use crate::addr::{Ipa, IpaRange};
use crate::stats::Reason;

/// A device refused a register access: the architecture does not allow that
/// width or offset there. The guest gets a synchronous external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRefused;

/// Which device of the VM a window belongs to: an index the VM's
/// [`DeviceTable`] resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u8);

/// One access as a device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAccess {
    /// The vCPU that made it.
    pub vcpu: usize,
    /// The window's tag (see [`Window::region`]).
    pub region: u8,
    /// The bank within a banked window (0 otherwise).
    pub bank: u32,
    /// Offset of the first byte from the bank's start.
    pub offset: u64,
    /// Width.
    pub size: AccessSize,
}

/// Most console bytes one exit's device accesses can emit (a pair of
/// stores to a transmit register emits two, with room to spare).
pub const EFFECT_BYTES: usize = 8;

/// What device accesses did besides answering, for the glue to apply once
/// the exit's accesses are done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Console bytes, packed little-endian (one register, so that starting
    /// an exit with no effects costs no memory clearing).
    bytes: u64,
    len: u8,
    lost: u8,
    /// [`Effects::lines`] and [`Effects::notify`] as bits, so that whether
    /// there is anything to apply is one test with `len`.
    flags: u8,
}

/// [`Effects::flags`]: a device line may have moved.
const LINES: u8 = 1;
/// [`Effects::flags`]: device work is waiting.
const NOTIFY: u8 = 2;

impl Effects {
    /// Records one byte for the VM's console (counted as lost past
    /// [`EFFECT_BYTES`], which no single instruction reaches).
    pub fn console(&mut self, byte: u8) {
        if usize::from(self.len) < EFFECT_BYTES {
            self.bytes |= u64::from(byte) << (8 * self.len);
            self.len += 1;
        } else {
            self.lost = self.lost.saturating_add(1);
        }
    }

    /// The console bytes, in order.
    pub fn console_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..self.len).map(|i| (self.bytes >> (8 * i)) as u8)
    }

    /// How many console bytes there are.
    pub fn console_len(&self) -> usize {
        usize::from(self.len)
    }

    /// Console bytes that did not fit.
    pub fn lost_bytes(&self) -> u8 {
        self.lost
    }

    /// Whether anything must be applied.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        // `lost` counts only past a full `len`.
        (self.len | self.flags) == 0
    }

    /// Some device's interrupt line (or its input queue's room) may have
    /// changed: sample the VM's device lines before the guest runs again.
    pub fn lines(&self) -> bool {
        self.flags & LINES != 0
    }

    /// Records that a device's line may have moved ([`Effects::lines`]).
    pub fn set_lines(&mut self) {
        self.flags |= LINES;
    }

    /// [`Effects::set_lines`] if `moved`.
    pub fn lines_if(&mut self, moved: bool) {
        self.flags |= u8::from(moved) * LINES;
    }

    /// A device was handed work that needs the VM's memory (a virtio queue
    /// notify, or a driver's reset its backends must hear of): run the
    /// VM's pending device work (the transport's `process`) before the
    /// guest runs again.
    pub fn notify(&self) -> bool {
        self.flags & NOTIFY != 0
    }

    /// Records device work to run ([`Effects::notify`]).
    pub fn set_notify(&mut self) {
        self.flags |= NOTIFY;
    }
}

/// An emulated device's registers.
pub trait MmioDevice {
    /// A read: the value, in the low `access.size` bytes.
    fn read(&mut self, access: &DeviceAccess, fx: &mut Effects) -> Result<u64, AccessRefused>;
    /// A write of the low `access.size` bytes of `value`.
    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused>;
}

/// The VM's devices, by [`DeviceId`].
///
/// The exit path calls [`DeviceTable::read`] and [`DeviceTable::write`]; a
/// table may override them to call its devices without the `dyn` call
/// (the hypervisor's does: its devices' register reads are then inlined
/// into the exit path, and the access stays in registers).
pub trait DeviceTable {
    /// The device `id`, if the VM has it.
    fn device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice>;

    /// A read of device `id` ([`MmioDevice::read`]); refused if the VM has
    /// no such device.
    #[inline]
    fn read(
        &mut self,
        id: DeviceId,
        access: &DeviceAccess,
        fx: &mut Effects,
    ) -> Result<u64, AccessRefused> {
        self.device(id).ok_or(AccessRefused)?.read(access, fx)
    }

    /// A write of device `id` ([`MmioDevice::write`]); refused if the VM
    /// has no such device.
    #[inline]
    fn write(
        &mut self,
        id: DeviceId,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        self.device(id)
            .ok_or(AccessRefused)?
            .write(access, value, fx)
    }
}

/// One registered register window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First address of the first bank.
    pub start: Ipa,
    /// Bytes per bank.
    pub stride: u64,
    /// Number of banks (1 for a plain window).
    pub count: u32,
    /// The device that answers.
    pub device: DeviceId,
    /// The device's tag for this window.
    pub region: u8,
    /// The exit-statistics reasons a read and a write of this window count
    /// under.
    pub reasons: [Reason; 2],
}

impl Window {
    /// A plain window of `range.size` bytes, counted as `reasons` (read,
    /// write).
    pub const fn plain(
        range: IpaRange,
        device: DeviceId,
        region: u8,
        reasons: [Reason; 2],
    ) -> Self {
        Self {
            start: range.start,
            stride: range.size,
            count: 1,
            device,
            region,
            reasons,
        }
    }

    /// `count` banks of `stride` bytes from `start`, counted as `reasons`.
    pub const fn banked(
        start: Ipa,
        stride: u64,
        count: u32,
        device: DeviceId,
        region: u8,
        reasons: [Reason; 2],
    ) -> Self {
        Self {
            start,
            stride,
            count,
            device,
            region,
            reasons,
        }
    }

    /// The addresses the window covers; `None` if they overflow.
    pub fn range(&self) -> Option<IpaRange> {
        let size = self.stride.checked_mul(u64::from(self.count))?;
        IpaRange::new(self.start, size)
    }
}

/// Why a window could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The window overlaps one already registered (that one is given).
    Overlap(Window),
    /// The window is empty, or its end overflows the address space.
    BadWindow,
    /// The bus holds [`MAX_WINDOWS`] windows already.
    Full,
}

/// Most windows one bus holds.
pub const MAX_WINDOWS: usize = 16;

/// Where an access landed: the device, the window's tag, the bank, and the
/// bank's addresses (an access must lie wholly inside them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The device that answers.
    pub device: DeviceId,
    /// The window's tag.
    pub region: u8,
    /// The bank's index.
    pub bank: u32,
    /// The bank's addresses.
    pub bank_range: IpaRange,
    /// The reason a read counts under.
    pub read_reason: Reason,
    /// The reason a write counts under.
    pub write_reason: Reason,
}

/// A VM's device windows, sorted by address, never overlapping.
#[derive(Clone, Copy, Debug)]
pub struct MmioBus {
    windows: [Window; MAX_WINDOWS],
    /// `end` of each window, cached for the lookup; `u64::MAX` past the
    /// last, so that the scan needs no count.
    ends: [u64; MAX_WINDOWS],
    len: usize,
}

const EMPTY: Window = Window {
    start: Ipa(0),
    stride: 0,
    count: 0,
    device: DeviceId(0),
    region: 0,
    reasons: [Reason::Undef; 2],
};

impl Default for MmioBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MmioBus {
    /// An empty bus.
    pub const fn new() -> Self {
        Self {
            windows: [EMPTY; MAX_WINDOWS],
            ends: [u64::MAX; MAX_WINDOWS],
            len: 0,
        }
    }

    /// Registers `w`, refusing an empty or overflowing window and one that
    /// overlaps a window already registered.
    pub fn insert(&mut self, w: Window) -> Result<(), BusError> {
        let range = w
            .range()
            .filter(|r| r.size > 0)
            .ok_or(BusError::BadWindow)?;
        if let Some(other) = self
            .windows()
            .iter()
            .find(|o| o.range().is_some_and(|r: IpaRange| r.overlaps(&range)))
        {
            return Err(BusError::Overlap(*other));
        }
        if self.len == MAX_WINDOWS {
            return Err(BusError::Full);
        }
        let at = self.windows().partition_point(|o| o.start.0 < w.start.0);
        self.windows.copy_within(at..self.len, at + 1);
        self.ends.copy_within(at..self.len, at + 1);
        self.windows[at] = w;
        self.ends[at] = range.end().0;
        self.len += 1;
        Ok(())
    }

    /// The registered windows, by address.
    pub fn windows(&self) -> &[Window] {
        &self.windows[..self.len]
    }

    /// The window, bank and device that `ipa` falls in.
    #[inline(always)]
    pub fn find(&self, ipa: Ipa) -> Option<Hit> {
        // A handful of windows: a scan of the cached ends, which LLVM
        // unrolls (each window one load and compare, and the window found
        // at a constant offset). The ends past the last window are
        // `u64::MAX`, so the scan stops there at the latest.
        let i = self.ends.iter().position(|&end| ipa.0 < end)?;
        if i >= self.len {
            return None;
        }
        let w = &self.windows[i];
        let off = ipa.0.checked_sub(w.start.0)?;
        // A plain window is one bank of `stride` bytes: the division gives
        // 0 (one instruction, where telling the cases apart took four).
        let bank = off / w.stride;
        let start = Ipa(w.start.0 + bank * w.stride);
        Some(Hit {
            device: w.device,
            region: w.region,
            bank: bank as u32,
            bank_range: IpaRange {
                start,
                size: w.stride,
            },
            read_reason: w.reasons[0],
            write_reason: w.reasons[1],
        })
    }
}

#[cfg(test)]
mod tests;
