//! One VM's transports ([`crate::slots::VmVirtio`]): its devices behind
//! the transports the bundle names, empty transports answering as
//! `virt`'s unbacked ones, and what a notify leaves for the glue.

use stratum_abi::bundle::{Virtio, VirtioKind};
use stratum_core::access::AccessSize;
use stratum_core::addr::Ipa;
use stratum_core::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};

use super::driver::*;
use crate::blk::BlkDevice;
use crate::mem::{GuestMemory, SliceMemory};
use crate::slots::{VmVirtio, Work};
use crate::spec::{feature, mmio};
use crate::transport::Transport;

/// Transport `n` of a VM, as a device of its own (the driver helpers
/// address bank 0).
struct Bank<'a>(&'a mut VmVirtio, u32);

impl MmioDevice for Bank<'_> {
    fn read(&mut self, a: &DeviceAccess, fx: &mut Effects) -> Result<u64, AccessRefused> {
        self.0.read(&DeviceAccess { bank: self.1, ..*a }, fx)
    }

    fn write(&mut self, a: &DeviceAccess, v: u64, fx: &mut Effects) -> Result<(), AccessRefused> {
        self.0.write(&DeviceAccess { bank: self.1, ..*a }, v, fx)
    }
}

fn devices() -> Vec<Virtio> {
    vec![
        Virtio {
            vm: 0,
            transport: 0,
            kind: VirtioKind::Console,
        },
        Virtio {
            vm: 0,
            transport: 1,
            kind: VirtioKind::Vsock {
                cid: 3,
                peers: 0b10,
            },
        },
        Virtio {
            vm: 0,
            transport: 2,
            kind: VirtioKind::Net {
                network: 4,
                port: 1,
                mac: [0x02, 0, 0, 0, 0, 7],
            },
        },
        Virtio {
            vm: 0,
            transport: 4,
            kind: VirtioKind::Blk {
                disk: 7,
                sectors: 0x9000,
                readonly: true,
            },
        },
    ]
}

#[test]
fn each_device_sits_behind_its_transport_and_the_rest_are_empty() {
    let mut v = VmVirtio::new(devices());
    let disk = devices()[3];
    let storage = || Box::leak(Box::new(Transport::new(BlkDevice::new(1, false, b""))));
    assert!(v.attach_disk(disk, storage()));
    assert!(
        !v.attach_disk(disk, storage()),
        "its transport is taken now"
    );
    assert!(!v.attach_disk(devices()[0], storage()), "not a disk");
    let ids: Vec<u32> = (0..6)
        .map(|n| rd(&mut Bank(&mut v, n), mmio::DEVICE_ID))
        .collect();
    assert_eq!(ids, [3, 19, 1, 0, 2, 0]);
    // The disk: its capacity, read-only, and its number for the link.
    assert_eq!(rd(&mut Bank(&mut v, 4), mmio::CONFIG), 0x9000);
    assert_eq!(rd(&mut Bank(&mut v, 4), mmio::CONFIG + 4), 0);
    assert_eq!(v.disk_numbers().collect::<Vec<_>>(), [7]);
    assert!(
        v.disk_mut(7)
            .is_some_and(|t| t.device().capacity() == 0x9000)
    );
    assert!(v.disk_mut(6).is_none());
    assert!(v.has_device(2) && !v.has_device(3));
    assert_eq!(v.vsock_cid(), Some(3));
    assert_eq!(v.nic_count(), 1);
    assert_eq!(
        v.nic(0),
        Some((4, 1, crate::net::Mac([0x02, 0, 0, 0, 0, 7])))
    );
    assert!(v.nic_on_mut(4).is_some() && v.nic_on_mut(5).is_none());

    // An empty transport: what QEMU's unbacked ones answer.
    let mut e = Bank(&mut v, 31);
    assert_eq!(rd(&mut e, mmio::MAGIC_VALUE), mmio::MAGIC);
    assert_eq!(rd(&mut e, mmio::VERSION_REG), 2);
    assert_eq!(rd(&mut e, mmio::VENDOR_ID), mmio::VENDOR);
    assert_eq!(rd(&mut e, mmio::DEVICE_ID), 0);
    let fx = wr(&mut e, mmio::STATUS, 0xf);
    assert!(fx.is_empty());
    assert_eq!(rd(&mut e, mmio::STATUS), 0, "writes are ignored");
    assert_eq!(read_sized(&mut e, mmio::MAGIC_VALUE, AccessSize::Byte), 0);
    assert_eq!(rd(&mut Bank(&mut v, 40), mmio::MAGIC_VALUE), mmio::MAGIC);
    assert_eq!(v.lines(), 0);
}

#[test]
fn a_vm_without_records_has_32_empty_transports() {
    let mut v = VmVirtio::default();
    for n in 0..32 {
        assert_eq!(rd(&mut Bank(&mut v, n), mmio::DEVICE_ID), 0);
        assert!(!v.has_device(n as usize));
    }
    assert_eq!(v.vsock_cid(), None);
    assert!(v.vsock_mut().is_none());
    let mut ram = ram();
    assert!(v.process(&mut memory(&mut ram)).is_empty());
}

#[test]
fn work_adds_up() {
    let mut w = Work {
        nics: 0b01,
        ..Work::default()
    };
    w |= Work {
        nics: 0b10,
        vsock: true,
        ..Work::default()
    };
    assert_eq!(
        w,
        Work {
            nics: 0b11,
            vsock: true,
            ..Work::default()
        }
    );
    w |= Work::default();
    assert!(!w.is_empty() && !w.console_output && !w.vsock_reset);
}

#[test]
fn a_disk_drivers_reset_is_left_for_the_glue_once() {
    let mut v = VmVirtio::new(devices());
    let storage = Box::leak(Box::new(Transport::new(BlkDevice::new(1, false, b""))));
    assert!(v.attach_disk(devices()[3], storage));
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    assert!(v.process(&mut mem).is_empty(), "attaching is no reset");
    let fx = wr(&mut Bank(&mut v, 4), mmio::STATUS, 0);
    assert!(fx.notify(), "the glue runs the device work at once");
    assert_eq!(
        v.process(&mut mem),
        Work {
            disk_resets: 1 << 7,
            ..Work::default()
        },
        "disk 7's driver reset it"
    );
    assert!(v.process(&mut mem).is_empty(), "said once");
}

#[test]
fn records_that_clash_are_left_out() {
    let mut d = devices();
    // A second device on transport 0, and one past the 32.
    d.push(Virtio {
        vm: 0,
        transport: 0,
        kind: VirtioKind::Vsock { cid: 9, peers: 0 },
    });
    d.push(Virtio {
        vm: 0,
        transport: 32,
        kind: VirtioKind::Console,
    });
    let mut v = VmVirtio::new(d);
    assert_eq!(rd(&mut Bank(&mut v, 0), mmio::DEVICE_ID), 3);
    assert_eq!(v.vsock_cid(), Some(3));
}

#[test]
fn console_output_and_a_nic_kick_are_left_for_the_glue() {
    let mut v = VmVirtio::new(devices());
    let mut ram = ram();
    let rx = DriverQueue::at(RAM_BASE, 16);
    let mut tx = DriverQueue::at(rx.end().next_multiple_of(16), 16);
    {
        let mut c = Bank(&mut v, 0);
        assert!(negotiate(&mut c, feature::VERSION_1));
        rx.setup(&mut c, 0);
        tx.setup(&mut c, 1);
        driver_ok(&mut c);
    }
    let text = b"hvc0 says hello\n";
    let at = RAM_BASE + 0x8000;
    let mut mem = SliceMemory::new(Ipa(RAM_BASE), &mut ram);
    mem.write(Ipa(at), text).unwrap();
    let head = tx.chain(&mut mem, &[(at, text.len() as u32, false)]);
    tx.publish(&mut mem, head);
    let fx = wr(&mut Bank(&mut v, 0), mmio::QUEUE_NOTIFY, 1);
    assert!(fx.notify(), "a notify is served after the access");
    let work = v.process(&mut mem);
    assert_eq!(
        work,
        Work {
            console_output: true,
            ..Work::default()
        }
    );
    let mut out = [0u8; 64];
    let n = v.take_console_output(&mut out, &mut mem);
    assert_eq!(&out[..n], text);
    assert_eq!(tx.take_used(&mem).len(), 1, "the chain went back used");
    assert!(v.lines() & 1 != 0, "the console's line is up");

    // The NIC: a transmit notify only records the kick.
    let nrx = DriverQueue::at(RAM_BASE + 0x2000, 16);
    let ntx = DriverQueue::at(nrx.end().next_multiple_of(16), 16);
    {
        let mut nic = Bank(&mut v, 2);
        assert!(negotiate(&mut nic, feature::VERSION_1));
        nrx.setup(&mut nic, 0);
        ntx.setup(&mut nic, 1);
        driver_ok(&mut nic);
        wr(&mut nic, mmio::QUEUE_NOTIFY, 1);
    }
    let work = v.process(&mut mem);
    assert_eq!(work.nics, 1);
    assert!(!work.console_output && !work.vsock);
    // After a restart the devices are back, fresh.
    v.reset();
    assert_eq!(rd(&mut Bank(&mut v, 0), mmio::STATUS), 0);
    assert_eq!(
        v.nic(0).map(|n| n.2),
        Some(crate::net::Mac([0x02, 0, 0, 0, 0, 7]))
    );
    assert_eq!(v.lines(), 0);
}
