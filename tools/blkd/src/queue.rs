//! The bounded queue between a session's reader and its workers
//! ([`Queue`]): the reader pushes a job, one idle worker takes it.
//!
//! It replaces `std::sync::mpsc::sync_channel` behind a mutex, which the
//! workers shared by holding the mutex while they waited in `recv`: every
//! job then woke two workers, the one that got it and, when that one
//! dropped the mutex, the next one in line, only to wait in `recv` again.
//! In the service VM (one vCPU) that was a context switch, a wake-up and
//! two `futex` calls more per request (measured in the disk bench's traced
//! run: 4 `futex` calls and 8 context switches per 4 KiB read before).
//! Here a push wakes one waiting worker, and only if one waits; a pop wakes
//! the reader only if it waits for room. Nothing spins: the service VM may
//! have one vCPU, where a spinning waiter only delays the thread it waits
//! for.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A bounded multi-consumer queue of jobs `T`: its one [`Producer`] pushes
/// and, when dropped (also by a panic), closes it; the consumers register
/// as [`Worker`]s.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Signalled when a job arrives or the queue closes.
    jobs: Condvar,
    /// Signalled when a job leaves or the last worker goes.
    room: Condvar,
    capacity: usize,
}

struct State<T> {
    queued: VecDeque<T>,
    closed: bool,
    /// Workers registered and not yet gone.
    workers: usize,
    /// Workers waiting for a job.
    idle: usize,
    /// Whether the producer waits for room.
    full_wait: bool,
}

/// Why a push failed: every worker is gone (only a panic does that); the
/// job comes back.
#[derive(Debug)]
pub struct NoWorkers<T>(pub T);

impl<T> Queue<T> {
    /// An empty queue that holds at most `capacity` jobs (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queued: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
                workers: 0,
                idle: 0,
                full_wait: false,
            }),
            jobs: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a consumer; it counts until the [`Worker`] is dropped
    /// (also by a panic), so that a push never waits for workers that are
    /// gone.
    pub fn worker(&self) -> Worker<'_, T> {
        self.lock().workers += 1;
        Worker { queue: self }
    }

    /// The queue's producer: one per queue, which closes it when dropped.
    pub fn producer(&self) -> Producer<'_, T> {
        Producer { queue: self }
    }

    /// Queues `job`, waiting while the queue is full (the flow control of
    /// the stream behind the producer). Fails, giving `job` back, if no
    /// worker is left to take it.
    fn push(&self, job: T) -> Result<(), NoWorkers<T>> {
        let mut state = self.lock();
        loop {
            if state.workers == 0 {
                return Err(NoWorkers(job));
            }
            if state.queued.len() < self.capacity {
                break;
            }
            state.full_wait = true;
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.queued.push_back(job);
        let wake = state.idle > 0;
        drop(state);
        if wake {
            self.jobs.notify_one();
        }
        Ok(())
    }

    /// Closes the queue: the workers take what is queued, then their
    /// [`Worker::pop`] returns `None`.
    fn close(&self) {
        self.lock().closed = true;
        self.jobs.notify_all();
    }

    /// Jobs queued and not yet taken.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }
}

/// The producer of a [`Queue`]: the reader. Dropping it closes the queue,
/// so the workers stop once they have taken what is queued, whether the
/// reader returned or panicked (the thread scope waits for them).
pub struct Producer<'q, T> {
    queue: &'q Queue<T>,
}

impl<T> Producer<'_, T> {
    /// [`Queue::push`].
    pub fn push(&self, job: T) -> Result<(), NoWorkers<T>> {
        self.queue.push(job)
    }
}

impl<T> Drop for Producer<'_, T> {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// A consumer of a [`Queue`].
pub struct Worker<'q, T> {
    queue: &'q Queue<T>,
}

impl<T> Worker<'_, T> {
    /// The next job, waiting for one; `None` once the queue is closed and
    /// empty.
    pub fn pop(&self) -> Option<T> {
        let q = self.queue;
        let mut state = q.lock();
        loop {
            if let Some(job) = state.queued.pop_front() {
                let wake = std::mem::take(&mut state.full_wait);
                drop(state);
                if wake {
                    q.room.notify_one();
                }
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = q.jobs.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }
}

impl<T> Drop for Worker<'_, T> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.workers -= 1;
        let last = state.workers == 0;
        drop(state);
        if last {
            // A producer waiting for room would wait for ever.
            self.queue.room.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    #[test]
    fn every_job_is_taken_once_in_order_per_worker() {
        let q = Queue::new(2);
        let taken = Mutex::new(Vec::new());
        thread::scope(|s| {
            for _ in 0..3 {
                let w = q.worker();
                let taken = &taken;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(j) = w.pop() {
                        mine.push(j);
                    }
                    // One worker sees its jobs in the order they were queued.
                    assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
                    taken.lock().expect("taken").extend(mine);
                });
            }
            for j in 0..1000 {
                q.push(j).expect("workers are there");
            }
            q.close();
        });
        let mut taken = taken.into_inner().expect("taken");
        taken.sort_unstable();
        assert_eq!(taken, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_queue_holds_the_producer_until_a_job_leaves() {
        let q = Queue::new(2);
        let w = q.worker();
        q.push(1).expect("room");
        q.push(2).expect("room");
        let pushed = AtomicUsize::new(0);
        thread::scope(|s| {
            s.spawn(|| {
                q.push(3).expect("room after a pop");
                pushed.store(1, Ordering::SeqCst);
            });
            thread::sleep(Duration::from_millis(50));
            assert_eq!(pushed.load(Ordering::SeqCst), 0, "the queue was full");
            assert_eq!(q.len(), 2);
            assert_eq!(w.pop(), Some(1));
        });
        assert_eq!(pushed.load(Ordering::SeqCst), 1);
        q.close();
        assert_eq!((w.pop(), w.pop(), w.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn dropping_the_producer_closes_the_queue_even_in_a_panic() {
        let q = Queue::new(4);
        let w = q.worker();
        let panicked = thread::scope(|s| {
            s.spawn(|| {
                let p = q.producer();
                p.push(1).expect("room");
                panic!("the reader failed");
            })
            .join()
            .is_err()
        });
        assert!(panicked);
        assert_eq!((w.pop(), w.pop()), (Some(1), None), "drained, then ended");
    }

    #[test]
    fn a_closed_queue_is_drained_then_ends() {
        let q = Queue::new(4);
        let w = q.worker();
        q.push("a").expect("room");
        q.close();
        assert_eq!(w.pop(), Some("a"));
        assert_eq!(w.pop(), None);
        assert_eq!(w.pop(), None);
    }

    #[test]
    fn a_push_with_no_workers_left_fails_and_gives_the_job_back() {
        let q = Queue::new(1);
        assert!(matches!(q.push(7), Err(NoWorkers(7))), "none registered");
        let w = q.worker();
        q.push(1).expect("a worker");
        thread::scope(|s| {
            // The producer waits for room; the only worker goes away (as a
            // panicking one would) and the push fails instead of hanging.
            let waiting = s.spawn(|| q.push(2));
            thread::sleep(Duration::from_millis(50));
            drop(w);
            assert!(matches!(waiting.join().expect("push"), Err(NoWorkers(2))));
        });
    }

    #[test]
    fn idle_workers_wake_for_each_job() {
        let q = Queue::new(1);
        let done = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                let w = q.worker();
                let done = &done;
                s.spawn(move || {
                    while w.pop().is_some() {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            // Let every worker go idle first, then feed them one at a time.
            thread::sleep(Duration::from_millis(50));
            for j in 0..100 {
                q.push(j).expect("workers");
            }
            q.close();
        });
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }
}
