//! A row of transports answering one banked bus window: QEMU `virt`'s 32
//! virtio-mmio transports, 0x200 bytes apart from 0x0A00_0000, are one
//! window of 32 banks on the VM's bus (`core::bus::Window::banked`), and
//! bank `n` is transport `n` here.
//!
//! Each transport keeps its own registers, queues, line and counters; the
//! bank only routes accesses by bank index and serves or samples all of
//! them at once. Heterogeneous devices share one device type `D` (an enum
//! of the VM's devices, [`crate::device::NoDevice`] among them).

use stratum_core::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};

use crate::device::VirtioDevice;
use crate::mem::GuestMemory;
use crate::transport::Transport;

/// `N` transports, bank `n` answered by transport `n`.
#[derive(Debug)]
pub struct TransportBank<D, const N: usize> {
    transports: [Transport<D>; N],
}

impl<D: VirtioDevice, const N: usize> TransportBank<D, N> {
    /// The bank of `transports`, in bank order.
    pub fn new(transports: [Transport<D>; N]) -> Self {
        Self { transports }
    }

    /// Transport `n`.
    pub fn get(&self, n: usize) -> Option<&Transport<D>> {
        self.transports.get(n)
    }

    /// Transport `n`, to feed its device input from outside the guest.
    pub fn get_mut(&mut self, n: usize) -> Option<&mut Transport<D>> {
        self.transports.get_mut(n)
    }

    /// The transports, in bank order.
    pub fn iter(&self) -> impl Iterator<Item = &Transport<D>> {
        self.transports.iter()
    }

    /// Serves every transport with notified queues
    /// ([`Transport::process`]); whether any line is asserted afterwards.
    pub fn process(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut any = false;
        for t in &mut self.transports {
            if t.has_pending() {
                t.process(mem);
            }
            any |= t.line();
        }
        any
    }

    /// The transports' interrupt lines, bank `n` as bit `n` (banks past 63
    /// are not shown).
    pub fn lines(&self) -> u64 {
        self.transports
            .iter()
            .take(64)
            .enumerate()
            .fold(0, |acc, (n, t)| acc | (u64::from(t.line()) << n))
    }

    fn bank(&mut self, access: &DeviceAccess) -> Option<&mut Transport<D>> {
        usize::try_from(access.bank)
            .ok()
            .and_then(|n| self.transports.get_mut(n))
    }
}

impl<D: VirtioDevice, const N: usize> MmioDevice for TransportBank<D, N> {
    fn read(&mut self, access: &DeviceAccess, fx: &mut Effects) -> Result<u64, AccessRefused> {
        // A bank past the row cannot come from a window of N banks; it
        // reads as nothing rather than faulting.
        match self.bank(access) {
            Some(t) => t.read(access, fx),
            None => Ok(0),
        }
    }

    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        match self.bank(access) {
            Some(t) => t.write(access, value, fx),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use stratum_core::access::AccessSize;
    use stratum_core::addr::Ipa;
    use stratum_core::bus::{DeviceId, MmioBus, Window};
    use stratum_core::stats::Reason;

    use super::*;
    use crate::spec::{device_id, feature, mmio, status};
    use crate::tests::driver::{DriverQueue, OnNotify, TestDevice, memory, ram};

    /// QEMU `virt`'s first transport.
    const BASE: u64 = 0x0a00_0000;

    /// Either nothing or a test device, as a VM's device enum would be.
    #[derive(Debug)]
    enum Slot {
        Empty(crate::device::NoDevice),
        Test(TestDevice),
    }

    impl VirtioDevice for Slot {
        fn device_id(&self) -> u32 {
            match self {
                Slot::Empty(d) => d.device_id(),
                Slot::Test(d) => d.device_id(),
            }
        }
        fn features(&self) -> u64 {
            match self {
                Slot::Empty(d) => d.features(),
                Slot::Test(d) => d.features(),
            }
        }
        fn queue_count(&self) -> u16 {
            match self {
                Slot::Empty(d) => d.queue_count(),
                Slot::Test(d) => d.queue_count(),
            }
        }
        fn queue_max_size(&self, q: u16) -> u16 {
            match self {
                Slot::Empty(d) => d.queue_max_size(q),
                Slot::Test(d) => d.queue_max_size(q),
            }
        }
        fn notify(
            &mut self,
            q: u16,
            queues: &mut crate::device::Queues<'_>,
            mem: &mut dyn GuestMemory,
        ) -> Result<(), crate::queue::QueueError> {
            match self {
                Slot::Empty(d) => d.notify(q, queues, mem),
                Slot::Test(d) => d.notify(q, queues, mem),
            }
        }
        fn reset(&mut self) {
            match self {
                Slot::Empty(d) => d.reset(),
                Slot::Test(d) => d.reset(),
            }
        }
    }

    /// The 32-bit access at `ipa` as the exit path finds it on the bus.
    fn word_access(bus: &MmioBus, ipa: u64) -> DeviceAccess {
        let hit = bus.find(Ipa(ipa)).expect("inside the window");
        DeviceAccess {
            vcpu: 0,
            region: hit.region,
            bank: hit.bank,
            offset: ipa - hit.bank_range.start.0,
            size: AccessSize::Word,
        }
    }

    /// Reads through the bus as the exit path does: find, then the device.
    fn bus_read(bus: &MmioBus, bank: &mut TransportBank<Slot, 32>, ipa: u64) -> u32 {
        bank.read(&word_access(bus, ipa), &mut Effects::default())
            .expect("never refused") as u32
    }

    fn bus_write(bus: &MmioBus, bank: &mut TransportBank<Slot, 32>, ipa: u64, v: u32) -> Effects {
        let access = word_access(bus, ipa);
        let mut fx = Effects::default();
        bank.write(&access, u64::from(v), &mut fx)
            .expect("never refused");
        fx
    }

    #[test]
    fn thirty_two_transports_on_one_banked_window_as_on_virt() {
        let mut bus = MmioBus::new();
        bus.insert(Window::banked(
            Ipa(BASE),
            mmio::WINDOW,
            32,
            DeviceId(3),
            0,
            [Reason::Undef; 2],
        ))
        .expect("one window");
        let mut bank = TransportBank::new(core::array::from_fn(|n| {
            Transport::new(if n == 5 {
                let mut d = TestDevice::new(1);
                d.on_notify = OnNotify::Drain;
                Slot::Test(d)
            } else {
                Slot::Empty(crate::device::NoDevice)
            })
        }));
        // Every transport answers with the magic; only bank 5 has a device.
        for n in 0..32u64 {
            let at = BASE + n * mmio::WINDOW;
            assert_eq!(
                bus_read(&bus, &mut bank, at + mmio::MAGIC_VALUE),
                mmio::MAGIC
            );
            assert_eq!(bus_read(&bus, &mut bank, at + mmio::VERSION_REG), 2);
            let id = bus_read(&bus, &mut bank, at + mmio::DEVICE_ID);
            assert_eq!(id, if n == 5 { 42 } else { device_id::NONE }, "bank {n}");
        }
        // Drive bank 5 to a used buffer; its line, and only its, rises.
        let t5 = BASE + 5 * mmio::WINDOW;
        let mut ram = ram();
        let mut mem = memory(&mut ram);
        let mut dq = DriverQueue::at(crate::tests::driver::RAM_BASE, 8);
        bus_write(
            &bus,
            &mut bank,
            t5 + mmio::STATUS,
            status::ACKNOWLEDGE | status::DRIVER,
        );
        bus_write(&bus, &mut bank, t5 + mmio::DRIVER_FEATURES_SEL, 1);
        bus_write(
            &bus,
            &mut bank,
            t5 + mmio::DRIVER_FEATURES,
            (feature::VERSION_1 >> 32) as u32,
        );
        bus_write(
            &bus,
            &mut bank,
            t5 + mmio::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        dq.setup(bank.get_mut(5).expect("bank 5"), 0);
        bus_write(
            &bus,
            &mut bank,
            t5 + mmio::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        let head = dq.chain(
            &mut mem,
            &[(crate::tests::driver::RAM_BASE + 0x8000, 8, true)],
        );
        dq.publish(&mut mem, head);
        assert!(bus_write(&bus, &mut bank, t5 + mmio::QUEUE_NOTIFY, 0).notify);
        assert!(bank.process(&mut mem));
        assert_eq!(bank.lines(), 1 << 5);
        assert_eq!(dq.take_used(&mem), [(u32::from(head), 0)]);
        // A notify at an empty transport is dropped there, and counted there.
        assert!(!bus_write(&bus, &mut bank, BASE + mmio::QUEUE_NOTIFY, 0).notify);
        assert_eq!(bank.get(0).map(|t| t.counters().refused_notifies), Some(1));
        assert_eq!(bank.iter().map(|t| t.counters().notifies).sum::<u32>(), 1);
    }

    #[test]
    fn a_bank_past_the_row_reads_as_nothing() {
        let mut bank: TransportBank<crate::device::NoDevice, 2> =
            TransportBank::new(core::array::from_fn(|_| {
                Transport::new(crate::device::NoDevice)
            }));
        let access = DeviceAccess {
            vcpu: 0,
            region: 0,
            bank: 2,
            offset: mmio::MAGIC_VALUE,
            size: AccessSize::Word,
        };
        let mut fx = Effects::default();
        assert_eq!(bank.read(&access, &mut fx), Ok(0));
        assert_eq!(bank.write(&access, 0, &mut fx), Ok(()));
        assert!(fx.is_empty());
    }
}
