//! Reaching the hypervisor: a vsock stream connection from the service VM
//! to CID [`HOST_CID`] (the hypervisor plays the host), port [`PORT`],
//! retried with a [`Backoff`] until it is accepted.
//!
//! The hypervisor may not listen yet (the service VM boots first, or its
//! vsock device is not ready) or may refuse while a previous connection is
//! being torn down: each failure waits a little longer, 10 ms doubling up
//! to [`MAX_WAIT`] (1 s), and is logged once per distinct error, not per
//! try, so a long wait does not flood the console.

use std::io;
use std::thread;
use std::time::Duration;

use stratum_abi::blkproto::{HOST_CID, PORT};
use vsock::{VsockAddr, VsockStream};

use crate::log;

/// The first wait.
pub const FIRST_WAIT: Duration = Duration::from_millis(10);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Waits growing from [`FIRST_WAIT`], doubling, to [`MAX_WAIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Starts at [`FIRST_WAIT`].
    pub fn new() -> Self {
        Self { next: FIRST_WAIT }
    }

    /// The next wait (and doubles the one after, up to [`MAX_WAIT`]).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(MAX_WAIT);
        wait
    }

    /// Back to [`FIRST_WAIT`] (after a connection that worked).
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Connects to the hypervisor, retrying until it accepts (see the module
/// docs); never gives up.
pub fn connect(backoff: &mut Backoff) -> VsockStream {
    let addr = VsockAddr::new(HOST_CID, PORT);
    let mut last: Option<(io::ErrorKind, Option<i32>)> = None;
    loop {
        match VsockStream::connect(&addr) {
            Ok(stream) => {
                backoff.reset();
                return stream;
            }
            Err(e) => {
                let what = (e.kind(), e.raw_os_error());
                if last != Some(what) {
                    log(format_args!(
                        "cannot connect to the hypervisor (CID {HOST_CID} port {PORT}): {e}; \
                         retrying every {} ms at most",
                        MAX_WAIT.as_millis()
                    ));
                    last = Some(what);
                }
                thread::sleep(backoff.next_wait());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_second_and_reset() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..10).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), FIRST_WAIT);
    }
}
