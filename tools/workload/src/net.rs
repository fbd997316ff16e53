//! The TCP modes: the two ends of `stratum bench`'s VM ↔ VM throughput
//! figure, run with `exec` in two Debian VMs on one `[[network]]`.
//!
//! - `tcp-sink PORT`: accepts one connection on PORT, reads until the
//!   sender shuts its side down, then answers with the byte count (8
//!   bytes, little-endian) and closes. Prints `tcp-sink: N bytes`.
//! - `tcp-send ADDR PORT MIB`: connects to ADDR:PORT (retrying while the
//!   sink is not listening yet, for [`CONNECT_PATIENCE`]), then writes MIB
//!   MiB in 64 KiB writes of one buffer, shuts its side down and waits for
//!   the sink's count, which must be every byte. The window, from the first
//!   write to the count's arrival, is timed with the virtual counter, and
//!   the interface's frame counters are read on both sides of it; the
//!   result is one [`NetTransfer`] line.
//!
//! As in `iperf`, neither end touches the payload beyond the socket calls,
//! so the figure is the network path's, not a checksum loop's; the
//! integrity of what the switch carries is the Linux network test's
//! (`tests/tests/linux.rs`, an MD5 over 4 MiB).
//!
//! Every failure is one line naming what failed, and a non-zero status.
//! Receives time out after [`RECV_TIMEOUT`], so a lost connection is a
//! clear failure, not a hung benchmark.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use stratum_abi::workload::NetTransfer;

use crate::counter;

/// How long one receive may wait.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `tcp-send` keeps trying to reach a sink that is not listening
/// yet (its VM boots beside the sender's).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(120);
/// The size of each write.
const CHUNK: usize = 64 * 1024;
/// The largest transfer, in MiB.
pub const MAX_MIB: u32 = 1024;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Receive one transfer on `port`.
    Sink { port: u16 },
    /// Send `mib` MiB to `addr:port`.
    Send { addr: Ipv4Addr, port: u16, mib: u32 },
}

/// The mode the words ask for: `None` when the first word is not a TCP
/// mode, an error when it is but the rest is wrong.
pub fn parse(words: &[&str]) -> Option<Result<Mode, String>> {
    let port = |w: Option<&&str>| -> Result<u16, String> {
        let w = w.ok_or("missing PORT")?;
        w.parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("PORT `{w}`: not a number from 1 to 65535"))
    };
    let (mode, rest) = words.split_first()?;
    let parsed = match *mode {
        "tcp-sink" => {
            if rest.len() == 1 {
                port(rest.first()).map(|port| Mode::Sink { port })
            } else {
                Err("usage: tcp-sink PORT".to_owned())
            }
        }
        "tcp-send" => (|| {
            if rest.len() != 3 {
                return Err("usage: tcp-send ADDR PORT MIB".to_owned());
            }
            let addr = rest[0]
                .parse()
                .map_err(|_| format!("ADDR `{}`: not an IPv4 address", rest[0]))?;
            let mib = rest[2]
                .parse()
                .ok()
                .filter(|m| (1..=MAX_MIB).contains(m))
                .ok_or_else(|| format!("MIB `{}`: not a number from 1 to {MAX_MIB}", rest[2]))?;
            Ok(Mode::Send {
                addr,
                port: port(rest.get(1))?,
                mib,
            })
        })(),
        _ => return None,
    };
    Some(parsed)
}

/// Runs `mode`: the line to print and the exit status.
pub fn run(mode: Mode) -> (String, u8) {
    match mode {
        Mode::Sink { port } => match sink(port) {
            Ok(n) => (format!("tcp-sink: {n} bytes"), 0),
            Err(e) => (format!("tcp-sink: FAILED: {e}"), 1),
        },
        Mode::Send { addr, port, mib } => match send(addr, port, mib) {
            Ok(t) => (t.to_string(), 0),
            Err(e) => (format!("tcp-send: FAILED: {e}"), 1),
        },
    }
}

/// Receives one transfer on `port`; the bytes received.
fn sink(port: u16) -> Result<u64, String> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| format!("listen on port {port}: {e}"))?;
    sink_on(&listener)
}

/// Receives one transfer from the first connection `listener` accepts.
fn sink_on(listener: &TcpListener) -> Result<u64, String> {
    let (mut sock, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    sock.set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(|e| format!("set the receive timeout: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = sock
            .read(&mut buf)
            .map_err(|e| format!("from {peer} after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    sock.write_all(&total.to_le_bytes())
        .map_err(|e| format!("answering {peer}: {e}"))?;
    Ok(total)
}

/// The first network interface that is not the loopback (the VM's NIC).
fn interface() -> Result<String, String> {
    let dir = std::fs::read_dir("/sys/class/net").map_err(|e| format!("/sys/class/net: {e}"))?;
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| "no network interface but lo".to_owned())
}

/// The interface's transmitted and received frame counts.
fn frames(interface: &str) -> Result<(u64, u64), String> {
    let read = |what: &str| -> Result<u64, String> {
        let path = format!("/sys/class/net/{interface}/statistics/{what}");
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e}"))?
            .trim()
            .parse()
            .map_err(|_| format!("{path}: not a number"))
    };
    Ok((read("tx_packets")?, read("rx_packets")?))
}

/// Connects to the sink, retrying while nothing listens yet.
fn connect(to: SocketAddrV4) -> Result<TcpStream, String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(to) {
            Ok(s) => return Ok(s),
            Err(e)
                if start.elapsed() < CONNECT_PATIENCE
                    && (matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
                    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("connect to {to}: {e}")),
        }
    }
}

/// Sends `mib` MiB and times it.
fn send(addr: Ipv4Addr, port: u16, mib: u32) -> Result<NetTransfer, String> {
    let to = SocketAddrV4::new(addr, port);
    let nic = interface()?;
    let mut sock = connect(to)?;
    sock.set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(|e| format!("set the receive timeout: {e}"))?;
    let bytes = u64::from(mib) << 20;
    let chunk: Vec<u8> = (0..CHUNK).map(|j| (j % 251) as u8).collect();
    let (tx0, rx0) = frames(&nic)?;
    let start = counter::now();
    let mut sent = 0u64;
    while sent < bytes {
        sock.write_all(&chunk)
            .map_err(|e| format!("to {to} after {sent} bytes: {e}"))?;
        sent += CHUNK as u64;
    }
    sock.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut answer = [0u8; 8];
    sock.read_exact(&mut answer)
        .map_err(|e| format!("waiting for {to}'s count: {e}"))?;
    let ticks = counter::now().saturating_sub(start);
    let (tx1, rx1) = frames(&nic)?;
    let got = u64::from_le_bytes(answer);
    if got != bytes {
        return Err(format!("{to} received {got} of the {bytes} bytes sent"));
    }
    Ok(NetTransfer {
        bytes,
        ticks,
        tx_frames: tx1.saturating_sub(tx0),
        rx_frames: rx1.saturating_sub(rx0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modes_parse_and_bad_words_are_refused() {
        assert_eq!(parse(&["console=ttyAMA0"]), None);
        assert_eq!(
            parse(&["tcp-sink", "5001"]),
            Some(Ok(Mode::Sink { port: 5001 }))
        );
        assert_eq!(
            parse(&["tcp-send", "10.0.0.1", "5001", "16"]),
            Some(Ok(Mode::Send {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                port: 5001,
                mib: 16
            }))
        );
        for (bad, why) in [
            (&["tcp-sink"][..], "usage"),
            (&["tcp-sink", "0"], "PORT `0`"),
            (&["tcp-sink", "70000"], "PORT"),
            (&["tcp-send", "10.0.0.1", "5001"], "usage"),
            (&["tcp-send", "10.0.0", "5001", "1"], "ADDR"),
            (&["tcp-send", "10.0.0.1", "5001", "0"], "MIB `0`"),
            (&["tcp-send", "10.0.0.1", "5001", "4096"], "MIB"),
        ] {
            match parse(bad) {
                Some(Err(e)) => assert!(e.contains(why), "{bad:?}: {e}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_transfer_over_loopback_is_counted_and_checked() {
        // The listener moves to the sink's thread, still bound: a port
        // released and bound again could be taken by anything meanwhile.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || sink_on(&listener));
        let mut sock = connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).expect("connect");
        let data = vec![7u8; 100_000];
        sock.write_all(&data).expect("write");
        sock.shutdown(Shutdown::Write).expect("shutdown");
        let mut answer = [0u8; 8];
        sock.read_exact(&mut answer).expect("the count");
        assert_eq!(u64::from_le_bytes(answer), 100_000);
        assert_eq!(server.join().expect("sink"), Ok(100_000));
    }
}
