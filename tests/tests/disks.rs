//! Disk system tests (tier 3, with the Linux tests: every disk is served
//! by a Debian service VM): frontends' virtio-blk requests carried by the
//! hypervisor's disk link to the daemon in the service VM (`tools/blkd`),
//! which performs them on QEMU `virtio-blk-device`s backed by image files
//! the tests make and check on the host.
//!
//! - Two bare-metal frontends (`blkcheck`, driven by `virtio-drivers`)
//!   write their own disks at once, each a pattern of its own; a third has
//!   a read-only disk and tries to write it. Each image must hold exactly
//!   its own guest's bytes, the read-only one stay byte-identical, and the
//!   boot log must show the stage-2 isolation check over every VM.
//! - A Debian frontend mounts an ext4 image made on the host
//!   (`mkfs.ext4 -d`), reads the host's file, writes one, `sync`s and
//!   crashes (sysrq `c`, `panic=-1`: it reboots); on its second boot it
//!   reads that file back, writes another, unmounts and powers off. On the
//!   host `debugfs` shows both files and `e2fsck -fn` finds the image
//!   clean.
//! - The service VM crashes (sysrq `c` typed on its console once its
//!   daemon is connected) while two `blkcheck` frontends write and read in
//!   a loop: both see failed requests, then, once the restarted service
//!   VM's daemon is back, good round trips again.
//!
//! The tests need `STRATUM_LINUX_KERNEL` and `STRATUM_LINUX_INITRD` (with
//! the disk daemon) like the Linux tests, and `mkfs.ext4`, `debugfs` and
//! `e2fsck` (e2fsprogs) on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratum_systests::{Run, VmConsoles, run_config, run_config_script, split_by_tag};

/// The CLI's `--timeout` for a run (the harness adds its grace).
const TIMEOUT: Duration = Duration::from_secs(240);
/// The seed `blkcheck` expects at the start of sector 0.
const SEED: &[u8] = b"STRATUM-DISK-SEED";
/// The sectors `blkcheck` writes.
const REGION: std::ops::Range<usize> = 8..72;

/// A scratch directory of this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("stratum-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Byte `i` of sector `s` of `blkcheck`'s pattern for `seed`.
fn pattern(seed: u8, s: usize, i: usize) -> u8 {
    (s as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8 ^ 0x5a ^ seed
}

/// A 4 MiB image: the seed, then bytes that differ from every pattern
/// (`fill`), so that a write that should not have happened shows.
fn seeded_image(path: &Path, fill: u8) -> Vec<u8> {
    let mut d = vec![fill; 4 << 20];
    d[..SEED.len()].copy_from_slice(SEED);
    std::fs::write(path, &d).expect("write the disk image");
    d
}

/// Runs `text` as a config, and splits the console by `names`.
fn run(test: &str, scratch: &Scratch, text: &str, script: &[(&str, &str)]) -> (Run, VmConsoles) {
    let config = scratch.path("system.toml");
    std::fs::write(&config, text).expect("write the config");
    let start = std::time::Instant::now();
    let run = if script.is_empty() {
        run_config(&config, TIMEOUT, &[], None)
    } else {
        run_config_script(&config, TIMEOUT, &[], script)
    };
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .collect();
    if !names.contains(&"service") {
        names.push("service");
    }
    let vms = split_by_tag(&run.console, &names)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    (run, vms)
}

fn assert_ok(test: &str, run: &Run) {
    assert_eq!(
        run.status,
        Some(0),
        "{test}: the run should exit 0\n{}",
        run.describe()
    );
}

fn assert_line(test: &str, run: &Run, needle: &str) {
    assert!(
        run.lines().any(|l| l.contains(needle)),
        "{test}: no `{needle}` line\n{}",
        run.describe()
    );
}

#[test]
fn disks_bare_metal_frontends_get_exactly_their_own_data() {
    let test = "disks_bare_metal";
    let s = Scratch::new(test);
    let guest = stratum_systests::guest_elf("blkcheck");
    let before: Vec<Vec<u8>> = ["a.img", "b.img", "ro.img"]
        .iter()
        .zip([0x11, 0x22, 0x33])
        .map(|(n, fill)| seeded_image(&s.path(n), fill))
        .collect();
    let frontend = |name: &str, args: &str, image: &str, ro: bool| {
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = {guest:?}\nmemory = \"16M\"\nplacement = \"shared\"\n\
             cmdline = \"{args}\"\n\n[[vm.disk]]\nimage = \"{image}\"\nreadonly = {ro}\n\n"
        )
    };
    let text = [
        frontend("one", "seed=1", "a.img", false),
        frontend("two", "seed=2", "b.img", false),
        frontend("ro", "mode=ro", "ro.img", true),
    ]
    .concat();
    let (run, vms) = run(test, &s, &text, &[]);
    assert_ok(test, &run);
    for vm in ["one", "two", "ro"] {
        assert!(
            vms.passed(vm, "blkcheck"),
            "{test}: {vm} should pass\n{}",
            run.describe()
        );
    }
    assert_line(
        test,
        &run,
        "stage 2 isolation: checked 4 VM(s), none maps another's RAM",
    );
    assert_line(test, &run, "disk link up: the daemon serves disks 0x7");
    for (k, (image, seed)) in [("a.img", 1u8), ("b.img", 2)].into_iter().enumerate() {
        let after = std::fs::read(s.path(image)).expect("read the image back");
        let mut want = before[k].clone();
        for sector in REGION {
            for i in 0..512 {
                want[sector * 512 + i] = pattern(seed, sector, i);
            }
        }
        assert!(
            after == want,
            "{test}: {image} should hold its own guest's pattern (seed {seed}) in sectors {REGION:?} and nothing else changed\n{}",
            run.describe()
        );
    }
    assert!(
        std::fs::read(s.path("ro.img")).expect("read the image back") == before[2],
        "{test}: the read-only image must stay byte-identical\n{}",
        run.describe()
    );
}

/// Runs an e2fsprogs tool on `image`: its stdout, or a panic with its
/// output.
fn e2fs(tool: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (e2fsprogs): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A blank image `name` of `mib` MiB in the scratch directory.
fn blank_image(s: &Scratch, name: &str, mib: u64) -> PathBuf {
    let image = s.path(name);
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(mib << 20))
        .unwrap_or_else(|e| panic!("a {mib} MiB image {name}: {e}"));
    image
}

/// An ext4 image `name` of `mib` MiB holding `hello.txt` with `text`
/// (`mkfs.ext4 -d`).
fn ext4_image(s: &Scratch, name: &str, mib: u64, text: &str) -> PathBuf {
    let root = s.path(&format!("{name}.root"));
    std::fs::create_dir_all(&root).expect("the image's root");
    std::fs::write(root.join("hello.txt"), text).expect("a file");
    let image = blank_image(s, name, mib);
    let root_text = root.to_str().expect("UTF-8 temp path");
    e2fs("mkfs.ext4", &["-q", "-F", "-d", root_text], &image);
    image
}

/// Asserts that VM `vm` printed each of `needles`.
fn assert_printed(test: &str, run: &Run, vms: &VmConsoles, vm: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            vms.find(vm, needle).is_some(),
            "{test}: {vm} printed no `{needle}`\n{}",
            run.describe()
        );
    }
}

/// `stratum run --debian --disk DISK --exec EXEC` (the tool adds the
/// service VM), which must exit 0; the console split into the two VMs.
fn run_debian_with_disk(test: &str, disk: &str, exec: &str) -> (Run, VmConsoles) {
    let timeout = TIMEOUT.as_secs().to_string();
    let start = std::time::Instant::now();
    let run = stratum_systests::run_stratum(
        [
            "run",
            "--debian",
            "--disk",
            disk,
            "--timeout",
            &timeout,
            "--exec",
            exec,
        ],
        TIMEOUT + Duration::from_secs(30),
    );
    println!("{test}: {:.1} s wall", start.elapsed().as_secs_f64());
    assert_ok(test, &run);
    let vms = split_by_tag(&run.console, &["debian", "service"])
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", run.describe()));
    (run, vms)
}

#[test]
fn disks_debian_ext4_survives_a_crash_after_sync() {
    let test = "disks_debian_ext4";
    let s = Scratch::new(test);
    let image = ext4_image(&s, "disk.img", 32, "made-on-the-host\n");
    let boot =
        "od -An -tu1 /proc/device-tree/chosen/stratum,boot-count | tr -s ' ' | cut -d' ' -f5";
    let exec = format!(
        "b=$({boot}); mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || exit 3; \
         if [ \"$b\" = 1 ]; then cat /mnt/hello.txt && echo synced-before-crash > /mnt/crash.txt \
         && sync && echo -1 > /proc/sys/kernel/panic && echo c > /proc/sysrq-trigger; sleep 60; exit 4; fi; \
         cat /mnt/crash.txt && echo written-after-reboot > /mnt/new.txt && sync && umount /mnt && echo disk-done"
    );
    let text = format!(
        "[[vm]]\nname = \"front\"\ndebian = true\nmemory = \"256M\"\nplacement = \"shared\"\n\
         exec = {exec:?}\n\n[[vm.disk]]\nimage = \"disk.img\"\n"
    );
    let (run, vms) = run(test, &s, &text, &[]);
    assert_ok(test, &run);
    assert_printed(
        test,
        &run,
        &vms,
        "front",
        &["made-on-the-host", "synced-before-crash", "disk-done"],
    );
    assert_line(test, &run, "'front': reset requested");
    let crash = e2fs("debugfs", &["-R", "cat /crash.txt"], &image);
    let new = e2fs("debugfs", &["-R", "cat /new.txt"], &image);
    assert_eq!(
        crash.trim(),
        "synced-before-crash",
        "{test}: synced before the crash"
    );
    assert_eq!(
        new.trim(),
        "written-after-reboot",
        "{test}: written on the second boot"
    );
    e2fs("e2fsck", &["-fn"], &image);
}

#[test]
fn disks_survive_a_service_vm_crash_under_load() {
    let test = "disks_service_vm_crash";
    let s = Scratch::new(test);
    let guest = stratum_systests::guest_elf("blkcheck");
    seeded_image(&s.path("a.img"), 0);
    seeded_image(&s.path("b.img"), 0);
    // No `exec` in the service VM: its shell takes the crash command once
    // a frontend's loop has started.
    let text = soak_system(
        "on_crash = \"restart\"\n",
        &guest,
        &[("one", "a.img", 1), ("two", "b.img", 2)],
    );
    let crash = "echo -1 > /proc/sys/kernel/panic; echo c > /proc/sysrq-trigger\n";
    // The crash waits for both soaks: a frontend still in its first checks
    // would fail them and never start its loop.
    let both = "blkcheck: soak started (seed 1)\nblkcheck: soak started (seed 2)";
    let (run, vms) = run(test, &s, &text, &[(both, crash)]);
    assert_ok(test, &run);
    for vm in ["one", "two"] {
        assert!(
            vms.passed(vm, "blkcheck"),
            "{test}: {vm} should see failures, then good requests again\n{}",
            run.describe()
        );
    }
    print_soak_lines(test, &run);
    assert_line(test, &run, "disk link down");
    assert_link_ups(test, &run, "0x3", "after the restart");
}

/// A system of the service VM (256 MiB, time-shared, and `service_extra`
/// added to its table) and one `blkcheck` guest `guest` in `mode=soak` per
/// `(name, image, seed)` of `frontends`, each with its image as its disk.
/// The service VM comes first, so console input goes to it.
fn soak_system(service_extra: &str, guest: &Path, frontends: &[(&str, &str, u32)]) -> String {
    let mut text = format!(
        "[[vm]]\nname = \"service\"\ndebian = true\nrole = \"service\"\nmemory = \"256M\"\n\
         placement = \"shared\"\n{service_extra}\n"
    );
    for (name, image, seed) in frontends {
        text.push_str(&format!(
            "[[vm]]\nname = \"{name}\"\nkernel = {guest:?}\nmemory = \"16M\"\nplacement = \"shared\"\n\
             cmdline = \"mode=soak seed={seed}\"\n\n[[vm.disk]]\nimage = \"{image}\"\n\n"
        ));
    }
    text
}

/// Prints the soak guests' and the disk link's lines of `run` (what a
/// failure of the assertions that follow is about).
fn print_soak_lines(test: &str, run: &Run) {
    for l in run
        .lines()
        .filter(|l| l.contains("soak:") || l.contains("disk link"))
    {
        println!("{test}: {l}");
    }
}

/// The disk daemon is killed under load with a request in flight (the
/// service VM itself runs on): the init's loop starts it again a second
/// later, it connects again, and the frontend's request in flight at the
/// kill fails while the rest go on.
#[test]
fn disks_survive_the_daemon_being_killed_under_load() {
    let test = "disks_daemon_killed";
    let s = Scratch::new(test);
    let guest = stratum_systests::guest_elf("blkcheck");
    seeded_image(&s.path("a.img"), 0);
    let text = soak_system("", &guest, &[("one", "a.img", 1)]);
    // The daemon is stopped first (`SIGSTOP`) and killed a second later,
    // so that a request the frontend made meanwhile has surely been sent
    // to it and is in flight when it dies: the soak wants a failure, then
    // good round trips (a kill alone may fall between two requests).
    let kill = "k() { for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = stratum-blkd ] \
                && kill -$1 ${p#/proc/}; done; }; \
                k STOP; sleep 1; k KILL\n";
    let (run, vms) = run(test, &s, &text, &[("blkcheck: soak started", kill)]);
    assert_ok(test, &run);
    print_soak_lines(test, &run);
    assert!(
        vms.passed("one", "blkcheck"),
        "{test}: the frontend should see failures, then good requests again\n{}",
        run.describe()
    );
    assert_printed(
        test,
        &run,
        &vms,
        "service",
        &["STRATUM-LINUX: blkd exited with status 137; starting it again"],
    );
    assert_line(test, &run, "disk link down");
    assert_line(test, &run, "1 request(s) failed");
    assert_link_ups(test, &run, "0x1", "after the kill");
}

/// The daemon said hello serving `disks` twice or more: it connected
/// again `after` what broke the first connection.
fn assert_link_ups(test: &str, run: &Run, disks: &str, after: &str) {
    let up = format!("disk link up: the daemon serves disks {disks}");
    let ups = run.lines().filter(|l| l.contains(&up)).count();
    assert!(
        ups >= 2,
        "{test}: the daemon should connect again {after} ({ups} times)\n{}",
        run.describe()
    );
}

#[test]
fn disks_a_read_only_disk_from_the_command_line_stays_byte_identical() {
    let test = "disks_command_line_ro";
    let s = Scratch::new(test);
    let image = ext4_image(&s, "ro.img", 16, "read-only-from-the-host\n");
    let before = std::fs::read(&image).expect("read the image");
    // The guest sees a read-only disk, reads the file, and every way of
    // writing it fails: a file on the mount, a sector under it.
    let exec = "echo ro=$(cat /sys/block/vda/ro) && mkdir -p /mnt && mount -o ro -t ext4 /dev/vda /mnt \
                && cat /mnt/hello.txt && ! touch /mnt/new 2>/dev/null \
                && ! dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null \
                && umount /mnt && echo ro-done";
    let disk = format!("{},readonly", image.display());
    let (run, vms) = run_debian_with_disk(test, &disk, exec);
    assert_printed(
        test,
        &run,
        &vms,
        "debian",
        &["ro=1", "read-only-from-the-host", "ro-done"],
    );
    // The daemon registered its buffers, so the reads above were placed
    // requests (the link places every request while its 16 MiB have room).
    assert_printed(
        test,
        &run,
        &vms,
        "service",
        &["stratum-blkd: registered buffers: "],
    );
    assert_line(test, &run, "added service VM");
    assert!(
        std::fs::read(&image).expect("read the image back") == before,
        "{test}: the read-only image must stay byte-identical\n{}",
        run.describe()
    );
}

/// A Debian frontend's `virtio_blk` driver is unbound (the device reset:
/// status 0) and bound again between two writes: the disk link forgets
/// the old driver's requests, the new driver's go on, and both writes
/// reach the image.
#[test]
fn disks_a_driver_reset_and_rebind_goes_on() {
    let test = "disks_driver_reset";
    let s = Scratch::new(test);
    let image = blank_image(&s, "raw.img", 16);
    let exec = "d=$(basename $(readlink /sys/block/vda/device)) \
                && echo first-write | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null \
                && echo $d > /sys/bus/virtio/drivers/virtio_blk/unbind \
                && [ ! -e /sys/block/vda ] && echo unbound \
                && echo $d > /sys/bus/virtio/drivers/virtio_blk/bind \
                && i=0 && while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done \
                && echo second-write | dd of=/dev/vda bs=512 seek=8 count=1 conv=fsync 2>/dev/null \
                && echo read-back=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 11) \
                && echo reset-done";
    let (run, vms) = run_debian_with_disk(test, &image.display().to_string(), exec);
    assert_printed(
        test,
        &run,
        &vms,
        "debian",
        &["unbound", "read-back=first-write", "reset-done"],
    );
    let bytes = std::fs::read(&image).expect("read the image back");
    assert!(
        bytes.starts_with(b"first-write\n") && bytes[4096..].starts_with(b"second-write\n"),
        "{test}: both writes must be on the image (sector 0: {:?}, sector 8: {:?})\n{}",
        String::from_utf8_lossy(&bytes[..16]),
        String::from_utf8_lossy(&bytes[4096..4112]),
        run.describe()
    );
}
