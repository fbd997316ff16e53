//! `pingpong`: messages through a shared-memory channel and its doorbell
//! ([`stratum_guests::channel`]). Command line: `role=ping|pong`,
//! `rounds=N` (default 100), optionally `channel=NAME` (default: the first
//! channel in the DT). `ping` (channel end A) sends N numbered messages of
//! varying length and checks each echo; `pong` (end B) checks each message
//! (number, length, contents) and echoes it. Both check every sequence
//! number, that a `DOORBELL` for a channel the VM does not have is refused,
//! and that doorbell interrupts arrived (every wait sleeps in WFI until one,
//! so a lost doorbell is a timeout). Each side prints `pingpong: N rounds`
//! and passes.
#![no_std]
#![no_main]

use stratum_guests::channel::{Channel, End};
use stratum_guests::{Checks, args, fail, fdt, gic, println, timer};

stratum_guests::entry!("pingpong", main);

/// Longest message, in words.
const MAX_WORDS: usize = 16;
/// How long to wait for the peer's first message (it may boot later).
const FIRST_TIMEOUT_US: u64 = 30_000_000;
/// How long to wait for any later message.
const TIMEOUT_US: u64 = 10_000_000;

/// Message `n`: its number, a check word, then `n + i` filler; 2 to
/// `MAX_WORDS` words long.
fn message(n: u64, buf: &mut [u64; MAX_WORDS]) -> usize {
    let len = 2 + (n as usize % (MAX_WORDS - 1));
    buf[0] = n;
    buf[1] = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (i, w) in buf.iter_mut().enumerate().take(len).skip(2) {
        *w = n.wrapping_add(i as u64);
    }
    len
}

fn main(dtb: usize) -> ! {
    let cmdline = match fdt::locate(dtb) {
        Ok((_, dt)) => dt.bootargs.unwrap_or(""),
        Err(e) => fail(format_args!("no usable device tree: {e}")),
    };
    let end = match args::value(cmdline, "role") {
        Some("ping") => End::A,
        Some("pong") => End::B,
        other => fail(format_args!("role must be ping or pong, got {other:?}")),
    };
    let role = if end == End::A { "ping" } else { "pong" };
    let rounds = stratum_guests::arg_number(cmdline, "rounds", 100);
    let platform = gic::bring_up(dtb);
    let mut ch = Channel::open(dtb, args::value(cmdline, "channel"), end)
        .unwrap_or_else(|e| fail(format_args!("channel: {e}")));
    let n = ch.node;
    println!(
        "pingpong: {role} on channel '{}' (id {}) to '{}': {:#x} + {:#x}, doorbell INTID {}, {} rounds",
        n.name, n.id, n.peer, n.base, n.size, n.intid, rounds
    );
    ch.enable_interrupts(&platform.gic);
    let mut c = Checks::new();
    c.check(
        "DOORBELL for a channel this VM lacks is refused",
        ch.ring_invalid(),
    );

    let mut want = [0u64; MAX_WORDS];
    let mut got = [0u64; MAX_WORDS];
    let mut bad = 0u64;
    for round in 1..=rounds {
        let timeout = if round == 1 {
            FIRST_TIMEOUT_US
        } else {
            TIMEOUT_US
        };
        let len = message(round, &mut want);
        let result = if end == End::A {
            ch.send(&want[..len], timer::deadline_us(timeout))
                .and_then(|_| ch.receive(&mut got, timer::deadline_us(timeout)))
        } else {
            ch.receive(&mut got, timer::deadline_us(timeout))
                .and_then(|r| {
                    ch.send(&got[..r.1.min(MAX_WORDS)], timer::deadline_us(timeout))
                        .map(|_| r)
                })
        };
        let (seq, got_len) = match result {
            Ok(r) => r,
            Err(e) => fail(format_args!("round {round}: {e}")),
        };
        let ok = seq == round && got_len == len && got[..len] == want[..len];
        if !ok {
            bad += 1;
            println!(
                "pingpong: round {round}: message {seq} of {got_len} words, first {:#x}; want {round} of {len}",
                got[0]
            );
        }
        if round % 25 == 0 || round == rounds {
            println!("pingpong: {role} round {round} done");
        }
    }
    if let Err(e) = ch.flush(timer::deadline_us(TIMEOUT_US)) {
        fail(format_args!(
            "waiting for the peer to take the last message: {e}"
        ));
    }
    println!(
        "pingpong: {rounds} rounds, {} doorbell interrupts",
        ch.doorbells()
    );
    c.check_count("rounds with a wrong number, length or content", bad, 0);
    c.check(
        "doorbell interrupts arrived",
        rounds == 0 || ch.doorbells() > 0,
    );
    c.finish()
}
