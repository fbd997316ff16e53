//! The per-CPU scheduling policy: which vCPU a physical CPU runs next.
//!
//! Placement is static: the host tool gives every vCPU one physical CPU.
//! A CPU whose queue holds one vCPU never schedules (static partitioning:
//! the vCPU owns the CPU, there is nothing to decide). A CPU with several
//! time-shares them round-robin: the next runnable vCPU after the current
//! one in queue order, wrapping, so every runnable vCPU runs within one
//! round of the others (no starvation). A blocked vCPU (`WFI`) is not
//! runnable until its wake condition holds, which the glue evaluates.

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

    /// Picks the vCPU to run next: the first runnable one after the current
    /// one, wrapping around and ending with the current one itself. `None`
    /// when none is runnable (the CPU idles; `current` is kept).
    pub fn pick(&mut self, mut runnable: impl FnMut(VcpuRef) -> bool) -> Option<VcpuRef> {
        if self.len == 0 {
            return None;
        }
        let start = self.current.map_or(0, |c| c + 1);
        for k in 0..self.len {
            let i = (start + k) % self.len;
            if runnable(self.entries[i]) {
                self.current = Some(i);
                return Some(self.entries[i]);
            }
        }
        None
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

    proptest! {
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
}
