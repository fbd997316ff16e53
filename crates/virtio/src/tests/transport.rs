//! The register file, one register (or rule) per test.

use stratum_core::access::AccessSize::{Byte, Double, Half, Word};
use stratum_core::addr::Ipa;

use super::driver::*;
use crate::device::NoDevice;
use crate::queue::QueueError;
use crate::spec::{feature, mmio, status};
use crate::transport::{Transport, TransportError};

#[test]
fn identity_registers() {
    let mut t = Transport::new(TestDevice::new(2));
    assert_eq!(rd(&mut t, mmio::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&mut t, mmio::VERSION_REG), 2);
    assert_eq!(rd(&mut t, mmio::DEVICE_ID), 42);
    assert_eq!(rd(&mut t, mmio::VENDOR_ID), mmio::VENDOR);
    assert_eq!(t.counters().bad_accesses, 0);
}

#[test]
fn a_transport_with_no_device_reads_device_id_0_and_has_no_queues() {
    let mut t = Transport::new(NoDevice);
    assert_eq!(rd(&mut t, mmio::MAGIC_VALUE), mmio::MAGIC);
    assert_eq!(rd(&mut t, mmio::VERSION_REG), 2);
    assert_eq!(rd(&mut t, mmio::DEVICE_ID), 0);
    for q in 0..4 {
        wr(&mut t, mmio::QUEUE_SEL, q);
        assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 0);
        assert_eq!(rd(&mut t, mmio::QUEUE_READY), 0);
    }
    // A driver that tries anyway gets nothing and breaks nothing.
    assert!(negotiate(&mut t, feature::VERSION_1));
    driver_ok(&mut t);
    let fx = wr(&mut t, mmio::QUEUE_NOTIFY, 0);
    assert!(!fx.notify());
    assert_eq!(t.take_error(), Some(TransportError::NotifyNoSuchQueue(0)));
    let mut ram = ram();
    assert!(!t.process(&mut memory(&mut ram)));
}

#[test]
fn device_features_are_the_devices_plus_the_transports_by_selector() {
    let mut t = Transport::new(TestDevice::new(1));
    // A device cannot offer reserved bits itself.
    t.device_mut().features = (1 << 5) | (1 << 33) | (1 << 50);
    let offered = (1 << 5) | (1 << 50) | feature::TRANSPORT;
    assert_eq!(device_features(&mut t), offered);
    assert_eq!(t.offered_features(), offered);
    wr(&mut t, mmio::DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(&mut t, mmio::DEVICE_FEATURES), offered as u32);
    wr(&mut t, mmio::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut t, mmio::DEVICE_FEATURES), (offered >> 32) as u32);
    wr(&mut t, mmio::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&mut t, mmio::DEVICE_FEATURES), 0);
    assert!(offered & feature::VERSION_1 != 0);
    assert!(offered & feature::RING_INDIRECT_DESC != 0);
    assert!(offered & feature::RING_EVENT_IDX != 0);
}

#[test]
fn features_ok_sticks_only_for_a_subset_with_version_1() {
    let mut t = Transport::new(TestDevice::new(1));
    // Without VERSION_1: a legacy driver, refused.
    assert!(!negotiate(&mut t, 1 << 5));
    // A bit the device did not offer.
    assert!(!negotiate(&mut t, feature::VERSION_1 | (1 << 6)));
    assert_eq!(t.counters().ignored_writes, 2);
    // A subset with VERSION_1.
    let want = feature::VERSION_1 | feature::RING_EVENT_IDX | (1 << 5);
    assert!(negotiate(&mut t, want));
    assert_eq!(t.driver_features(), want);
    // No changing the features once accepted.
    write_driver_features(&mut t, feature::VERSION_1);
    assert_eq!(t.driver_features(), want);
    assert_eq!(t.counters().ignored_writes, 4);
    // Past bit 63 nothing can be accepted; writing 0 there is harmless.
    wr(&mut t, mmio::STATUS, 0);
    wr(&mut t, mmio::DRIVER_FEATURES_SEL, 2);
    wr(&mut t, mmio::DRIVER_FEATURES, 0);
    assert_eq!(t.counters().ignored_writes, 4);
    wr(&mut t, mmio::DRIVER_FEATURES, 1);
    assert_eq!(t.counters().ignored_writes, 5);
}

#[test]
fn a_device_may_refuse_a_combination_of_features() {
    let mut device = TestDevice::new(1);
    device.features = (1 << 5) | (1 << 6);
    device.refuses = 1 << 6;
    let mut t = Transport::new(device);
    assert!(!negotiate(&mut t, feature::VERSION_1 | (1 << 5) | (1 << 6)));
    assert!(negotiate(&mut t, feature::VERSION_1 | (1 << 5)));
}

#[test]
fn queue_num_max_is_capped_at_the_split_rings_limit() {
    let mut device = TestDevice::new(2);
    device.max_sizes = vec![u16::MAX, 256];
    let mut t = Transport::new(device);
    wr(&mut t, mmio::QUEUE_SEL, 0);
    assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 32768);
    wr(&mut t, mmio::QUEUE_SEL, 1);
    assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 256);
}

#[test]
fn driver_ok_needs_features_ok_and_activates_the_device() {
    let mut t = Transport::new(TestDevice::new(1));
    wr(&mut t, mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(
        &mut t,
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(
        rd(&mut t, mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    assert!(!t.is_live());
    assert_eq!(t.device().activated, None);
    assert!(negotiate(&mut t, feature::VERSION_1 | (1 << 5)));
    driver_ok(&mut t);
    assert!(t.is_live());
    assert_eq!(t.device().activated, Some(feature::VERSION_1 | (1 << 5)));
    assert_eq!(
        rd(&mut t, mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
}

#[test]
fn status_bits_are_only_set_never_cleared_and_device_bits_are_not_the_drivers() {
    let mut t = Transport::new(TestDevice::new(1));
    wr(&mut t, mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    // Clearing DRIVER: ignored whole.
    wr(&mut t, mmio::STATUS, status::ACKNOWLEDGE | status::FAILED);
    assert_eq!(
        rd(&mut t, mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    // DEVICE_NEEDS_RESET is the device's to set.
    wr(
        &mut t,
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DEVICE_NEEDS_RESET,
    );
    assert_eq!(
        rd(&mut t, mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    assert_eq!(t.counters().ignored_writes, 2);
    // FAILED: the driver gave up; the bit reads back.
    wr(
        &mut t,
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
    );
    assert_eq!(rd(&mut t, mmio::STATUS) & status::FAILED, status::FAILED);
}

#[test]
fn writing_status_0_resets_transport_device_and_queues() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    let mut t = live_transport(2, feature::RING_EVENT_IDX, &dq);
    t.config_changed();
    wr(&mut t, mmio::QUEUE_SEL, 1);
    wr(&mut t, mmio::DEVICE_FEATURES_SEL, 1);
    let generation = rd(&mut t, mmio::CONFIG_GENERATION);
    let resets = t.device().resets;
    assert!(t.line());
    let fx = wr(&mut t, mmio::STATUS, 0);
    assert!(fx.lines(), "the line may have fallen");
    assert!(
        fx.notify(),
        "the device work runs: backends hear of the reset"
    );
    assert!(!t.line());
    assert_eq!(rd(&mut t, mmio::STATUS), 0);
    assert_eq!(rd(&mut t, mmio::INTERRUPT_STATUS), 0);
    assert_eq!(t.driver_features(), 0);
    assert_eq!(t.device().resets, resets + 1);
    assert_eq!(t.device().activated, None);
    assert_ne!(rd(&mut t, mmio::CONFIG_GENERATION), generation);
    // The selectors are back at 0 and queue 0 is not ready, at its maximum.
    assert_eq!(rd(&mut t, mmio::QUEUE_READY), 0);
    assert!(!t.queue(0).is_ready());
    assert_eq!(t.queue(0).size(), 16);
    assert_eq!(
        rd(&mut t, mmio::DEVICE_FEATURES),
        t.offered_features() as u32
    );
}

#[test]
fn queue_registers_program_the_selected_queue() {
    let mut device = TestDevice::new(2);
    device.max_sizes = vec![16, 64];
    let mut t = Transport::new(device);
    wr(&mut t, mmio::QUEUE_SEL, 1);
    assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 64);
    wr(&mut t, mmio::QUEUE_SEL, 0);
    assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 16);
    let dq = DriverQueue::at(0x1_2345_0000, 8);
    dq.setup(&mut t, 1);
    let q = t.queue(1);
    assert!(q.is_ready());
    assert_eq!(q.size(), 8);
    assert_eq!(q.areas(), [Ipa(dq.desc), Ipa(dq.avail), Ipa(dq.used)]);
    assert_eq!(rd(&mut t, mmio::QUEUE_READY), 1);
    // While ready, its configuration cannot change.
    wr(&mut t, mmio::QUEUE_NUM, 4);
    wr(&mut t, mmio::QUEUE_DESC_LOW, 0);
    assert_eq!(t.queue(1), q);
    assert_eq!(t.counters().ignored_writes, 2);
    // Stopped, it can.
    wr(&mut t, mmio::QUEUE_READY, 0);
    assert_eq!(rd(&mut t, mmio::QUEUE_READY), 0);
    wr(&mut t, mmio::QUEUE_NUM, 4);
    assert_eq!(t.queue(1).size(), 4);
    // Other values of QueueReady are not the spec's.
    wr(&mut t, mmio::QUEUE_READY, 2);
    assert_eq!(t.counters().ignored_writes, 3);
    assert!(!t.queue(1).is_ready());
}

#[test]
fn a_queue_the_device_lacks_reads_0_and_ignores_writes() {
    let mut t = Transport::new(TestDevice::new(2));
    for sel in [2, 8, 1000, u32::MAX] {
        wr(&mut t, mmio::QUEUE_SEL, sel);
        assert_eq!(rd(&mut t, mmio::QUEUE_NUM_MAX), 0);
        assert_eq!(rd(&mut t, mmio::QUEUE_READY), 0);
        wr(&mut t, mmio::QUEUE_NUM, 8);
        wr(&mut t, mmio::QUEUE_DEVICE_HIGH, 8);
        wr(&mut t, mmio::QUEUE_READY, 1);
    }
    assert_eq!(t.counters().ignored_writes, 12);
    assert_eq!(t.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn a_queue_made_ready_with_a_bad_size_or_area_needs_a_reset() {
    let cases: [(&str, u32, u64, QueueError); 5] = [
        (
            "size 0",
            0,
            RAM_BASE,
            QueueError::BadSize { size: 0, max: 16 },
        ),
        (
            "size not a power of two",
            6,
            RAM_BASE,
            QueueError::BadSize { size: 6, max: 16 },
        ),
        (
            "size above the maximum",
            32,
            RAM_BASE,
            QueueError::BadSize { size: 32, max: 16 },
        ),
        (
            "descriptor table not 16-aligned",
            8,
            RAM_BASE + 8,
            QueueError::BadArea(Ipa(RAM_BASE + 8)),
        ),
        (
            "descriptor table wrapping the address space",
            8,
            !0xf_u64,
            QueueError::BadArea(Ipa(!0xf_u64)),
        ),
    ];
    for (name, size, desc, error) in cases {
        let mut t = Transport::new(TestDevice::new(1));
        assert!(negotiate(&mut t, feature::VERSION_1), "{name}");
        wr(&mut t, mmio::QUEUE_SEL, 0);
        wr(&mut t, mmio::QUEUE_NUM, size);
        wr(&mut t, mmio::QUEUE_DESC_LOW, desc as u32);
        wr(&mut t, mmio::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        let fx = wr(&mut t, mmio::QUEUE_READY, 1);
        assert!(fx.lines(), "{name}");
        assert_eq!(rd(&mut t, mmio::QUEUE_READY), 0, "{name}");
        assert_eq!(
            rd(&mut t, mmio::STATUS) & status::DEVICE_NEEDS_RESET,
            status::DEVICE_NEEDS_RESET,
            "{name}"
        );
        assert_eq!(
            rd(&mut t, mmio::INTERRUPT_STATUS),
            mmio::INT_CONFIG,
            "{name}"
        );
        assert_eq!(
            t.take_error(),
            Some(TransportError::Queue { queue: 0, error }),
            "{name}"
        );
    }
    // Misaligned driver and device areas.
    for (reg, addr) in [
        (mmio::QUEUE_DRIVER_LOW, RAM_BASE + 1),
        (mmio::QUEUE_DEVICE_LOW, RAM_BASE + 2),
    ] {
        let mut t = Transport::new(TestDevice::new(1));
        wr(&mut t, mmio::QUEUE_NUM, 8);
        wr(&mut t, mmio::QUEUE_DESC_LOW, RAM_BASE as u32);
        wr(&mut t, mmio::QUEUE_DRIVER_LOW, RAM_BASE as u32);
        wr(&mut t, mmio::QUEUE_DEVICE_LOW, RAM_BASE as u32);
        wr(&mut t, reg, addr as u32);
        wr(&mut t, mmio::QUEUE_READY, 1);
        assert_eq!(
            t.take_error(),
            Some(TransportError::Queue {
                queue: 0,
                error: QueueError::BadArea(Ipa(addr & 0xffff_ffff))
            })
        );
    }
}

#[test]
fn control_registers_take_aligned_32_bit_accesses_only() {
    let mut t = Transport::new(TestDevice::new(1));
    for (name, offset, size) in [
        ("byte", mmio::MAGIC_VALUE, Byte),
        ("half", mmio::MAGIC_VALUE, Half),
        ("double", mmio::MAGIC_VALUE, Double),
        ("unaligned word", mmio::MAGIC_VALUE + 2, Word),
        ("byte of status", mmio::STATUS + 1, Byte),
    ] {
        let before = t.counters().bad_accesses;
        assert_eq!(read_sized(&mut t, offset, size), 0, "{name}");
        assert_eq!(t.counters().bad_accesses, before + 1, "{name}");
    }
    // A wide write is ignored: the status stays 0.
    write_sized(&mut t, mmio::STATUS, Double, u64::from(status::ACKNOWLEDGE));
    write_sized(&mut t, mmio::STATUS, Byte, u64::from(status::ACKNOWLEDGE));
    assert_eq!(t.status(), 0);
    assert_eq!(t.counters().bad_accesses, 7);
}

#[test]
fn unknown_offsets_and_wrong_directions_read_0_and_ignore_writes() {
    let mut t = Transport::new(TestDevice::new(1));
    let write_only = [
        mmio::DEVICE_FEATURES_SEL,
        mmio::DRIVER_FEATURES,
        mmio::DRIVER_FEATURES_SEL,
        mmio::QUEUE_SEL,
        mmio::QUEUE_NUM,
        mmio::QUEUE_NOTIFY,
        mmio::INTERRUPT_ACK,
        mmio::QUEUE_DESC_LOW,
        mmio::QUEUE_DEVICE_HIGH,
        mmio::SHM_SEL,
    ];
    // Legacy GuestPageSize/QueueAlign/QueuePFN, QueueReset (not offered),
    // holes.
    let unknown = [0x018, 0x028, 0x03c, 0x040, 0x0c0, 0x0f8];
    for offset in write_only.iter().chain(&unknown) {
        let before = t.counters().bad_accesses;
        assert_eq!(rd(&mut t, *offset), 0, "read of {offset:#x}");
        assert_eq!(t.counters().bad_accesses, before + 1, "{offset:#x}");
    }
    let read_only = [
        mmio::MAGIC_VALUE,
        mmio::VERSION_REG,
        mmio::DEVICE_ID,
        mmio::VENDOR_ID,
        mmio::DEVICE_FEATURES,
        mmio::QUEUE_NUM_MAX,
        mmio::INTERRUPT_STATUS,
        mmio::SHM_LEN_LOW,
        mmio::CONFIG_GENERATION,
    ];
    for offset in read_only.iter().chain(&unknown) {
        let before = t.counters().bad_accesses;
        let fx = wr(&mut t, *offset, 0xffff_ffff);
        assert!(fx.is_empty(), "{offset:#x}");
        assert_eq!(t.counters().bad_accesses, before + 1, "{offset:#x}");
    }
    assert_eq!(rd(&mut t, mmio::MAGIC_VALUE), mmio::MAGIC);
    assert_eq!(rd(&mut t, mmio::DEVICE_ID), 42);
}

#[test]
fn shared_memory_regions_do_not_exist() {
    let mut t = Transport::new(TestDevice::new(1));
    wr(&mut t, mmio::SHM_SEL, 0);
    for offset in [
        mmio::SHM_LEN_LOW,
        mmio::SHM_LEN_HIGH,
        mmio::SHM_BASE_LOW,
        mmio::SHM_BASE_HIGH,
    ] {
        assert_eq!(rd(&mut t, offset), u32::MAX, "{offset:#x}");
    }
    assert_eq!(t.counters().bad_accesses, 0);
}

#[test]
fn configuration_space_takes_8_16_and_32_bit_aligned_accesses() {
    let mut t = Transport::new(TestDevice::new(1));
    let c = mmio::CONFIG;
    assert_eq!(read_sized(&mut t, c, Byte), 0);
    assert_eq!(read_sized(&mut t, c + 3, Byte), 3);
    assert_eq!(read_sized(&mut t, c + 2, Half), 0x0302);
    assert_eq!(read_sized(&mut t, c + 4, Word), 0x0706_0504);
    assert_eq!(t.counters().bad_accesses, 0);
    for (name, offset, size) in [
        ("64-bit", c, Double),
        ("unaligned half", c + 1, Half),
        ("unaligned word", c + 2, Word),
        ("past the device's space", c + 8, Byte),
        ("straddling its end", c + 6, Word),
        ("far past it", 0x1fc, Word),
    ] {
        let before = t.counters().bad_accesses;
        assert_eq!(read_sized(&mut t, offset, size), 0, "{name}");
        write_sized(&mut t, offset, size, u64::MAX);
        assert_eq!(t.counters().bad_accesses, before + 2, "{name}");
    }
    assert_eq!(t.device().config, (0..8).collect::<Vec<u8>>());
    write_sized(&mut t, c + 2, Half, 0xbeef);
    write_sized(&mut t, c + 7, Byte, 0xaa);
    assert_eq!(t.device().config, [0, 1, 0xef, 0xbe, 4, 5, 6, 0xaa]);
}

#[test]
fn a_config_change_moves_the_generation_and_raises_the_config_interrupt() {
    let mut t = Transport::new(TestDevice::new(1));
    let g = rd(&mut t, mmio::CONFIG_GENERATION);
    assert!(!t.line());
    t.config_changed();
    assert_eq!(rd(&mut t, mmio::CONFIG_GENERATION), g.wrapping_add(1));
    assert_eq!(rd(&mut t, mmio::INTERRUPT_STATUS), mmio::INT_CONFIG);
    assert!(t.line());
}

#[test]
fn interrupt_ack_clears_the_bits_written_and_reports_the_line() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    let mut t = live_transport(1, 0, &dq);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let mut dq = dq;
    let head = dq.chain(&mut mem, &[(RAM_BASE + 0x8000, 16, true)]);
    dq.publish(&mut mem, head);
    t.device_mut().on_notify = OnNotify::Drain;
    t.config_changed();
    assert!(wr(&mut t, mmio::QUEUE_NOTIFY, 0).notify());
    assert!(t.process(&mut mem));
    assert_eq!(
        rd(&mut t, mmio::INTERRUPT_STATUS),
        mmio::INT_USED_BUFFER | mmio::INT_CONFIG
    );
    let fx = wr(&mut t, mmio::INTERRUPT_ACK, mmio::INT_USED_BUFFER);
    assert!(fx.lines());
    assert!(t.line());
    assert_eq!(rd(&mut t, mmio::INTERRUPT_STATUS), mmio::INT_CONFIG);
    wr(&mut t, mmio::INTERRUPT_ACK, mmio::INT_CONFIG);
    assert!(!t.line());
    assert_eq!(t.counters().interrupts, 1);
}

#[test]
fn a_notify_for_a_live_queue_is_reported_and_served_once() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    let mut t = live_transport(3, 0, &dq);
    DriverQueue::at(RAM_BASE + 0x1000, 8).setup(&mut t, 2);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    assert!(!t.has_pending());
    assert!(wr(&mut t, mmio::QUEUE_NOTIFY, 2).notify());
    assert!(wr(&mut t, mmio::QUEUE_NOTIFY, 0).notify());
    assert!(wr(&mut t, mmio::QUEUE_NOTIFY, 2).notify());
    assert!(t.has_pending());
    assert!(!t.process(&mut mem), "nothing used, no interrupt");
    assert_eq!(t.device().notified, [0, 2]);
    assert!(!t.has_pending());
    t.process(&mut mem);
    assert_eq!(t.device().notified, [0, 2]);
    assert_eq!(t.counters().notifies, 3);
}

#[test]
fn bad_notifies_are_dropped_and_counted() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    // Before DRIVER_OK.
    let mut t = Transport::new(TestDevice::new(2));
    assert!(negotiate(&mut t, feature::VERSION_1));
    dq.setup(&mut t, 0);
    assert!(!wr(&mut t, mmio::QUEUE_NOTIFY, 0).notify());
    assert_eq!(
        t.take_error(),
        Some(TransportError::NotifyBeforeDriverOk(0))
    );
    driver_ok(&mut t);
    // A queue that does not exist, one that is not ready.
    for (value, error) in [
        (2, TransportError::NotifyNoSuchQueue(2)),
        (0x1_0000, TransportError::NotifyNoSuchQueue(0x1_0000)),
        (u32::MAX, TransportError::NotifyNoSuchQueue(u32::MAX)),
        (1, TransportError::NotifyNotReady(1)),
    ] {
        assert!(
            !wr(&mut t, mmio::QUEUE_NOTIFY, value).notify(),
            "{value:#x}"
        );
        assert_eq!(t.take_error(), Some(error));
    }
    assert_eq!(t.counters().refused_notifies, 5);
    assert_eq!(t.counters().notifies, 0);
    let mut ram = ram();
    t.process(&mut memory(&mut ram));
    assert!(t.device().notified.is_empty());
}

#[test]
fn a_device_error_needs_a_reset_and_a_reset_recovers() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    let mut t = live_transport(1, 0, &dq);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    t.device_mut().on_notify = OnNotify::Fail(QueueError::ChainLoop);
    wr(&mut t, mmio::QUEUE_NOTIFY, 0);
    assert!(t.process(&mut mem), "the config interrupt is raised");
    assert_eq!(
        rd(&mut t, mmio::STATUS) & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET
    );
    assert_eq!(rd(&mut t, mmio::INTERRUPT_STATUS), mmio::INT_CONFIG);
    assert_eq!(
        t.take_error(),
        Some(TransportError::Queue {
            queue: 0,
            error: QueueError::ChainLoop
        })
    );
    assert_eq!(t.counters().device_errors, 1);
    // Stopped: notifies are refused, nothing is served.
    assert!(!wr(&mut t, mmio::QUEUE_NOTIFY, 0).notify());
    assert_eq!(t.take_error(), Some(TransportError::NotifyNeedsReset(0)));
    assert!(!t.is_live());
    // A driver's read-modify-write that echoes the device's bit is fine.
    let s = rd(&mut t, mmio::STATUS);
    wr(&mut t, mmio::STATUS, s | status::FAILED);
    assert_eq!(t.status() & status::FAILED, status::FAILED);
    // Reset, and the device works again.
    t.device_mut().on_notify = OnNotify::Record;
    assert!(negotiate(&mut t, feature::VERSION_1));
    dq.setup(&mut t, 0);
    driver_ok(&mut t);
    assert!(wr(&mut t, mmio::QUEUE_NOTIFY, 0).notify());
    t.process(&mut mem);
    assert_eq!(t.device().notified, [0, 0]);
    assert!(!t.line());
}

#[test]
fn rings_outside_ram_stop_the_device_at_the_notify() {
    let dq = DriverQueue::at(RAM_BASE + RAM_SIZE as u64 - 0x40, 8);
    let mut t = live_transport(1, 0, &dq);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    wr(&mut t, mmio::QUEUE_NOTIFY, 0);
    t.process(&mut mem);
    assert!(matches!(
        t.take_error(),
        Some(TransportError::Queue {
            queue: 0,
            error: QueueError::OutsideRam { .. }
        })
    ));
    assert!(t.device().notified.is_empty(), "the device never ran");
}

#[test]
fn with_device_runs_only_a_live_device_and_signals_its_used_buffers() {
    let dq = DriverQueue::at(RAM_BASE, 8);
    let mut ram = ram();
    let mut mem = memory(&mut ram);
    let mut t = Transport::new(TestDevice::new(1));
    assert_eq!(t.with_device(&mut mem, |_, _, _| Ok(())), None);
    let mut t = live_transport(1, 0, &dq);
    let mut d = dq;
    let head = d.chain(&mut mem, &[(RAM_BASE + 0x8000, 4, true)]);
    d.publish(&mut mem, head);
    let got = t.with_device(&mut mem, |_, queues, mem| {
        let q = queues.get(0).map_err(|e| (0, e))?;
        let chain = q.pop(mem).map_err(|e| (0, e))?.expect("one chain");
        chain.write(mem, 0, b"ping").map_err(|e| (0, e))?;
        q.add_used(mem, chain.head(), 4).map_err(|e| (0, e))?;
        Ok(chain.head())
    });
    assert_eq!(got, Some(head));
    assert!(t.line());
    assert_eq!(d.take_used(&mem), [(u32::from(head), 4)]);
    assert_eq!(&mem.bytes()[0x8000..0x8004], b"ping");
    let failed = t.with_device(&mut mem, |_, _, _| -> Result<(), _> {
        Err((0, QueueError::TooLong))
    });
    assert_eq!(failed, None);
    assert_eq!(
        t.status() & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET
    );
}
