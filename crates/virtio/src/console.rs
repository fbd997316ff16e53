//! The virtio-console device (virtio 1.2 §5.3): one port, Linux's `hvc0`.
//!
//! No feature is offered (no `VIRTIO_CONSOLE_F_MULTIPORT`, no size, no
//! emergency write), so there is no configuration space to speak of and
//! two queues: 0 receives (input for the guest), 1 transmits (its
//! output).
//!
//! Output: a transmit notify copies the guest's bytes into the device's
//! output buffer ([`OUTPUT_CAP`] bytes), which the glue drains with
//! [`ConsoleDevice::take_output`] and prints tagged like the VM's UART
//! lines. When the buffer is full the rest of a chain stays in the ring
//! (nothing is lost, nothing grows), and the glue resumes with
//! [`ConsoleDevice::pump`] after draining. Input: the glue pushes bytes
//! with [`ConsoleDevice::push_input`] (a fixed [`INPUT_CAP`]-byte FIFO;
//! beyond, bytes are dropped and counted, as for the UART) and runs
//! [`ConsoleDevice::pump`]; bytes go into receive buffers as the driver
//! posts them.

use stratum_core::ring::ByteRing;

use crate::device::{Queues, VirtioDevice};
use crate::mem::GuestMemory;
use crate::queue::QueueError;
use crate::spec::device_id;

/// The receive queue (`receiveq0`).
pub const RX: u16 = 0;
/// The transmit queue (`transmitq0`).
pub const TX: u16 = 1;
/// Entries of each queue at most.
pub const QUEUE_SIZE: u16 = 64;
/// Bytes of output held for the glue.
pub const OUTPUT_CAP: usize = 4096;
/// Bytes of input held for the guest.
pub const INPUT_CAP: usize = 1024;
/// Bytes copied per guest-memory access.
const STEP: usize = 256;

/// One VM's virtio-console.
#[derive(Clone, Debug, Default)]
pub struct ConsoleDevice {
    output: ByteRing<OUTPUT_CAP>,
    input: ByteRing<INPUT_CAP>,
    /// Bytes of the transmit ring's first chain already taken.
    tx_offset: u32,
}

impl ConsoleDevice {
    /// A console with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves up to `buf.len()` bytes of the guest's output into `buf`;
    /// how many.
    pub fn take_output(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for slot in buf.iter_mut() {
            let Some(b) = self.output.pop() else { break };
            *slot = b;
            n += 1;
        }
        n
    }

    /// Whether output waits for the glue.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Queues `bytes` for the guest; how many fitted (the rest were
    /// dropped and counted in [`ConsoleDevice::input_dropped`]).
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        bytes.iter().filter(|&&b| self.input.push(b)).count()
    }

    /// Input bytes dropped because the guest did not read them.
    pub fn input_dropped(&self) -> u64 {
        self.input.dropped()
    }

    /// Moves what can move: the guest's output into the output buffer,
    /// queued input into the guest's receive buffers.
    pub fn pump(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), (u16, QueueError)> {
        self.drain_tx(queues, mem).map_err(|e| (TX, e))?;
        self.fill_rx(queues, mem).map_err(|e| (RX, e))
    }

    /// Copies transmit chains into the output buffer while it has room; a
    /// chain is returned once all its bytes are in.
    fn drain_tx(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        // A queue the driver has not made ready holds nothing.
        let Ok(tx) = queues.get(TX) else {
            return Ok(());
        };
        // At most a ring's worth of chains per call.
        for _ in 0..tx.size() {
            let mut probe = *tx;
            let Some(chain) = probe.pop(mem)? else {
                return Ok(());
            };
            let total = chain.readable_len();
            let mut buf = [0u8; STEP];
            while self.tx_offset < total {
                let room = OUTPUT_CAP - self.output.len();
                let n = (total - self.tx_offset).min(STEP as u32).min(room as u32) as usize;
                if n == 0 {
                    // Full: the chain stays until the glue drains.
                    return Ok(());
                }
                chain.read(mem, self.tx_offset, &mut buf[..n])?;
                for &b in &buf[..n] {
                    self.output.push(b);
                }
                self.tx_offset += n as u32;
            }
            *tx = probe;
            tx.add_used(mem, chain.head(), 0)?;
            self.tx_offset = 0;
        }
        Ok(())
    }

    /// Writes queued input into receive buffers, one chain at a time.
    fn fill_rx(
        &mut self,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        let Ok(rx) = queues.get(RX) else {
            return Ok(());
        };
        while !self.input.is_empty() {
            let Some(chain) = rx.pop(mem)? else {
                return Ok(());
            };
            let cap = chain.writable_len() as usize;
            let mut buf = [0u8; STEP];
            let mut written = 0usize;
            while written < cap {
                let mut n = 0;
                while n < STEP.min(cap - written) {
                    let Some(b) = self.input.pop() else { break };
                    buf[n] = b;
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                chain.write(mem, written as u32, &buf[..n])?;
                written += n;
            }
            rx.add_used(mem, chain.head(), written as u32)?;
        }
        Ok(())
    }
}

impl VirtioDevice for ConsoleDevice {
    fn device_id(&self) -> u32 {
        device_id::CONSOLE
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        2
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        if queue < 2 { QUEUE_SIZE } else { 0 }
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut Queues<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        match queue {
            TX => self.drain_tx(queues, mem),
            RX => self.fill_rx(queues, mem),
            other => Err(QueueError::NoSuchQueue(other)),
        }
    }

    fn reset(&mut self) {
        // Output already taken from the guest is still printed; input
        // queued for the old driver is not for the new one.
        self.input = ByteRing::new();
        self.tx_offset = 0;
    }
}
