//! The hypervisor's end of the disk protocol in miniature: read the hello
//! and its regions, send requests (with an inline write's data), read
//! replies (with an inline read's data). A placed request is sent like any
//! other, with no data: the caller copies a placed write's data into the
//! daemon's placed space first and a placed read's out after the reply,
//! as the hypervisor does. The self-test ([`crate::selftest`]) and the
//! unit tests drive a session with it; the real hypervisor's end is
//! `crates/virtio`'s.

use std::io::{self, Read, Write};

use stratum_abi::blkproto::{Hello, Region, Reply, Request};

/// A stream to a session, seen from the hypervisor's side.
pub struct Client<S> {
    stream: S,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<S: Read + Write> Client<S> {
    /// A client on `stream` (the hello not yet read).
    pub fn new(stream: S) -> Self {
        Self { stream }
    }

    /// Reads the session's hello and the regions that follow it.
    pub fn hello(&mut self) -> io::Result<(Hello, Vec<Region>)> {
        let mut b = [0u8; Hello::LEN];
        self.stream.read_exact(&mut b)?;
        let hello =
            Hello::decode(&b).ok_or_else(|| invalid("not a hello of this protocol version"))?;
        let regions = (0..hello.regions)
            .map(|_| {
                let mut b = [0u8; Region::LEN];
                self.stream.read_exact(&mut b)?;
                Region::decode(&b).ok_or_else(|| invalid("a region not aligned, empty or wrapping"))
            })
            .collect::<io::Result<_>>()?;
        Ok((hello, regions))
    }

    /// Sends `req` and `data` (an inline write's data; empty otherwise).
    pub fn send(&mut self, req: &Request, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(&req.encode())?;
        self.stream.write_all(data)?;
        self.stream.flush()
    }

    /// Reads one reply and the data that follows it.
    pub fn reply(&mut self) -> io::Result<(Reply, Vec<u8>)> {
        let mut b = [0u8; Reply::LEN];
        self.stream.read_exact(&mut b)?;
        let reply = Reply::decode(&b).ok_or_else(|| invalid("a reply's reserved word is set"))?;
        let mut data = vec![0u8; usize::try_from(reply.bytes).map_err(|_| invalid("huge"))?];
        self.stream.read_exact(&mut data)?;
        Ok((reply, data))
    }

    /// [`Client::send`] then [`Client::reply`], which must be `req`'s.
    pub fn call(&mut self, req: &Request, data: &[u8]) -> io::Result<(Reply, Vec<u8>)> {
        self.send(req, data)?;
        let (reply, data) = self.reply()?;
        if reply.id == req.id {
            Ok((reply, data))
        } else {
            Err(invalid("a reply for another request"))
        }
    }

    /// The stream (the tests write malformed bytes and shut it down).
    #[cfg(test)]
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }
}
