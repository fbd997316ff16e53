//! Host tests of the telemetry block.

use stratum_abi::telemetry::{TraceRecord, VM_NAME_LEN};

use super::*;

fn rendered(block: &Block, id: usize) -> String {
    let mut out = String::new();
    block.render_vm(id, &mut out).expect("formats");
    out
}

#[test]
fn a_registered_vm_shows_its_name_state_and_counts() {
    let block = Block::new(false);
    assert_eq!(block.vm_state(2), VmState::Empty);
    assert_eq!(rendered(&block, 2), "", "an empty slot prints nothing");
    block.register_vm(2, "linux", 2);
    assert_eq!(block.vm_state(2), VmState::Running);
    block.vms[2].stats[0].count(Reason::MmioUartWrite);
    block.vms[2].stats[1].add(Reason::MmioUartWrite, 4);
    let out = rendered(&block, 2);
    let first = out.lines().next().expect("a heading");
    assert_eq!(first, "vm2 'linux' (running): exits by reason");
    let row = out
        .lines()
        .find(|l| l.contains("UART"))
        .unwrap_or_else(|| panic!("a UART row in {out}"));
    let numbers: Vec<&str> = row.split_whitespace().rev().take(3).collect();
    assert_eq!(numbers, ["5", "4", "1"], "{row}");
    assert_eq!(block.summary(2).mmio, 5);
    assert_eq!(block.summary(3).mmio, 0);
}

#[test]
fn stops_and_crashes_are_published_with_the_boot_count() {
    let block = Block::new(true);
    block.register_vm(0, "a", 1);
    block.register_vm(1, "b", 1);
    block.vm_stopped(0, false, 1);
    block.vm_stopped(1, true, 3);
    assert_eq!(block.vm_state(0), VmState::Stopped);
    assert_eq!(block.vm_state(1), VmState::Crashed);
    assert_eq!(block.vms[1].boot_count.load(Ordering::Relaxed), 3);
    assert!(rendered(&block, 1).starts_with("vm1 'b' (crashed)"));
    assert_eq!(block.header.flags, layout::FLAG_TRACE);
    assert_eq!(Block::new(false).header.flags, 0);
}

#[test]
fn long_names_are_cut_to_the_slot_and_stay_nul_terminated() {
    let block = Block::new(false);
    let long = "x".repeat(VM_NAME_LEN * 2);
    block.register_vm(0, &long, 1);
    let heading = rendered(&block, 0);
    let shown = heading.split('\'').nth(1).expect("a quoted name");
    assert_eq!(shown.len(), VM_NAME_LEN - 1);
    // The last byte of the slot is the terminator.
    let last = block.vms[0].name[VM_NAME_LEN / 8 - 1].load(Ordering::Relaxed);
    assert_eq!(last >> 56, 0);
}

#[test]
fn slots_beyond_the_block_are_ignored_not_a_fault() {
    let block = Block::new(false);
    block.register_vm(VM_SLOTS, "late", 1);
    block.vm_stopped(VM_SLOTS + 5, true, 1);
    assert_eq!(block.vm_state(VM_SLOTS), VmState::Empty);
    assert_eq!(rendered(&block, VM_SLOTS), "");
    // More vCPUs than slots publish only the slots.
    block.register_vm(1, "wide", VCPU_SLOTS + 4);
    assert_eq!(
        block.vms[1].vcpus.load(Ordering::Relaxed) as usize,
        VCPU_SLOTS
    );
}

#[test]
fn record_words_are_the_abi_record_in_little_endian() {
    for (vm, vcpu, reason, detail) in [
        (0, 0, Reason::HvcSmcccVersion, 0),
        (7, 3, Reason::MmioGicdRead, 0x0800_0004),
        (255, 255, Reason::ALL[Reason::COUNT - 1], u32::MAX),
    ] {
        let words = record_words(0x1234_5678_9abc_def0, vm, vcpu, reason, detail);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&words[0].to_le_bytes());
        bytes[8..].copy_from_slice(&words[1].to_le_bytes());
        let expected = TraceRecord {
            time: 0x1234_5678_9abc_def0,
            vm: vm as u8,
            vcpu: vcpu as u8,
            reason: reason as u8,
            detail,
        };
        assert_eq!(bytes, expected.encode());
    }
}

#[test]
fn a_published_ring_takes_records_in_order_and_wraps() {
    let block = Block::new(true);
    let ring: TraceRing<4> = TraceRing::new();
    block.rings[1].head.store(9, Ordering::Relaxed);
    ring.publish(&block.rings[1], 0x4000_0000);
    let desc = &block.rings[1];
    assert_eq!(desc.records.load(Ordering::Relaxed), 0x4000_0000);
    assert_eq!(desc.capacity.load(Ordering::Relaxed), 4);
    assert_eq!(
        desc.record_size.load(Ordering::Relaxed) as usize,
        stratum_abi::telemetry::RECORD_SIZE
    );
    assert_eq!(
        desc.head.load(Ordering::Relaxed),
        0,
        "publishing empties it"
    );
    for t in 0..6u64 {
        ring.append(desc, record_words(t, 1, 0, Reason::HvcOther, t as u32));
    }
    assert_eq!(desc.head.load(Ordering::Relaxed), 6);
    // Records 4 and 5 overwrote the two oldest (0 and 1).
    assert_eq!(ring.record(0)[0], 4);
    assert_eq!(ring.record(1)[0], 5);
    assert_eq!(ring.record(2)[0], 2);
    let meta = ring.record(3)[1];
    assert_eq!(meta >> 32, 3, "the detail word");
}

#[test]
fn stats_of_a_slot_out_of_range_is_none() {
    let block = Block::new(false);
    assert!(block.stats(0, 0).is_some());
    assert!(block.stats(VM_SLOTS, 0).is_none());
    assert!(block.stats(0, VCPU_SLOTS).is_none());
}
