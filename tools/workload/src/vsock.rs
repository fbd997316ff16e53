//! The vsock modes: Linux's end of the Linux ↔ bare-metal vsock test.
//!
//! - `vsock-echo CID PORT N`: an `AF_VSOCK` stream connection to CID:PORT
//!   (an echo server: the `vsockecho` test guest), then N messages of
//!   varying length ([`message_len`], 1 to 4096 bytes) of a pattern that
//!   differs per message and per byte ([`pattern`]); each is written, its
//!   echo read back whole and checked byte for byte before the next. Then
//!   the write side is shut down and the program reads until the peer
//!   closes, so the server has seen the shutdown before this program exits
//!   (and the VM powers off). Prints `vsock-echo: N messages, B bytes, all
//!   matched`.
//! - `vsock-denied CID PORT`: the connection must be refused (`ECONNRESET`
//!   or `ECONNREFUSED`: the hypervisor's router answers a pair the config
//!   does not allow with a reset); prints `vsock-denied: connect to CID C
//!   port P refused: …`.
//!
//! Every failure is one line naming what failed, and a non-zero status
//! ([`run`]). Receives time out after [`RECV_TIMEOUT`], so a lost packet
//! is a clear failure, not a hung test.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;

/// How long one receive may wait.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest message.
pub const MAX_MESSAGE: usize = 4096;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Echo `messages` messages through CID:port.
    Echo { cid: u32, port: u32, messages: u32 },
    /// Expect the connection to CID:port to be refused.
    Denied { cid: u32, port: u32 },
}

/// The mode the words ask for: `None` when the first word is not a vsock
/// mode, an error when it is but the rest is wrong.
pub fn parse(words: &[&str]) -> Option<Result<Mode, String>> {
    let number = |what: &str, w: Option<&&str>| -> Result<u32, String> {
        let w = w.ok_or_else(|| format!("missing {what}"))?;
        w.parse()
            .map_err(|_| format!("{what} `{w}`: not a number from 0 to 4294967295"))
    };
    let (mode, rest) = words.split_first()?;
    let parsed = match *mode {
        "vsock-echo" => (|| {
            if rest.len() != 3 {
                return Err("usage: vsock-echo CID PORT N".to_owned());
            }
            let messages = number("N", rest.get(2))?;
            if messages == 0 {
                return Err("N: at least one message".to_owned());
            }
            Ok(Mode::Echo {
                cid: number("CID", rest.first())?,
                port: number("PORT", rest.get(1))?,
                messages,
            })
        })(),
        "vsock-denied" => (|| {
            if rest.len() != 2 {
                return Err("usage: vsock-denied CID PORT".to_owned());
            }
            Ok(Mode::Denied {
                cid: number("CID", rest.first())?,
                port: number("PORT", rest.get(1))?,
            })
        })(),
        _ => return None,
    };
    Some(parsed)
}

/// Length of item `i` of `n` (a message, a datagram): from 1 byte (the
/// first) to `max` (the last), spread over the range in between (7919 is
/// prime, so `i · 7919 mod max` visits every residue for any `max` it does
/// not divide: 4096, 1472).
pub fn spread_len(i: u32, n: u32, max: usize) -> usize {
    if i + 1 == n && n > 1 {
        return max;
    }
    1 + (i as usize * 7919) % max
}

/// Message `i`'s length of `n`: [`spread_len`] up to [`MAX_MESSAGE`].
pub fn message_len(i: u32, n: u32) -> usize {
    spread_len(i, n, MAX_MESSAGE)
}

/// Byte `j` of message `i`: differs between neighbouring bytes and
/// between messages, and is not periodic in 256.
pub fn pattern(i: u32, j: usize) -> u8 {
    (i.wrapping_mul(131) as usize ^ j.wrapping_mul(7) ^ (j >> 8).wrapping_mul(29)) as u8
}

/// The first byte where `got` differs from message `i`: its index, what
/// came and what was sent.
pub fn first_mismatch(i: u32, got: &[u8]) -> Option<(usize, u8, u8)> {
    got.iter()
        .enumerate()
        .map(|(j, &b)| (j, b, pattern(i, j)))
        .find(|&(_, b, want)| b != want)
}

/// Runs `mode`: the line to print and the exit status.
pub fn run(mode: Mode) -> (String, u8) {
    match mode {
        Mode::Echo {
            cid,
            port,
            messages,
        } => match echo(cid, port, messages) {
            Ok(bytes) => (
                format!("vsock-echo: {messages} messages, {bytes} bytes, all matched"),
                0,
            ),
            Err(e) => (format!("vsock-echo: FAILED: {e}"), 1),
        },
        Mode::Denied { cid, port } => match connect(cid, port) {
            Ok(_) => (
                format!(
                    "vsock-denied: FAILED: connect to CID {cid} port {port} succeeded, but the config does not allow it"
                ),
                1,
            ),
            Err(e) if refused(&e) => (
                format!("vsock-denied: connect to CID {cid} port {port} refused: {e}"),
                0,
            ),
            Err(e) => (
                format!(
                    "vsock-denied: FAILED: connect to CID {cid} port {port}: {e} (want a refusal)"
                ),
                1,
            ),
        },
    }
}

/// Whether a connect error is the refusal a denied pair gets.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET) | Some(libc::ECONNREFUSED)
    )
}

/// A stream socket connected to CID:port, receives timing out after
/// [`RECV_TIMEOUT`].
fn connect(cid: u32, port: u32) -> io::Result<std::fs::File> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT
            .as_secs()
            .try_into()
            .expect("the timeout is a few seconds"),
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a pointer to a live timeval and its size.
    let r = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: connect with a pointer to a live sockaddr_vm and its size.
    let r = unsafe {
        libc::connect(
            raw,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::fs::File::from(fd))
}

/// The echo exchange: the payload bytes sent (and matched).
fn echo(cid: u32, port: u32, messages: u32) -> Result<u64, String> {
    let mut sock =
        connect(cid, port).map_err(|e| format!("connect to CID {cid} port {port}: {e}"))?;
    println!("vsock-echo: connected to CID {cid} port {port}");
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut back = vec![0u8; MAX_MESSAGE];
    let mut bytes = 0u64;
    for i in 0..messages {
        let len = message_len(i, messages);
        for (j, b) in out[..len].iter_mut().enumerate() {
            *b = pattern(i, j);
        }
        sock.write_all(&out[..len])
            .map_err(|e| format!("message {i} ({len} bytes): send: {e}"))?;
        sock.read_exact(&mut back[..len])
            .map_err(|e| format!("message {i} ({len} bytes): receiving the echo: {e}"))?;
        if let Some((j, got, want)) = first_mismatch(i, &back[..len]) {
            return Err(format!(
                "message {i} ({len} bytes): byte {j} came back {got:#04x}, sent {want:#04x}"
            ));
        }
        bytes += len as u64;
    }
    // SAFETY: shutdown(2) of the write side of our own socket.
    if unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&sock), libc::SHUT_WR) } < 0 {
        return Err(format!("shutdown: {}", io::Error::last_os_error()));
    }
    // The server closes once it has seen the shutdown: end of stream (or a
    // reset, which is how a vsock peer closes too). Anything more is a
    // byte it should not have sent.
    let mut extra = [0u8; 64];
    match sock.read(&mut extra) {
        Ok(0) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
        Ok(n) => return Err(format!("{n} bytes after the last echo")),
        Err(e) => return Err(format!("waiting for the server to close: {e}")),
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modes_parse_and_bad_words_are_refused() {
        assert_eq!(parse(&["console=ttyAMA0"]), None);
        assert_eq!(parse(&[]), None);
        assert_eq!(
            parse(&["vsock-echo", "4", "1234", "1000"]),
            Some(Ok(Mode::Echo {
                cid: 4,
                port: 1234,
                messages: 1000
            }))
        );
        assert_eq!(
            parse(&["vsock-denied", "5", "1234"]),
            Some(Ok(Mode::Denied { cid: 5, port: 1234 }))
        );
        for (bad, why) in [
            (&["vsock-echo", "4", "1234"][..], "usage"),
            (&["vsock-echo", "4", "1234", "0"], "at least one"),
            (&["vsock-echo", "x", "1234", "3"], "CID `x`"),
            (&["vsock-echo", "4", "-1", "3"], "PORT `-1`"),
            (&["vsock-echo", "4", "1", "3", "extra"], "usage"),
            (&["vsock-denied", "4"], "usage"),
            (&["vsock-denied", "4", "99999999999"], "PORT"),
        ] {
            match parse(bad) {
                Some(Err(e)) => assert!(e.contains(why), "{bad:?}: {e}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn messages_cover_one_byte_to_the_maximum() {
        let lens: Vec<usize> = (0..1000).map(|i| message_len(i, 1000)).collect();
        assert_eq!(lens[0], 1);
        assert_eq!(lens[999], MAX_MESSAGE);
        assert!(lens.iter().all(|&l| (1..=MAX_MESSAGE).contains(&l)));
        let distinct: std::collections::BTreeSet<_> = lens.iter().collect();
        assert!(distinct.len() > 900, "varied lengths: {}", distinct.len());
        assert_eq!(message_len(0, 1), 1, "a single message is one byte");
    }

    #[test]
    fn the_pattern_finds_a_changed_byte() {
        let msg: Vec<u8> = (0..4096).map(|j| pattern(7, j)).collect();
        assert_eq!(first_mismatch(7, &msg), None);
        assert!(
            first_mismatch(8, &msg).is_some(),
            "another message's bytes differ"
        );
        let mut bad = msg.clone();
        bad[3000] ^= 1;
        assert_eq!(
            first_mismatch(7, &bad),
            Some((3000, msg[3000] ^ 1, msg[3000]))
        );
        // Not periodic in 256: a stream shifted by 256 bytes is caught.
        assert!(first_mismatch(7, &msg[256..]).is_some());
    }

    #[test]
    fn refusals_are_resets_or_refused_connections() {
        assert!(refused(&io::Error::from_raw_os_error(libc::ECONNRESET)));
        assert!(refused(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!refused(&io::Error::from_raw_os_error(libc::ETIMEDOUT)));
    }
}
