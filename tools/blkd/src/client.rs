//! The hypervisor's end of the disk protocol in miniature: read the hello,
//! send requests (with a write's data), read replies (with a read's
//! data). The self-test ([`crate::selftest`]) and the unit tests drive a
//! session with it; the real hypervisor's end is `crates/virtio`'s.

use std::io::{self, Read, Write};

use stratum_abi::blkproto::{Hello, Reply, Request};

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

    /// Reads the session's hello.
    pub fn hello(&mut self) -> io::Result<Hello> {
        let mut b = [0u8; Hello::LEN];
        self.stream.read_exact(&mut b)?;
        Hello::decode(&b).ok_or_else(|| invalid("not a hello of this protocol version"))
    }

    /// Sends `req` and `data` (a write's data; empty otherwise).
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
