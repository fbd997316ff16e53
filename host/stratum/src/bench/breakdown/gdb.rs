//! Just enough of the GDB remote protocol to switch QEMU's instruction log
//! on when the guest reaches a breakpoint: logging every instruction from
//! the start would log the hypervisor's boot too (tens of millions of
//! instructions, gigabytes of text), where the samples are a few thousand.
//!
//! QEMU starts stopped (`-S`) with its gdbstub listening; [`log_from`]
//! connects, plants breakpoints, lets the machine run, and at the first hit
//! asks the monitor (`qRcmd`) for `log exec,nochain`, removes the
//! breakpoints and detaches, which lets the machine run on. Under `-icount`
//! stopping costs no guest time: the instruction counts do not change.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Wraps `data` as a packet: `$data#checksum`.
pub fn packet(data: &str) -> String {
    let sum = data.bytes().fold(0u8, u8::wrapping_add);
    format!("${data}#{sum:02x}")
}

/// The hex encoding `qRcmd` takes a monitor command in.
pub fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A connection to a gdbstub.
struct Stub {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Stub {
    fn connect(port: u16, timeout: Duration, give_up: &AtomicBool) -> io::Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > timeout || give_up.load(Ordering::Relaxed) => {
                    return Err(e);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends a command and returns the first reply that is not console
    /// output (`O…` packets, which `qRcmd` sends before its `OK`).
    fn command(&mut self, data: &str) -> io::Result<String> {
        self.writer.write_all(packet(data).as_bytes())?;
        loop {
            let reply = self.receive()?;
            if !(reply.starts_with('O') && reply != "OK") {
                return Ok(reply);
            }
        }
    }

    /// Reads one packet (skipping acknowledgements) and acknowledges it.
    fn receive(&mut self) -> io::Result<String> {
        let mut byte = [0u8; 1];
        loop {
            io::Read::read_exact(&mut self.reader, &mut byte)?;
            if byte[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        self.reader.read_until(b'#', &mut body)?;
        body.pop();
        let mut sum = [0u8; 2];
        io::Read::read_exact(&mut self.reader, &mut sum)?;
        self.writer.write_all(b"+")?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn expect_ok(what: &str, reply: &str) -> io::Result<()> {
    if reply == "OK" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: the gdbstub answered {reply:?}"
        )))
    }
}

/// Connects to QEMU's gdbstub on `port`, plants a breakpoint at each of
/// `breakpoints`, runs the machine and, at the first hit, runs the monitor
/// command `monitor` (e.g. `log exec,nochain`), removes the breakpoints
/// and detaches (the machine runs on). `timeout` bounds each wait; setting
/// `give_up` ends the wait for QEMU to listen (it will not).
pub fn log_from(
    port: u16,
    breakpoints: &[u64],
    monitor: &str,
    timeout: Duration,
    give_up: &AtomicBool,
) -> io::Result<()> {
    at_breakpoint(port, breakpoints, &[monitor], timeout, give_up)
}

/// [`log_from`] with several monitor commands, run in order at the hit
/// (e.g. `singlestep on`, then `log exec,nochain`: one instruction per
/// block only from there, where `-singlestep` would slow the whole boot
/// tenfold; the blocks translated before do not match the new flags, so
/// none of them runs again).
pub fn at_breakpoint(
    port: u16,
    breakpoints: &[u64],
    monitor: &[&str],
    timeout: Duration,
    give_up: &AtomicBool,
) -> io::Result<()> {
    let mut stub = Stub::connect(port, timeout, give_up)?;
    for &addr in breakpoints {
        expect_ok(
            "setting a breakpoint",
            &stub.command(&format!("Z0,{addr:x},4"))?,
        )?;
    }
    let stop = stub.command("c")?;
    if !(stop.starts_with('T') || stop.starts_with('S')) {
        return Err(io::Error::other(format!(
            "the machine did not stop at a breakpoint: {stop:?}"
        )));
    }
    for command in monitor {
        expect_ok(command, &stub.command(&format!("qRcmd,{}", hex(command)))?)?;
    }
    for &addr in breakpoints {
        expect_ok(
            "removing a breakpoint",
            &stub.command(&format!("z0,{addr:x},4"))?,
        )?;
    }
    expect_ok("detaching", &stub.command("D")?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_checksum() {
        assert_eq!(packet("c"), "$c#63");
        assert_eq!(
            packet("Z0,40084648,4"),
            format!(
                "$Z0,40084648,4#{:02x}",
                "Z0,40084648,4".bytes().map(u32::from).sum::<u32>() % 256
            )
        );
        assert_eq!(packet(""), "$#00");
    }

    #[test]
    fn monitor_commands_travel_as_hex() {
        assert_eq!(hex("log exec"), "6c6f672065786563");
    }

    #[test]
    fn talks_to_a_stub() {
        // A fake stub on a local port: answers every command as QEMU does.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut writer = stream;
            let mut seen = Vec::new();
            loop {
                let mut byte = [0u8; 1];
                if io::Read::read_exact(&mut reader, &mut byte).is_err() {
                    break;
                }
                if byte[0] != b'$' {
                    continue;
                }
                let mut body = Vec::new();
                reader.read_until(b'#', &mut body).expect("body");
                body.pop();
                let mut sum = [0u8; 2];
                io::Read::read_exact(&mut reader, &mut sum).expect("sum");
                let cmd = String::from_utf8(body).expect("text");
                writer.write_all(b"+").expect("ack");
                let reply = match cmd.as_str() {
                    "c" => "T05thread:01;".to_owned(),
                    c if c.starts_with("qRcmd,") => {
                        writer.write_all(packet("O6f6b0a").as_bytes()).expect("out");
                        "OK".to_owned()
                    }
                    _ => "OK".to_owned(),
                };
                writer.write_all(packet(&reply).as_bytes()).expect("reply");
                let done = cmd == "D";
                seen.push(cmd);
                if done {
                    break;
                }
            }
            seen
        });
        log_from(
            port,
            &[0x4008_4648],
            "log exec",
            Duration::from_secs(10),
            &AtomicBool::new(false),
        )
        .expect("the dance");
        let seen = server.join().expect("server");
        assert_eq!(
            seen,
            [
                "Z0,40084648,4",
                "c",
                &format!("qRcmd,{}", hex("log exec")),
                "z0,40084648,4",
                "D"
            ]
        );
    }
}
