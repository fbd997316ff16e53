//! The host's physical interrupts as EL2 sees them: the fixed INTIDs it
//! takes, which statistics class each interrupt belongs to ([`classify`]),
//! the per-exit tally of classes ([`ClassTally`]) and the table of SPIs
//! passed through to VMs ([`Routes`]).

use crate::stats::Reason;

/// The virtual interface's maintenance interrupt (PPI 9), unless the host
/// DT names another.
pub const MAINTENANCE_INTID: u32 = 25;
/// The EL1 virtual timer (PPI 11).
pub const VTIMER_INTID: u32 = 27;
/// The EL1 physical timer (PPI 14).
pub const PTIMER_INTID: u32 = 30;
/// The EL2 physical timer (PPI 10): preemption and idle wake-ups.
pub const PREEMPT_INTID: u32 = 26;
/// The physical SGI one CPU sends another to make it look at its vGIC state.
pub const KICK_SGI: u32 = 8;

/// The INTIDs that vary by host: the maintenance interrupt's and the
/// console UART's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIntids {
    /// The virtual interface's maintenance interrupt.
    pub maintenance: u32,
    /// The console UART's input interrupt, when it has one.
    pub console: Option<u32>,
}

/// The statistics class of physical interrupt `intid`, which is also what
/// EL2 does with it once acknowledged (the glue's acknowledge loop
/// branches on it): forward a guest timer's to the loaded vCPU, take
/// console input, turn the underflow request off, end the slice, refill
/// after a kick, forward a passthrough SPI, or drop a spurious one.
pub fn classify(intid: u32, host: &HostIntids) -> Reason {
    match intid {
        VTIMER_INTID => Reason::IrqVtimer,
        PTIMER_INTID => Reason::IrqPtimer,
        KICK_SGI => Reason::IrqKick,
        PREEMPT_INTID => Reason::IrqPreempt,
        i if i == host.maintenance => Reason::IrqMaintenance,
        i if Some(i) == host.console => Reason::IrqConsole,
        i if i >= 32 => Reason::IrqDevice,
        _ => Reason::IrqOther,
    }
}

/// The first interrupt class, in code order (`irq vtimer` … `irq other`).
const FIRST: Reason = Reason::IrqVtimer;
/// How many interrupt classes there are.
const CLASSES: usize = Reason::IrqOther as usize - FIRST as usize + 1;
const _: () = assert!(CLASSES <= 8, "eight 8-bit lanes in a u64");

/// Interrupts counted per class during one exit, in one word: 8 bits per
/// class, so counting costs an add and reading it back a loop over the
/// classes seen. Saturates at 255 per class (an exit acknowledges far
/// fewer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassTally(u64);

impl ClassTally {
    /// Counts one interrupt of `reason` (an interrupt class; others are
    /// ignored).
    #[inline]
    pub fn add(&mut self, reason: Reason) {
        let Some(class) = (reason as usize).checked_sub(FIRST as usize) else {
            return;
        };
        if class < CLASSES && (self.0 >> (8 * class)) & 0xFF != 0xFF {
            self.0 += 1 << (8 * class);
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Each class counted, with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u8)> {
        let mut lanes = self.0;
        core::iter::from_fn(move || {
            if lanes == 0 {
                return None;
            }
            let class = lanes.trailing_zeros() / 8;
            let n = (lanes >> (8 * class)) as u8;
            lanes &= !(0xFF << (8 * class));
            Some((Reason::from_code(FIRST as u8 + class as u8)?, n))
        })
    }
}

/// A physical SPI passed through to a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Its INTID.
    pub intid: u32,
    /// The VM it belongs to.
    pub vm: usize,
    /// The physical CPU it is routed to (the VM's vCPU 0's).
    pub cpu: usize,
}

/// The passthrough SPIs of a system, at most `N`.
#[derive(Clone, Copy, Debug)]
pub struct Routes<const N: usize> {
    table: [Route; N],
    len: usize,
}

/// Why a route is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Not an SPI (INTID 32..1020).
    NotAnSpi,
    /// The INTID is routed already.
    Taken,
    /// The table is full.
    Full,
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotAnSpi => "not an SPI",
            Self::Taken => "already passed through",
            Self::Full => "too many passthrough interrupts",
        })
    }
}

impl<const N: usize> Routes<N> {
    /// No route.
    pub const fn new() -> Self {
        Self {
            table: [Route {
                intid: 0,
                vm: 0,
                cpu: 0,
            }; N],
            len: 0,
        }
    }

    /// Adds a route.
    pub fn add(&mut self, route: Route) -> Result<(), RouteError> {
        if !(32..1020).contains(&route.intid) {
            return Err(RouteError::NotAnSpi);
        }
        if self.vm_of(route.intid).is_some() {
            return Err(RouteError::Taken);
        }
        let slot = self.table.get_mut(self.len).ok_or(RouteError::Full)?;
        *slot = route;
        self.len += 1;
        Ok(())
    }

    /// Every route.
    pub fn all(&self) -> &[Route] {
        &self.table[..self.len]
    }

    /// The VM SPI `intid` belongs to.
    pub fn vm_of(&self, intid: u32) -> Option<usize> {
        self.all().iter().find(|r| r.intid == intid).map(|r| r.vm)
    }
}

impl<const N: usize> Default for Routes<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostIntids = HostIntids {
        maintenance: MAINTENANCE_INTID,
        console: Some(33),
    };

    #[test]
    fn every_kind_of_interrupt_has_its_class() {
        assert_eq!(classify(27, &HOST), Reason::IrqVtimer);
        assert_eq!(classify(30, &HOST), Reason::IrqPtimer);
        assert_eq!(classify(8, &HOST), Reason::IrqKick);
        assert_eq!(classify(26, &HOST), Reason::IrqPreempt);
        assert_eq!(classify(25, &HOST), Reason::IrqMaintenance);
        assert_eq!(classify(33, &HOST), Reason::IrqConsole);
        assert_eq!(classify(34, &HOST), Reason::IrqDevice);
        assert_eq!(classify(3, &HOST), Reason::IrqOther);
        let other = HostIntids {
            maintenance: 20,
            console: None,
        };
        assert_eq!(classify(20, &other), Reason::IrqMaintenance);
        assert_eq!(classify(25, &other), Reason::IrqOther);
        assert_eq!(classify(33, &other), Reason::IrqDevice);
    }

    #[test]
    fn the_tally_gives_back_each_class_with_its_count() {
        let mut t = ClassTally::default();
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
        t.add(Reason::IrqKick);
        t.add(Reason::IrqVtimer);
        t.add(Reason::IrqKick);
        t.add(Reason::IrqOther);
        t.add(Reason::HvcOther); // not an interrupt class: ignored
        let got: Vec<_> = t.iter().collect();
        assert_eq!(
            got,
            [
                (Reason::IrqVtimer, 1),
                (Reason::IrqKick, 2),
                (Reason::IrqOther, 1)
            ]
        );
        for _ in 0..300 {
            t.add(Reason::IrqDevice);
        }
        assert!(t.iter().any(|c| c == (Reason::IrqDevice, 255)), "saturates");
        assert!(t.iter().any(|c| c == (Reason::IrqOther, 1)), "no carry");
    }

    #[test]
    fn routes_refuse_duplicates_non_spis_and_overflow() {
        let mut r: Routes<2> = Routes::new();
        let route = |intid, vm| Route { intid, vm, cpu: 1 };
        assert_eq!(r.add(route(16, 0)), Err(RouteError::NotAnSpi));
        assert_eq!(r.add(route(1020, 0)), Err(RouteError::NotAnSpi));
        r.add(route(40, 1)).unwrap();
        assert_eq!(r.add(route(40, 2)), Err(RouteError::Taken));
        r.add(route(41, 2)).unwrap();
        assert_eq!(r.add(route(42, 0)), Err(RouteError::Full));
        assert_eq!(r.vm_of(41), Some(2));
        assert_eq!(r.vm_of(42), None);
        assert_eq!(r.all().len(), 2);
        assert_eq!(
            RouteError::Full.to_string(),
            "too many passthrough interrupts"
        );
    }
}
