//! The disks the daemon serves: which block device is disk *n*, opened how,
//! of what size ([`discover`]), and the [`Disks`] table the sessions check
//! every request against.
//!
//! Disk *n* is the block device whose `/sys/block/<name>/serial` reads
//! `stratum-disk<n>` (`stratum_abi::blkproto::serial`, as the host tool
//! gives it to QEMU), for *n* below [`MAX_DISKS`]. It is opened read-write
//! with `O_DIRECT` (the daemon keeps no cache of its own and the service
//! VM's page cache holds nobody's data; `FLUSH` is then a device cache
//! flush); read-only when `/sys/block/<name>/ro` says so or the read-write
//! open is refused (`EROFS`, `EACCES`, `EPERM`: QEMU's `readonly=on`
//! drive); without `O_DIRECT` where the file system refuses it (`EINVAL`,
//! as tmpfs does for the host tests). Its size is `/sys/block/<name>/size`
//! (512-byte sectors). A second device with the same serial is reported
//! and left alone: the first by name serves.
//!
//! The I/O itself goes through the [`Backing`] trait (positioned reads and
//! writes from buffers or from places in the placed space, a data sync),
//! which `File` implements; the tests add ones that fail or wait.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use stratum_abi::blkproto::serial;
use stratum_abi::bundle::MAX_DISKS;

use crate::placed::Place;

/// Where a disk's bytes live: a block device in the service VM, a file in
/// the tests.
pub trait Backing: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`; a short read is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`, all of it.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Reads `place.len()` bytes at `offset` into `place` (a placed read);
    /// a short read is an error.
    fn read_into_place(&self, place: &Place<'_>, offset: u64) -> io::Result<()>;
    /// Writes the bytes of `place` at `offset`, all of them (a placed
    /// write).
    fn write_from_place(&self, place: &Place<'_>, offset: u64) -> io::Result<()>;
    /// Makes every write done so far durable (`fdatasync`: on a block
    /// device, a cache flush to the device).
    fn sync_data(&self) -> io::Result<()>;
}

impl Backing for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }

    fn read_into_place(&self, place: &Place<'_>, offset: u64) -> io::Result<()> {
        place.pread_exact(self.as_fd(), offset)
    }

    fn write_from_place(&self, place: &Place<'_>, offset: u64) -> io::Result<()> {
        place.pwrite_all(self.as_fd(), offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// One disk the daemon serves.
pub struct Disk {
    /// Its bytes.
    pub backing: Box<dyn Backing>,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
    /// Whether writes are refused.
    pub readonly: bool,
}

/// The disks served, by number (below [`MAX_DISKS`]).
pub struct Disks {
    slots: Vec<Option<Disk>>,
}

impl Default for Disks {
    fn default() -> Self {
        Self::new()
    }
}

impl Disks {
    /// No disks.
    pub fn new() -> Self {
        Self {
            slots: (0..MAX_DISKS).map(|_| None).collect(),
        }
    }

    /// Serves `disk` as number `n`; `false` (and nothing changes) if `n`
    /// is not below [`MAX_DISKS`] or is taken.
    pub fn insert(&mut self, n: u16, disk: Disk) -> bool {
        match self.slots.get_mut(usize::from(n)) {
            Some(slot @ None) => {
                *slot = Some(disk);
                true
            }
            _ => false,
        }
    }

    /// Disk `n`, if served.
    pub fn get(&self, n: u16) -> Option<&Disk> {
        self.slots.get(usize::from(n))?.as_ref()
    }

    /// The hello's bit mask: bit *n* for disk *n*.
    pub fn mask(&self) -> u32 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_some())
            .fold(0, |m, (n, _)| m | 1 << n)
    }
}

/// The disk number a block device's serial names, if it is one of ours:
/// exactly `stratum-disk<n>` (decimal, no leading zero) for `n` below
/// [`MAX_DISKS`], with the trailing newline sysfs adds and any padding
/// after it ignored.
pub fn disk_number(serial_file: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(serial_file).ok()?;
    let text = text.trim_end_matches(['\n', '\0', ' ']);
    let n: u16 = text.strip_prefix("stratum-disk")?.parse().ok()?;
    let (expected, len) = serial(n);
    (u32::from(n) < MAX_DISKS && expected[..len] == *text.as_bytes()).then_some(n)
}

/// What [`discover`] found: the table and one line per disk or problem,
/// for the console.
pub struct Discovery {
    /// The disks to serve.
    pub disks: Disks,
    /// `disk N on /dev/vdX, S sectors, rw|ro`, and a line per device that
    /// has our serial but cannot be served.
    pub report: Vec<String>,
}

/// Scans `sys_block` (`/sys/block`) for devices with a `stratum-disk<n>`
/// serial and opens each as `dev/<name>` (`/dev`); see the module docs.
pub fn discover(sys_block: &Path, dev: &Path) -> Discovery {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut disks = Disks::new();
    let mut report = Vec::new();
    for name in names {
        let dir = sys_block.join(&name);
        let Some(n) = fs::read(dir.join("serial"))
            .ok()
            .and_then(|s| disk_number(&s))
        else {
            continue;
        };
        let path = dev.join(&name);
        let opened = size_in_sectors(&dir.join("size")).and_then(|sectors| {
            let ro_flag = fs::read_to_string(dir.join("ro")).is_ok_and(|s| s.trim() == "1");
            open(&path, ro_flag).map(|(file, readonly)| (file, sectors, readonly))
        });
        match opened {
            Err(e) => report.push(format!(
                "disk {n} on {}: cannot serve it: {e}",
                path.display()
            )),
            Ok((file, sectors, readonly)) => {
                let disk = Disk {
                    backing: Box::new(file),
                    sectors,
                    readonly,
                };
                if disks.insert(n, disk) {
                    report.push(format!(
                        "disk {n} on {}, {sectors} sectors, {}",
                        path.display(),
                        if readonly { "ro" } else { "rw" }
                    ));
                } else {
                    report.push(format!(
                        "disk {n} on {}: another device already is disk {n}; ignored",
                        path.display()
                    ));
                }
            }
        }
    }
    Discovery { disks, report }
}

/// `/sys/block/<name>/size`: the device's size in 512-byte sectors.
fn size_in_sectors(path: &Path) -> io::Result<u64> {
    fs::read_to_string(path)?.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Opens `path` read-write (unless `readonly`), falling back to read-only
/// when refused, with `O_DIRECT` unless the file system refuses it.
/// Returns the file and whether it is read-only.
fn open(path: &Path, readonly: bool) -> io::Result<(File, bool)> {
    if !readonly {
        match open_with(path, true) {
            Ok(f) => return Ok((f, false)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::EACCES | libc::EPERM)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    open_with(path, false).map(|f| (f, true))
}

fn open_with(path: &Path, write: bool) -> io::Result<File> {
    let direct = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            OpenOptions::new().read(true).write(write).open(path)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Buf;
    use crate::testfs::TempDir;

    /// The first byte of `b`, read as the daemon reads: one aligned
    /// sector (the file may be open with `O_DIRECT`).
    fn first_byte(b: &dyn Backing) -> io::Result<u8> {
        let mut buf = Buf::with_capacity(512);
        buf.set_len(512);
        b.read_exact_at(&mut buf, 0)?;
        Ok(buf[0])
    }

    #[test]
    fn serials_name_disks_exactly() {
        assert_eq!(disk_number(b"stratum-disk0\n"), Some(0));
        assert_eq!(disk_number(b"stratum-disk15\n"), Some(15));
        assert_eq!(disk_number(b"stratum-disk3"), Some(3));
        assert_eq!(disk_number(b"stratum-disk16\n"), None, "MAX_DISKS");
        assert_eq!(disk_number(b"stratum-disk01\n"), None, "leading zero");
        assert_eq!(disk_number(b"stratum-disk+1\n"), None);
        assert_eq!(disk_number(b"stratum-disk\n"), None);
        assert_eq!(disk_number(b"other-disk1\n"), None);
        assert_eq!(disk_number(b"stratum-disk1x\n"), None);
        assert_eq!(disk_number(b"\xffstratum-disk1\n"), None);
    }

    #[test]
    fn the_table_refuses_out_of_range_and_taken_numbers() {
        let mut disks = Disks::new();
        let tmp = TempDir::new("table");
        let disk = |name: &str| Disk {
            backing: Box::new(tmp.file(name, &[0; 512])),
            sectors: 1,
            readonly: false,
        };
        assert!(disks.insert(0, disk("a")));
        assert!(disks.insert(15, disk("b")));
        assert!(!disks.insert(15, disk("c")), "taken");
        assert!(!disks.insert(16, disk("d")), "past MAX_DISKS");
        assert_eq!(disks.mask(), 1 | 1 << 15);
        assert!(disks.get(0).is_some());
        assert!(disks.get(1).is_none());
        assert!(disks.get(u16::MAX).is_none());
    }

    /// A fake `/sys/block` and `/dev`: vda is disk 1, vdb disk 0 and read-
    /// only, vdc has no serial of ours, vdd repeats disk 1, vde is disk 2
    /// with no device node.
    #[test]
    fn discovery_finds_opens_and_reports_each_disk() {
        let tmp = TempDir::new("discover");
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        fs::create_dir_all(&dev).expect("mkdir dev");
        let device = |name: &str, serial: &str, sectors: u64, ro: bool, node: bool| {
            let d = sys.join(name);
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("serial"), format!("{serial}\n")).expect("serial");
            fs::write(d.join("size"), format!("{sectors}\n")).expect("size");
            fs::write(d.join("ro"), if ro { "1\n" } else { "0\n" }).expect("ro");
            if node {
                let bytes =
                    vec![name.as_bytes()[2]; usize::try_from(sectors).expect("small") * 512];
                fs::write(dev.join(name), bytes).expect("node");
            }
        };
        device("vda", "stratum-disk1", 8, false, true);
        device("vdb", "stratum-disk0", 2, true, true);
        device("vdc", "something-else", 2, false, true);
        device("vdd", "stratum-disk1", 2, false, true);
        device("vde", "stratum-disk2", 2, false, false);
        let found = discover(&sys, &dev);
        let dev_s = dev.display();
        assert_eq!(
            found.report,
            [
                format!("disk 1 on {dev_s}/vda, 8 sectors, rw"),
                format!("disk 0 on {dev_s}/vdb, 2 sectors, ro"),
                format!("disk 1 on {dev_s}/vdd: another device already is disk 1; ignored"),
                format!(
                    "disk 2 on {dev_s}/vde: cannot serve it: No such file or directory (os error 2)"
                ),
            ]
        );
        assert_eq!(found.disks.mask(), 0b11);
        let d1 = found.disks.get(1).expect("disk 1");
        assert_eq!((d1.sectors, d1.readonly), (8, false));
        assert_eq!(first_byte(d1.backing.as_ref()).expect("read"), b'a');
        let d0 = found.disks.get(0).expect("disk 0");
        assert!(d0.readonly);
        let mut sector = Buf::with_capacity(512);
        sector.set_len(512);
        assert!(
            d0.backing.write_all_at(&sector, 0).is_err(),
            "opened read-only"
        );
        // An empty or missing /sys/block: no disks, no lines.
        let none = discover(&tmp.path().join("nothing"), &dev);
        assert_eq!(none.disks.mask(), 0);
        assert!(none.report.is_empty());
    }

    #[test]
    fn a_refused_read_write_open_falls_back_to_read_only() {
        let tmp = TempDir::new("open");
        let f = tmp.file("disk", &[9; 512]);
        drop(f);
        let path = tmp.path().join("disk");
        let (f, ro) = open(&path, false).expect("opens");
        assert!(!ro);
        assert_eq!(first_byte(&f).expect("reads"), 9);
        let mut perms = fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
        fs::set_permissions(&path, perms).expect("chmod");
        // Root may write a 0444 file anyway: then the open succeeds rw.
        let (f, _) = open(&path, false).expect("opens one way or the other");
        assert_eq!(first_byte(&f).expect("reads"), 9);
        let (f, ro) = open(&path, true).expect("opens read-only when asked");
        assert!(ro);
        assert_eq!(first_byte(&f).expect("reads"), 9);
        assert!(open(&tmp.path().join("absent"), false).is_err());
    }
}
