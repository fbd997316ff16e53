//! The UDP mode: Linux's end of the Linux ↔ bare-metal virtio-net test.
//!
//! `udp-echo ADDR PORT N`: a UDP socket connected to ADDR:PORT (an echo
//! host: the `netecho` test guest). First it sends empty datagrams, one a
//! second, until one comes back ([`REACH_PATIENCE`]: the peer may still
//! be booting, and the first also waits for ARP). Then N datagrams of
//! varying length ([`datagram_len`], 1 to [`MAX_DATAGRAM`] bytes, the most
//! one 1500-byte IPv4 packet carries) with the pattern of the vsock modes
//! ([`crate::vsock::pattern`]); each is sent, its echo received and checked
//! byte for byte (length, content, and that it came from ADDR:PORT)
//! before the next. None is sent again: on a path that loses nothing, one
//! lost datagram is a failure. Last, the stop datagram (`netecho: stop`),
//! whose echo ends the run. Prints `udp-echo: N datagrams, B bytes, all
//! matched (K tries to reach ADDR:PORT)`.
//!
//! Linux sends every datagram with its checksum left to the NIC (the
//! virtio-net device offers the offload, and `netecho`'s driver does
//! not take it), so each echo also proves that the hypervisor's switch
//! completed the checksum: `netecho` drops a datagram whose checksum does
//! not verify, and the echo never comes.
//!
//! Every failure is one line naming what failed, and a non-zero status.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use stratum_abi::workload::UDP_ECHO_STOP as STOP;

use crate::vsock::{first_mismatch, pattern, spread_len};

/// How long one echo may take.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first echo may take to come, one try a second.
pub const REACH_PATIENCE: Duration = Duration::from_secs(60);
/// The largest payload: a 1500-byte IPv4 packet less its 20-byte header
/// and UDP's 8.
pub const MAX_DATAGRAM: usize = 1472;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// The echo host.
    pub addr: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Datagrams to echo after the first.
    pub datagrams: u32,
}

/// The mode the words ask for: `None` when the first word is not
/// `udp-echo`, an error when it is but the rest is wrong.
pub fn parse(words: &[&str]) -> Option<Result<Mode, String>> {
    let (mode, rest) = words.split_first()?;
    if *mode != "udp-echo" {
        return None;
    }
    Some((|| {
        let [addr, port, n] = rest else {
            return Err("usage: udp-echo ADDR PORT N".to_owned());
        };
        let addr = addr
            .parse()
            .map_err(|_| format!("ADDR `{addr}`: not an IPv4 address"))?;
        let port = port
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("PORT `{port}`: not a number from 1 to 65535"))?;
        let datagrams = n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("N `{n}`: not a number from 1 to 4294967295"))?;
        Ok(Mode {
            addr,
            port,
            datagrams,
        })
    })())
}

/// Datagram `i`'s length of `n`: [`spread_len`] up to [`MAX_DATAGRAM`].
pub fn datagram_len(i: u32, n: u32) -> usize {
    spread_len(i, n, MAX_DATAGRAM)
}

/// Runs `mode`: the line to print and the exit status.
pub fn run(mode: Mode) -> (String, u8) {
    match echo(mode) {
        Ok((bytes, tries)) => (
            format!(
                "udp-echo: {} datagrams, {bytes} bytes, all matched ({tries} tries to reach {}:{})",
                mode.datagrams, mode.addr, mode.port
            ),
            0,
        ),
        Err(e) => (format!("udp-echo: FAILED: {e}"), 1),
    }
}

/// Receives one datagram into `buf`, which must come from `from`: its
/// length.
fn recv_from(sock: &UdpSocket, from: SocketAddr, buf: &mut [u8]) -> io::Result<usize> {
    let (n, src) = sock.recv_from(buf)?;
    // A connected socket only gets its peer's datagrams.
    if src != from {
        return Err(io::Error::other(format!(
            "a datagram from {src}, not {from}"
        )));
    }
    Ok(n)
}

/// The exchange: the payload bytes matched, and the tries it took to
/// reach the peer.
fn echo(mode: Mode) -> Result<(u64, u32), String> {
    let peer = SocketAddr::V4(SocketAddrV4::new(mode.addr, mode.port));
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    sock.connect(peer)
        .map_err(|e| format!("connect to {peer}: {e}"))?;
    let mut back = vec![0u8; MAX_DATAGRAM + 1];
    // Reach the peer: empty datagrams, one a second.
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("set a timeout: {e}"))?;
    let mut tries = 0u32;
    loop {
        tries += 1;
        // An ARP that failed shows as EHOSTUNREACH on a later send: retry.
        let _ = sock.send(&[]);
        match recv_from(&sock, peer, &mut back) {
            Ok(0) => break,
            Ok(n) => return Err(format!("the first echo has {n} bytes, the datagram none")),
            Err(_) if Duration::from_secs(tries.into()) < REACH_PATIENCE => {}
            Err(e) => {
                return Err(format!(
                    "no echo from {peer} in {tries} tries, one a second: {e}"
                ));
            }
        }
    }
    sock.set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(|e| format!("set a timeout: {e}"))?;
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut bytes = 0u64;
    for i in 0..mode.datagrams {
        let len = datagram_len(i, mode.datagrams);
        for (j, b) in out[..len].iter_mut().enumerate() {
            *b = pattern(i, j);
        }
        sock.send(&out[..len])
            .map_err(|e| format!("datagram {i} ({len} bytes): send: {e}"))?;
        let n = recv_from(&sock, peer, &mut back)
            .map_err(|e| format!("datagram {i} ({len} bytes): receiving the echo: {e}"))?;
        if n != len {
            return Err(format!("datagram {i}: {len} bytes sent, {n} came back"));
        }
        if let Some((j, got, want)) = first_mismatch(i, &back[..n]) {
            return Err(format!(
                "datagram {i} ({len} bytes): byte {j} came back {got:#04x}, sent {want:#04x}"
            ));
        }
        bytes += len as u64;
    }
    sock.send(STOP)
        .map_err(|e| format!("the stop datagram: {e}"))?;
    let n =
        recv_from(&sock, peer, &mut back).map_err(|e| format!("the stop datagram's echo: {e}"))?;
    if back[..n] != *STOP {
        return Err(format!("the stop datagram came back as {:?}", &back[..n]));
    }
    Ok((bytes, tries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_parses_and_bad_words_are_refused() {
        assert_eq!(parse(&["tcp-sink", "1"]), None);
        assert_eq!(parse(&[]), None);
        assert_eq!(
            parse(&["udp-echo", "10.0.0.2", "7", "1000"]),
            Some(Ok(Mode {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                port: 7,
                datagrams: 1000
            }))
        );
        for (bad, why) in [
            (&["udp-echo", "10.0.0.2", "7"][..], "usage"),
            (&["udp-echo", "10.0.0.2", "7", "1", "x"], "usage"),
            (&["udp-echo", "10.0.0", "7", "1"], "ADDR"),
            (&["udp-echo", "10.0.0.2", "0", "1"], "PORT `0`"),
            (&["udp-echo", "10.0.0.2", "70000", "1"], "PORT"),
            (&["udp-echo", "10.0.0.2", "7", "0"], "N `0`"),
        ] {
            match parse(bad) {
                Some(Err(e)) => assert!(e.contains(why), "{bad:?}: {e}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn datagrams_cover_one_byte_to_a_full_packet() {
        let lens: Vec<usize> = (0..1000).map(|i| datagram_len(i, 1000)).collect();
        assert_eq!(lens[0], 1);
        assert_eq!(lens[999], MAX_DATAGRAM);
        assert!(lens.iter().all(|&l| (1..=MAX_DATAGRAM).contains(&l)));
        let distinct: std::collections::BTreeSet<_> = lens.iter().collect();
        assert!(distinct.len() > 900, "varied lengths: {}", distinct.len());
        // Every length from 1 to the maximum turns up in 1,472 datagrams.
        let all: std::collections::BTreeSet<_> = (0..1472).map(|i| datagram_len(i, 2000)).collect();
        assert_eq!(all.len(), MAX_DATAGRAM);
    }

    #[test]
    fn an_echo_over_loopback_matches() {
        // A loopback echo host stands in for netecho.
        let host = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = host.recv_from(&mut buf).unwrap();
                host.send_to(&buf[..n], from).unwrap();
                if buf[..n] == *STOP {
                    return;
                }
            }
        });
        let mode = Mode {
            addr: Ipv4Addr::LOCALHOST,
            port,
            datagrams: 50,
        };
        let (line, status) = run(mode);
        assert_eq!(status, 0, "{line}");
        let bytes: usize = (0..50).map(|i| datagram_len(i, 50)).sum();
        assert!(
            line.starts_with(&format!(
                "udp-echo: 50 datagrams, {bytes} bytes, all matched (1 tries"
            )),
            "{line}"
        );
        server.join().unwrap();
    }
}
