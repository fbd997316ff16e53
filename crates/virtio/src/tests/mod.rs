//! Tests of the transport and the virtqueues through a model driver: every
//! register, every hostile-ring error, a loopback device driven end to
//! end, and properties over random ring memory.

mod blk;
mod console;
mod disklink;
pub(crate) mod driver;
mod loopback;
mod net;
mod prop;
mod queue;
mod slots;
mod transport;
mod vsock;
