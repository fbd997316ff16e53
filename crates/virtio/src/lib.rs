//! Stratum's virtio layer: the virtio-mmio transport (version 2) and split
//! virtqueues, shared by every paravirtual device a VM gets.
//!
//! - [`transport`]: one virtio-mmio register window — feature
//!   negotiation, the status rules, the queues' configuration, the
//!   interrupt line — as a device on the VM's MMIO bus
//!   ([`stratum_core::bus::MmioDevice`]).
//! - [`device`]: the [`device::VirtioDevice`] trait each device (net,
//!   vsock, console, later a proxy for a backend in another VM) implements
//!   to plug into the transport; [`device::NoDevice`] reads DeviceID 0.
//! - [`queue`]: split virtqueues — walking the available ring and
//!   descriptor chains (indirect tables included) into checked
//!   [`chain::Chain`]s, returning used buffers, `EVENT_IDX` and
//!   `NO_INTERRUPT` notification suppression.
//! - [`chain`]: the bounded, checked view of one descriptor chain and the
//!   copies into and out of its buffers.
//! - [`net`]: the virtio-net device (a VM's NIC) and the frame copies in
//!   and out of its queues.
//! - [`switch`]: the virtual switch between the NICs of one network:
//!   learning, flooding, bounded work, the locking the glue follows.
//! - [`blk`]: the virtio-block device as a frontend: requests parsed,
//!   checked and kept in flight for a backend elsewhere, completed later.
//! - [`console`]: the virtio-console device (one port: output handed to
//!   the glue, input pushed into the guest's buffers).
//! - [`vsock`]: the virtio-vsock device and its packet header.
//! - [`slots`]: one VM's 32 transports as one bus device: its console,
//!   vsock device and NICs behind theirs, the others empty as on `virt`.
//! - [`router`]: delivers vsock packets between VMs by CID, deny by
//!   default, with a bounded connection table per VM.
//! - [`mem`]: guest memory as the queues see it ([`mem::GuestMemory`]),
//!   copy in, copy out, and a fake over a slice for tests.
//! - [`spec`]: the specification's numbers.
//!
//! # Invariants
//! The guest's rings are hostile input. Every index, address, length and
//! flag is checked before use; anything wrong is a typed error
//! ([`queue::QueueError`], [`transport::TransportError`]) that the
//! transport answers as the spec says (drop and count, or
//! `DEVICE_NEEDS_RESET` with the configuration-change interrupt); no guest
//! input can panic this crate or make it loop without bound, and guest
//! memory is only ever copied, never referenced. `no_std`,
//! `forbid(unsafe_code)`, no allocation: a transport is a fixed-size value.
//!
//! Specification references are to virtio 1.2 (OASIS, 2022).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod blk;
pub mod chain;
pub mod console;
pub mod device;
pub mod disklink;
pub mod mem;
pub mod net;
pub mod queue;
pub mod router;
pub mod slots;
pub mod spec;
pub mod switch;
pub mod transport;
pub mod vsock;

pub use chain::{Chain, Segment};
pub use device::{NoDevice, Queues, VirtioDevice};
pub use mem::{GuestMemory, MemError, SliceMemory};
pub use queue::{QueueError, SplitQueue};
pub use slots::{VmVirtio, Work};
pub use transport::{Counters, Transport, TransportError};

#[cfg(test)]
mod tests;
