//! Tests of the device bus: registration (order, overlaps, limits) and
//! routing (plain and banked windows, edges), with a property test against
//! a brute-force lookup.

use super::*;
use proptest::prelude::*;

const R: [Reason; 2] = [Reason::MmioUartRead, Reason::MmioUartWrite];
const G: [Reason; 2] = [Reason::MmioGicdRead, Reason::MmioGicdWrite];

fn range(start: u64, size: u64) -> IpaRange {
    IpaRange::new(Ipa(start), size).expect("no overflow")
}

fn virt_like() -> MmioBus {
    let mut bus = MmioBus::new();
    // Inserted out of order on purpose.
    bus.insert(Window::plain(range(0x0900_0000, 0x1000), DeviceId(0), 0, R))
        .expect("UART");
    bus.insert(Window::plain(
        range(0x0800_0000, 0x1_0000),
        DeviceId(1),
        0,
        G,
    ))
    .expect("GICD");
    bus.insert(Window::banked(
        Ipa(0x080A_0000),
        0x2_0000,
        4,
        DeviceId(1),
        1,
        G,
    ))
    .expect("GICR");
    bus
}

#[test]
fn windows_are_kept_sorted() {
    let bus = virt_like();
    let starts: Vec<u64> = bus.windows().iter().map(|w| w.start.0).collect();
    assert_eq!(starts, [0x0800_0000, 0x080A_0000, 0x0900_0000]);
}

#[test]
fn plain_window_routes_with_offset_and_reasons() {
    let bus = virt_like();
    let hit = bus.find(Ipa(0x0900_0018)).expect("UARTFR");
    assert_eq!(hit.device, DeviceId(0));
    assert_eq!(hit.region, 0);
    assert_eq!(hit.bank, 0);
    assert_eq!(hit.bank_range, range(0x0900_0000, 0x1000));
    assert_eq!((hit.read_reason, hit.write_reason), (R[0], R[1]));
    // First and last byte in, one past the end out.
    assert!(bus.find(Ipa(0x0900_0000)).is_some());
    assert!(bus.find(Ipa(0x0900_0fff)).is_some());
    assert_eq!(bus.find(Ipa(0x0900_1000)), None);
    assert_eq!(bus.find(Ipa(0x08ff_ffff)), None);
}

#[test]
fn banked_window_names_the_bank() {
    let bus = virt_like();
    let hit = bus
        .find(Ipa(0x080A_0000 + 2 * 0x2_0000 + 0x1_0100))
        .expect("GICR 2");
    assert_eq!((hit.device, hit.region, hit.bank), (DeviceId(1), 1, 2));
    assert_eq!(hit.bank_range, range(0x080A_0000 + 2 * 0x2_0000, 0x2_0000));
    let last = bus
        .find(Ipa(0x080A_0000 + 4 * 0x2_0000 - 1))
        .expect("GICR 3");
    assert_eq!(last.bank, 3);
    assert_eq!(
        bus.find(Ipa(0x080A_0000 + 4 * 0x2_0000)),
        None,
        "past the last bank"
    );
}

#[test]
fn nothing_below_the_first_or_between_windows() {
    let bus = virt_like();
    assert_eq!(bus.find(Ipa(0)), None);
    assert_eq!(bus.find(Ipa(0x0801_0000)), None, "between GICD and GICR");
    assert_eq!(bus.find(Ipa(u64::MAX)), None);
    assert_eq!(MmioBus::new().find(Ipa(0x0900_0000)), None);
}

#[test]
fn overlaps_are_refused_and_name_the_other_window() {
    let mut bus = virt_like();
    let before = bus.windows().to_vec();
    let uart = bus.windows()[2];
    // Straddling the UART's start, inside it, covering it, touching its end.
    for (start, size) in [
        (0x08ff_f000, 0x2000),
        (0x0900_0800, 0x10),
        (0x08f0_0000, 0x20_0000),
        (0x0900_0fff, 1),
    ] {
        assert_eq!(
            bus.insert(Window::plain(range(start, size), DeviceId(7), 0, R)),
            Err(BusError::Overlap(uart)),
            "{start:#x}+{size:#x}"
        );
    }
    // A banked window overlapping by its last bank only.
    assert!(matches!(
        bus.insert(Window::banked(
            Ipa(0x0801_0000),
            0x1_0000,
            10,
            DeviceId(7),
            0,
            R
        )),
        Err(BusError::Overlap(_))
    ));
    assert_eq!(
        bus.windows(),
        &before[..],
        "a refused insert changes nothing"
    );
    // Adjacent windows are fine.
    bus.insert(Window::plain(range(0x0900_1000, 0x1000), DeviceId(2), 0, R))
        .expect("adjacent above");
    bus.insert(Window::plain(range(0x08ff_f000, 0x1000), DeviceId(3), 0, R))
        .expect("adjacent below");
}

#[test]
fn empty_and_overflowing_windows_are_refused() {
    let mut bus = MmioBus::new();
    assert_eq!(
        bus.insert(Window::plain(range(0x1000, 0), DeviceId(0), 0, R)),
        Err(BusError::BadWindow)
    );
    assert_eq!(
        bus.insert(Window::banked(Ipa(0x1000), 0x1000, 0, DeviceId(0), 0, R)),
        Err(BusError::BadWindow)
    );
    assert_eq!(
        bus.insert(Window::banked(
            Ipa(u64::MAX - 0xfff),
            0x1000,
            2,
            DeviceId(0),
            0,
            R
        )),
        Err(BusError::BadWindow)
    );
    assert_eq!(
        bus.insert(Window::banked(Ipa(0), u64::MAX, 3, DeviceId(0), 0, R)),
        Err(BusError::BadWindow)
    );
    assert!(bus.windows().is_empty());
}

#[test]
fn a_full_bus_refuses_more() {
    let mut bus = MmioBus::new();
    for i in 0..MAX_WINDOWS as u64 {
        bus.insert(Window::plain(
            range(i * 0x1000, 0x1000),
            DeviceId(i as u8),
            0,
            R,
        ))
        .expect("room");
    }
    assert_eq!(
        bus.insert(Window::plain(range(0x10_0000, 0x1000), DeviceId(0), 0, R)),
        Err(BusError::Full)
    );
    assert_eq!(bus.find(Ipa(0xf080)).map(|h| h.device), Some(DeviceId(15)));
}

#[test]
fn effects_collect_console_bytes_and_count_the_rest() {
    let mut fx = Effects::default();
    assert!(fx.is_empty());
    for b in 0..EFFECT_BYTES as u8 + 3 {
        fx.console(b);
    }
    assert_eq!(fx.console_len(), EFFECT_BYTES);
    assert_eq!(
        fx.console_bytes().collect::<Vec<_>>(),
        (0..EFFECT_BYTES as u8).collect::<Vec<_>>()
    );
    assert_eq!(fx.lost_bytes(), 3);
    assert!(!fx.is_empty());
    let mut lines = Effects::default();
    lines.set_lines();
    assert!(lines.lines() && !lines.notify());
    assert!(!lines.is_empty());
    let mut notify = Effects::default();
    notify.set_notify();
    assert!(notify.notify() && !notify.lines());
    assert!(!notify.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever windows are inserted, the accepted ones never overlap, stay
    /// sorted, and `find` answers as a scan of every window would.
    #[test]
    fn find_agrees_with_a_brute_force_scan(
        windows in proptest::collection::vec(
            (0u64..0x40, 1u64..0x8, 1u32..4), 0..24),
        probes in proptest::collection::vec(0u64..0x50_000, 64),
    ) {
        let mut bus = MmioBus::new();
        let mut accepted: Vec<Window> = Vec::new();
        for (i, (start, stride, count)) in windows.into_iter().enumerate() {
            let w = Window::banked(Ipa(start * 0x1000), stride * 0x800, count, DeviceId(i as u8), 0, R);
            let r = w.range().expect("small");
            let clash = accepted.iter().any(|o| o.range().expect("small").overlaps(&r));
            match bus.insert(w) {
                Ok(()) => {
                    prop_assert!(!clash);
                    accepted.push(w);
                }
                Err(BusError::Overlap(_)) => prop_assert!(clash),
                Err(BusError::Full) => prop_assert_eq!(accepted.len(), MAX_WINDOWS),
                Err(BusError::BadWindow) => prop_assert!(false, "a good window refused"),
            }
        }
        prop_assert!(bus.windows().windows(2).all(|p| p[0].start.0 < p[1].start.0));
        for ipa in probes {
            let want = accepted.iter().find(|w| w.range().expect("small").contains(Ipa(ipa))).map(|w| {
                let bank = (ipa - w.start.0) / w.stride;
                (w.device, bank as u32, w.start.0 + bank * w.stride)
            });
            let got = bus.find(Ipa(ipa)).map(|h| (h.device, h.bank, h.bank_range.start.0));
            prop_assert_eq!(got, want, "ipa {:#x}", ipa);
        }
    }
}
