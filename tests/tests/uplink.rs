//! Uplink system tests (tier 3, with the Linux tests: the uplink is
//! bridged by a Debian service VM): `stratum run --debian --net user`
//! puts the Debian VM on an uplink network, which the service VM the tool
//! adds bridges to a QEMU `virtio-net-device` on QEMU's user-mode network.
//! The VM's init takes a DHCP lease there (10.0.2.15: the service VM
//! takes none), the host's loopback is 10.0.2.2, and `--forward` makes
//! QEMU listen on the host's loopback for the VM's port.
//!
//! - The VM fetches 1 MiB of random bytes with busybox `wget` from an HTTP
//!   server this test runs on 127.0.0.1 and prints their MD5, which must
//!   be the host's (`md5sum`).
//! - With `--forward HOST:8080`, the VM serves a page with busybox `httpd`
//!   and waits (a minute and a half at most) until the test's server says
//!   the test has it: the test fetches the page from 127.0.0.1:HOST, retrying
//!   while the VM boots, and must find the VM's token in it.
//! - The service VM crashes (sysrq `c` on its console) while the VM
//!   fetches from the host in a loop: fetches fail while it is away and
//!   work again once it has bridged the uplink anew.
//!
//! Every wait is bounded: the CLI's `--timeout`, the harness's hard
//! timeout, the guest's loop, the sockets' timeouts and the fetcher's
//! deadline.
//!
//! The tests need the Debian guest like the Linux tests (`stratum run
//! --debian` takes it from the cache; `cargo xtask test` fetches it) and
//! `md5sum` on the host.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratum_systests::{Run, VmConsoles, assert_status, run_stratum, split_by_tag, status};

/// The CLI's `--timeout` for a run.
const TIMEOUT: Duration = Duration::from_secs(240);
/// The harness kills a run after this long.
const HARD_TIMEOUT: Duration = Duration::from_secs(270);
/// How long a socket of the test's waits for its peer.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// The lease QEMU's DHCP server gives its first client: the VM's.
const LEASE: &str = "10.0.2.15";
/// The names the console is tagged with: the `--debian` VM and the
/// service VM the tool adds.
const VMS: [&str; 2] = ["debian", "service"];

/// A string no other run prints.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("stratum-{test}-{}-{nanos}", std::process::id())
}

/// A plain HTTP/1.0 server on 127.0.0.1 (the VMs' 10.0.2.2) for the
/// test's run: `GET /blob` answers `blob`, `GET /done` answers 200 once
/// [`HttpServer::done`] is set and 404 before, anything else 404. One
/// connection at a time, each with [`SOCKET_TIMEOUT`]; it stops when
/// dropped.
struct HttpServer {
    port: u16,
    done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// The request lines served, for the failure messages.
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(blob: Vec<u8>) -> Self {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the test's HTTP server");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("its address").port();
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (done, stop, log) = (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&log));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &blob, &done, &log),
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Self {
            port,
            done,
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().expect("the log").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream` (errors end it: the client retries).
fn serve(mut stream: TcpStream, blob: &[u8], done: &AtomicBool, log: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(SOCKET_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SOCKET_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    log.lock().expect("the log").push(line);
    let (code, body): (&str, &[u8]) = match path.as_str() {
        "/blob" => ("200 OK", blob),
        "/done" if done.load(Ordering::Relaxed) => ("200 OK", b"done\n"),
        _ => ("404 Not Found", b"not yet\n"),
    };
    let header = format!(
        "HTTP/1.0 {code}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(header.as_bytes())
        .and_then(|()| stream.write_all(body));
}

/// `n` random bytes (the kernel's).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("read /dev/urandom");
    out
}

/// The MD5 of `bytes` in hex, by the host's `md5sum`.
fn host_md5(test: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("{}.blob", unique(test)));
    std::fs::write(&path, bytes).expect("write the blob");
    let out = Command::new("md5sum")
        .arg(&path)
        .output()
        .expect("run md5sum (coreutils)");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "md5sum failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum prints the sum")
        .to_owned()
}

/// A port on the host's loopback that nothing listens on (now).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `stratum run --debian --net user ARGS --exec COMMAND` and splits
/// the console by VM.
fn run_uplink(test: &str, args: &[&str], command: &str) -> (Run, VmConsoles) {
    let timeout = TIMEOUT.as_secs().to_string();
    let mut all = vec!["run", "--debian", "--net", "user", "--timeout", &timeout];
    all.extend(args);
    all.extend(["--exec", command]);
    let start = Instant::now();
    let run = run_stratum(all, HARD_TIMEOUT);
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let vms = split_by_tag(&run.console, &VMS)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    (run, vms)
}

/// The service VM bridged the uplink and the VM took the first lease.
fn assert_bridged_and_leased(test: &str, run: &Run, vms: &VmConsoles) {
    assert!(
        vms.find("service", "STRATUM-LINUX: uplink bridged eth")
            .is_some(),
        "{test}: the service VM should bridge the uplink\n{}",
        run.describe()
    );
    assert!(
        vms.find("debian", &format!("STRATUM-LINUX: dhcp {LEASE} on eth0"))
            .is_some(),
        "{test}: the VM should take QEMU's first lease, {LEASE}\n{}",
        run.describe()
    );
}

#[test]
fn uplink_a_guest_fetches_a_file_from_the_hosts_loopback() {
    let test = "uplink_fetch";
    let blob = random_bytes(1 << 20);
    let want = host_md5(test, &blob);
    let server = HttpServer::start(blob);
    // (busybox `timeout`: the Debian busybox's `wget -T` crashes.)
    let command = format!(
        "timeout 60 wget -O /tmp/blob http://10.0.2.2:{}/blob && md5sum /tmp/blob",
        server.port
    );
    let (run, vms) = run_uplink(test, &[], &command);
    assert_status(&run, status::OK, test);
    assert_bridged_and_leased(test, &run, &vms);
    let got = vms
        .lines("debian")
        .iter()
        .find(|l| l.text.trim_end().ends_with("  /tmp/blob"))
        .and_then(|l| l.text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| {
            panic!(
                "{test}: the VM printed no MD5 (requests: {:?})\n{}",
                server.requests(),
                run.describe()
            )
        });
    assert_eq!(
        got,
        want,
        "{test}: the 1 MiB the VM fetched differ from the host's\n{}",
        run.describe()
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /blob ")),
        "{test}: the server should have served /blob: {:?}",
        server.requests()
    );
}

/// Fetches `http://127.0.0.1:port/` until the page holds `token` or
/// `deadline` passes (or `give_up` is set): the page, or why not.
fn fetch_until(
    port: u16,
    token: &str,
    deadline: Instant,
    give_up: &AtomicBool,
) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut last = String::from("no attempt");
    while Instant::now() < deadline && !give_up.load(Ordering::Relaxed) {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, SOCKET_TIMEOUT)?;
            s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
            s.set_write_timeout(Some(SOCKET_TIMEOUT))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut page = Vec::new();
            s.read_to_end(&mut page)?;
            Ok(String::from_utf8_lossy(&page).into_owned())
        })();
        match attempt {
            Ok(page) if page.contains(token) => return Ok(page),
            Ok(page) => last = format!("a page without the token: {page:?}"),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

#[test]
fn uplink_forward_reaches_a_page_the_guest_serves() {
    let test = "uplink_forward";
    let token = unique(test);
    let server = HttpServer::start(Vec::new());
    let host_port = free_port();
    // The VM serves its token, then waits for the test's word (at most 90 s).
    let command = format!(
        "mkdir -p /www && echo {token} > /www/index.html && httpd -p 8080 -h /www \
         && n=0; until timeout 10 wget -q -O /dev/null http://10.0.2.2:{}/done; do \
         n=$((n+1)); [ $n -gt 90 ] && echo forward-test-gave-up && exit 9; sleep 1; done",
        server.port
    );
    let give_up = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let (token, done, give_up) = (
            token.clone(),
            Arc::clone(&server.done),
            Arc::clone(&give_up),
        );
        thread::spawn(move || {
            let got = fetch_until(host_port, &token, Instant::now() + TIMEOUT, &give_up);
            if got.is_ok() {
                done.store(true, Ordering::Relaxed);
            }
            got
        })
    };
    let forward = format!("{host_port}:8080");
    let (run, vms) = run_uplink(test, &["--forward", &forward], &command);
    give_up.store(true, Ordering::Relaxed);
    let page = fetcher.join().expect("the fetcher");
    assert_status(&run, status::OK, test);
    assert_bridged_and_leased(test, &run, &vms);
    let page = page.unwrap_or_else(|e| {
        panic!(
            "{test}: no page with the token from 127.0.0.1:{host_port}: {e}\n{}",
            run.describe()
        )
    });
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{test}: {page}"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /done ")),
        "{test}: the VM should have asked for /done: {:?}",
        server.requests()
    );
}

/// The service VM crashes while a frontend fetches from the host through
/// the uplink: the fetches fail while it is away, and work again once the
/// restarted service VM has bridged the uplink anew (the frontend keeps
/// its lease). The service VM comes first in the config, so the console
/// input (sysrq `c`, with `panic=-1`: it reboots) goes to its shell; it is
/// typed once the frontend's first fetch worked.
#[test]
fn uplink_comes_back_after_the_service_vm_restarts() {
    let test = "uplink_service_restart";
    let server = HttpServer::start(random_bytes(1 << 10));
    // A short timeout, so that the outage shows as failed fetches (a
    // longer one rides it out on TCP's retransmits).
    let fetch = format!(
        "timeout 2 wget -q -O /dev/null http://10.0.2.2:{}/blob",
        server.port
    );
    // f: failed fetches after the first good one; a: good ones after the
    // last failure. Ends after 3 good ones following a failure, or 240
    // tries.
    let exec = format!(
        "f=0; a=0; n=0; seen=0; while [ $n -lt 240 ]; do n=$((n+1)); \
         if {fetch}; then if [ $seen = 0 ]; then seen=1; echo uplink-first-fetch; fi; \
         [ $f -gt 0 ] && a=$((a+1)); [ $a -ge 3 ] && break; \
         else [ $seen = 1 ] && f=$((f+1)) && a=0; fi; sleep 0.5; done; \
         echo \"uplink: $f failed fetches, then $a good\"; [ $f -gt 0 ] && [ $a -ge 3 ]"
    );
    let text = format!(
        "[[vm]]\nname = \"service\"\ndebian = true\nrole = \"service\"\nmemory = \"256M\"\n\
         placement = \"shared\"\non_crash = \"restart\"\n\n\
         [[vm]]\nname = \"debian\"\ndebian = true\nmemory = \"256M\"\nplacement = \"shared\"\n\
         exec = {exec:?}\n\n\
         [[network]]\nname = \"up\"\nuplink = true\nvms = [\"debian\"]\n"
    );
    let config = std::env::temp_dir().join(format!("{}.toml", unique(test)));
    std::fs::write(&config, text).expect("write the config");
    let crash = "echo -1 > /proc/sys/kernel/panic; echo c > /proc/sysrq-trigger\n";
    let start = Instant::now();
    let run = stratum_systests::run_config_script(
        &config,
        TIMEOUT,
        &[],
        &[("uplink-first-fetch", crash)],
    );
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(&config);
    let vms = split_by_tag(&run.console, &VMS)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    for l in vms
        .lines("debian")
        .iter()
        .filter(|l| l.text.starts_with("uplink:"))
    {
        println!("{test}: {}", l.text);
    }
    assert_status(&run, status::OK, test);
    assert!(
        run.lines()
            .any(|l| l.contains("'service': reset requested")),
        "{test}: the service VM should have rebooted\n{}",
        run.describe()
    );
    let bridged = vms
        .lines("service")
        .iter()
        .filter(|l| l.text.contains("STRATUM-LINUX: uplink bridged eth"))
        .count();
    assert_eq!(
        bridged,
        2,
        "{test}: the service VM should bridge the uplink on each boot\n{}",
        run.describe()
    );
}
