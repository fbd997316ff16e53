//! The per-CPU scheduling policy: which vCPU a physical CPU runs next.
//!
//! Placement is static: the host tool gives every vCPU one physical CPU.
//! A CPU whose queue holds one vCPU never schedules (static partitioning:
//! the vCPU owns the CPU, there is nothing to decide). A CPU with several
//! time-shares them round-robin: the next runnable vCPU after the current
//! one in queue order, wrapping, so every runnable vCPU runs within one
//! round of the others (no starvation). A blocked vCPU (`WFI`) is not
//! runnable until its wake condition holds, which the glue evaluates.
//!
//! FP/SIMD registers move between the vCPUs of a time-shared CPU lazily:
//! a vCPU's first FP instruction traps and loads them. A vCPU that traps
//! keeps using FP in practice (a Linux guest's userspace does all the
//! time), and then every switch to it pays an exit for the trap; so a vCPU
//! that trapped has its registers loaded with the switch for its next
//! [`FpUse::EAGER_SWITCHES`] switches ([`FpUse`]), after which one lazy
//! switch checks that it still uses them. A vCPU that never touches FP
//! never pays for it.

/// One vCPU: its VM's index and its index in the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuRef {
    /// The VM's index in the boot bundle.
    pub vm: u8,
    /// The vCPU's index in its VM.
    pub vcpu: u8,
}

/// Most vCPUs one physical CPU may time-share.
pub const MAX_QUEUE: usize = 16;

/// The vCPUs placed on one physical CPU, and which of them runs.
#[derive(Clone, Copy, Debug)]
pub struct RunQueue {
    entries: [VcpuRef; MAX_QUEUE],
    len: usize,
    current: Option<usize>,
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RunQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            entries: [VcpuRef { vm: 0, vcpu: 0 }; MAX_QUEUE],
            len: 0,
            current: None,
        }
    }

    /// Adds a vCPU; `false` when the queue is full.
    pub fn push(&mut self, v: VcpuRef) -> bool {
        if self.len == MAX_QUEUE || self.entries[..self.len].contains(&v) {
            return false;
        }
        self.entries[self.len] = v;
        self.len += 1;
        true
    }

    /// The vCPUs on this CPU, in round-robin order.
    pub fn entries(&self) -> &[VcpuRef] {
        &self.entries[..self.len]
    }

    /// Whether this CPU time-shares (more than one vCPU placed on it).
    pub fn is_shared(&self) -> bool {
        self.len > 1
    }

    /// The vCPU picked last (the one running, or the last that ran).
    pub fn current(&self) -> Option<VcpuRef> {
        self.current.map(|i| self.entries[i])
    }

    /// The current vCPU's position in [`Self::entries`] (for state the
    /// caller keeps per queued vCPU).
    pub fn current_index(&self) -> Option<usize> {
        self.current
    }

    /// Picks the vCPU to run next: the first runnable one after the current
    /// one, wrapping around and ending with the current one itself. `None`
    /// when none is runnable (the CPU idles; `current` is kept).
    pub fn pick(&mut self, mut runnable: impl FnMut(VcpuRef) -> bool) -> Option<VcpuRef> {
        let mut k = 0;
        while let Some(r) = self.candidate(k) {
            if runnable(r) {
                self.choose(k);
                return Some(r);
            }
            k += 1;
        }
        None
    }

    /// The `k`th vCPU [`Self::pick`] tries (from 0): the `k+1`th after the
    /// current one in queue order, wrapping, the current one last. `None`
    /// once `k` reaches the queue's length. With [`Self::choose`], a pick
    /// one candidate at a time, for a caller that must not hold the queue
    /// while it decides whether a candidate runs.
    pub fn candidate(&self, k: usize) -> Option<VcpuRef> {
        if k >= self.len {
            return None;
        }
        let start = self.current.map_or(0, |c| c + 1);
        Some(self.entries[(start + k) % self.len])
    }

    /// Makes the `k`th [`Self::candidate`] the current vCPU (it was picked).
    /// Ignored for a `k` beyond the queue.
    pub fn choose(&mut self, k: usize) {
        if k < self.len {
            let start = self.current.map_or(0, |c| c + 1);
            self.current = Some((start + k) % self.len);
        }
    }
}

/// Whether a vCPU of a time-shared CPU gets its FP/SIMD registers loaded
/// when it is switched in, or only when it first uses them (a trap). See
/// the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpUse {
    /// Switches in left that load the registers eagerly.
    eager_left: u8,
}

impl FpUse {
    /// A vCPU that has not used FP yet: lazy.
    pub const fn new() -> Self {
        Self { eager_left: 0 }
    }

    /// How many switches in load the registers after a trap showed the vCPU
    /// uses them. A vCPU that stopped using FP costs at most this many
    /// needless loads (about 45 instructions each) before it is lazy again;
    /// one that keeps using it traps once per this many switches.
    pub const EAGER_SWITCHES: u8 = 255;

    /// The vCPU trapped on an FP/SIMD instruction: it uses them.
    pub fn trapped(&mut self) {
        self.eager_left = Self::EAGER_SWITCHES;
    }

    /// The vCPU is switched in: whether to load its FP/SIMD registers now
    /// (else they are loaded by the trap of its first FP instruction).
    pub fn switch_in(&mut self) -> bool {
        let eager = self.eager_left > 0;
        self.eager_left = self.eager_left.saturating_sub(1);
        eager
    }
}

/// Whose FP/SIMD registers one physical CPU holds, and how each vCPU of
/// its queue (by position) gets its own: with the switch or by a trap
/// ([`FpUse`]).
#[derive(Clone, Copy, Debug)]
pub struct FpRegs {
    owner: Option<VcpuRef>,
    uses: [FpUse; MAX_QUEUE],
}

/// What a switch does with the FP/SIMD registers ([`FpRegs::switch_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpSwitch {
    /// Whose registers the CPU held before (to save first when `eager`
    /// and it is not the incoming vCPU).
    pub previous: Option<VcpuRef>,
    /// Load the incoming vCPU's registers with the switch.
    pub eager: bool,
    /// The incoming vCPU's registers are live after the switch (loaded now,
    /// or still there): FP need not trap.
    pub live: bool,
}

impl Default for FpRegs {
    fn default() -> Self {
        Self::new()
    }
}

impl FpRegs {
    /// Nobody's registers, every vCPU lazy.
    pub const fn new() -> Self {
        Self {
            owner: None,
            uses: [FpUse::new(); MAX_QUEUE],
        }
    }

    /// Whose registers the CPU holds.
    pub fn owner(&self) -> Option<VcpuRef> {
        self.owner
    }

    /// `next`, at queue position `slot`, is switched in: `fresh` when it
    /// just (re)started (its old registers must not leak into the new
    /// boot, and it starts lazy), `switching` when its context is loaded
    /// now (not kept from before).
    #[inline]
    pub fn switch_to(
        &mut self,
        next: VcpuRef,
        slot: usize,
        fresh: bool,
        switching: bool,
    ) -> FpSwitch {
        let mut previous = self.owner;
        if fresh && previous == Some(next) {
            previous = None;
        }
        let Some(fp_use) = self.uses.get_mut(slot) else {
            return FpSwitch {
                previous,
                eager: false,
                live: previous == Some(next),
            };
        };
        if fresh {
            *fp_use = FpUse::default();
        }
        let eager = switching && previous != Some(next) && fp_use.switch_in();
        if eager {
            self.owner = Some(next);
        } else if previous.is_none() {
            self.owner = None;
        }
        FpSwitch {
            previous,
            eager,
            live: eager || previous == Some(next),
        }
    }

    /// `me`, at queue position `slot`, trapped on FP: it owns the
    /// registers from now on and gets them with its next switches. Returns
    /// the previous owner whose registers must be saved first, if another.
    pub fn trapped(&mut self, me: VcpuRef, slot: usize) -> Option<VcpuRef> {
        let previous = self.owner.filter(|&o| o != me);
        self.owner = Some(me);
        if let Some(u) = self.uses.get_mut(slot) {
            u.trapped();
        }
        previous
    }

    /// `v` parked: its registers, if live, are not to be saved.
    pub fn forget(&mut self, v: VcpuRef) {
        if self.owner == Some(v) {
            self.owner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(vm: u8, vcpu: u8) -> VcpuRef {
        VcpuRef { vm, vcpu }
    }

    #[test]
    fn round_robin_in_queue_order() {
        let mut q = RunQueue::new();
        for r in [v(0, 0), v(1, 0), v(1, 1)] {
            assert!(q.push(r));
        }
        assert!(!q.push(v(1, 1)), "no duplicates");
        assert!(q.is_shared());
        let order: Vec<_> = (0..6).map(|_| q.pick(|_| true).unwrap()).collect();
        assert_eq!(
            order,
            [v(0, 0), v(1, 0), v(1, 1), v(0, 0), v(1, 0), v(1, 1)]
        );
    }

    #[test]
    fn skips_blocked_and_keeps_the_only_runnable() {
        let mut q = RunQueue::new();
        for r in [v(0, 0), v(1, 0), v(2, 0)] {
            q.push(r);
        }
        assert_eq!(q.pick(|r| r.vm == 2), Some(v(2, 0)));
        assert_eq!(q.pick(|r| r.vm == 2), Some(v(2, 0)), "the current one last");
        assert_eq!(q.pick(|_| false), None);
        assert_eq!(q.current(), Some(v(2, 0)), "idling keeps the current one");
        assert_eq!(q.pick(|r| r.vm != 1), Some(v(0, 0)));
    }

    #[test]
    fn a_single_vcpu_is_not_shared_and_full_queues_refuse() {
        let mut q = RunQueue::new();
        assert_eq!(q.pick(|_| true), None);
        q.push(v(0, 0));
        assert!(!q.is_shared());
        assert_eq!(q.pick(|_| true), Some(v(0, 0)));
        let mut full = RunQueue::new();
        for i in 0..MAX_QUEUE {
            assert!(full.push(v(0, i as u8)));
        }
        assert!(!full.push(v(1, 0)));
    }

    #[test]
    fn candidates_are_the_pick_order() {
        let mut q = RunQueue::new();
        assert_eq!(q.candidate(0), None);
        for r in [v(0, 0), v(1, 0), v(2, 0)] {
            q.push(r);
        }
        let order = |q: &RunQueue| (0..4).map(|k| q.candidate(k)).collect::<Vec<_>>();
        assert_eq!(
            order(&q),
            [Some(v(0, 0)), Some(v(1, 0)), Some(v(2, 0)), None]
        );
        q.choose(1);
        assert_eq!(q.current(), Some(v(1, 0)));
        assert_eq!(
            order(&q),
            [Some(v(2, 0)), Some(v(0, 0)), Some(v(1, 0)), None],
            "after the current one, wrapping, the current one last"
        );
        q.choose(3);
        assert_eq!(q.current(), Some(v(1, 0)), "beyond the queue: ignored");
        q.choose(2);
        assert_eq!(q.current(), Some(v(1, 0)), "the current one again");
    }

    #[test]
    fn fp_is_lazy_until_a_trap_then_eager_for_a_while() {
        let mut fp = FpUse::default();
        assert!(!fp.switch_in(), "a vCPU that never trapped is lazy");
        assert!(!fp.switch_in());
        fp.trapped();
        for n in 0..FpUse::EAGER_SWITCHES {
            assert!(fp.switch_in(), "eager switch {n}");
        }
        assert!(!fp.switch_in(), "then lazy once, to see it still uses FP");
        assert!(!fp.switch_in(), "and lazy for good without a trap");
        fp.trapped();
        assert!(fp.switch_in(), "a trap makes it eager again");
        fp.trapped();
        let mut eager = 0;
        while fp.switch_in() {
            eager += 1;
        }
        assert_eq!(eager, FpUse::EAGER_SWITCHES, "a trap restarts the count");
    }

    proptest! {
        /// Whatever the traps, a vCPU is eager exactly when it trapped
        /// within its last `EAGER_SWITCHES` switches in, so one that uses FP
        /// traps at most once per `EAGER_SWITCHES + 1` switches.
        #[test]
        fn eager_exactly_within_the_window_after_a_trap(
            events in proptest::collection::vec(any::<bool>(), 0..2000),
        ) {
            let mut fp = FpUse::default();
            let mut since_trap: Option<usize> = None;
            for trap in events {
                if trap {
                    fp.trapped();
                    since_trap = Some(0);
                } else {
                    let expect = since_trap.is_some_and(|n| n < usize::from(FpUse::EAGER_SWITCHES));
                    prop_assert_eq!(fp.switch_in(), expect);
                    since_trap = since_trap.map(|n| n + 1);
                }
            }
        }

        /// `pick` tries exactly the candidates, in order.
        #[test]
        fn pick_tries_the_candidates_in_order(
            n in 1usize..MAX_QUEUE,
            first in 0usize..MAX_QUEUE,
            mask in any::<u16>(),
        ) {
            let mut q = RunQueue::new();
            for i in 0..n {
                q.push(v(i as u8, 0));
            }
            q.choose(first % n);
            let expected: Vec<_> = (0..n).map_while(|k| q.candidate(k)).collect();
            prop_assert_eq!(expected.len(), n);
            let mut tried = Vec::new();
            let mut q2 = q;
            let picked = q2.pick(|r| {
                tried.push(r);
                mask & (1 << r.vm) != 0
            });
            let stop = expected.iter().position(|r| mask & (1 << r.vm) != 0);
            prop_assert_eq!(picked, stop.map(|k| expected[k]));
            prop_assert_eq!(&tried[..], &expected[..stop.map_or(n, |k| k + 1)]);
        }

        /// No starvation: with any fixed set of runnable vCPUs, each of them
        /// is picked exactly once in every window of `runnable.len()` picks.
        #[test]
        fn every_runnable_vcpu_runs_once_per_round(
            n in 1usize..MAX_QUEUE,
            mask in any::<u16>(),
            rounds in 1usize..5,
        ) {
            let mut q = RunQueue::new();
            for i in 0..n {
                q.push(v(i as u8, 0));
            }
            let runnable = |r: VcpuRef| mask & (1 << r.vm) != 0;
            let count = (0..n).filter(|&i| mask & (1 << i) != 0).count();
            if count == 0 {
                prop_assert_eq!(q.pick(runnable), None);
            } else {
                for _ in 0..rounds {
                    let mut seen = std::collections::HashSet::new();
                    for _ in 0..count {
                        let r = q.pick(runnable).unwrap();
                        prop_assert!(runnable(r));
                        prop_assert!(seen.insert(r), "picked twice in one round");
                    }
                }
            }
        }
    }

    #[test]
    fn fp_registers_follow_traps_switches_and_restarts() {
        let (a, b) = (v(0, 0), v(1, 0));
        let mut fp = FpRegs::new();
        // Nobody used FP: every switch is lazy.
        let sw = fp.switch_to(a, 0, true, true);
        assert_eq!(
            sw,
            FpSwitch {
                previous: None,
                eager: false,
                live: false
            }
        );
        assert_eq!(fp.trapped(a, 0), None);
        assert_eq!(fp.owner(), Some(a));
        // b runs without FP: a's registers stay in the CPU.
        let sw = fp.switch_to(b, 1, false, true);
        assert_eq!((sw.previous, sw.eager, sw.live), (Some(a), false, false));
        assert_eq!(fp.owner(), Some(a));
        // Back to a: they are still live, nothing to load.
        let sw = fp.switch_to(a, 0, false, true);
        assert_eq!((sw.eager, sw.live), (false, true));
        // b traps: a's must be saved; b is eager from now on.
        assert_eq!(fp.trapped(b, 1), Some(a));
        let sw = fp.switch_to(a, 0, false, true);
        assert_eq!((sw.previous, sw.eager, sw.live), (Some(b), true, true));
        assert_eq!(fp.owner(), Some(a));
        let sw = fp.switch_to(b, 1, false, true);
        assert_eq!((sw.previous, sw.eager), (Some(a), true));
        // b restarts: its old registers are not its new boot's, and it
        // starts lazy again.
        let sw = fp.switch_to(b, 1, true, true);
        assert_eq!((sw.previous, sw.eager, sw.live), (None, false, false));
        assert_eq!(fp.owner(), None);
        fp.trapped(a, 0);
        fp.forget(a);
        assert_eq!(fp.owner(), None);
        // A slot past the queue never panics.
        let sw = fp.switch_to(a, MAX_QUEUE, false, true);
        assert!(!sw.eager);
    }
}
