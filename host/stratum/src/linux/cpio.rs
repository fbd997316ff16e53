//! A reproducible writer for the `newc` cpio format (the "SVR4 no CRC"
//! archive Linux unpacks as an initramfs), in pure Rust: no external `cpio`.
//!
//! Reproducible: the same entries give the same bytes whatever order they
//! were added in. Entries are sorted by name (so every directory comes before
//! what it holds), inode numbers are assigned 1, 2, … in that order, and every
//! entry has mtime 0 and uid/gid 0.
//!
//! Layout (see the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`):
//! each entry is a 110-byte ASCII header (`070701` and 13 eight-digit hex
//! fields), the NUL-terminated name padded to a multiple of 4 bytes from the
//! start of the header, then the data padded to a multiple of 4. The archive
//! ends with an entry named `TRAILER!!!`.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Magic of a `newc` header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Length of a `newc` header.
pub const HEADER_LEN: usize = 110;
/// Name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Directory,
    File(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Path inside the archive, without a leading `/`.
    name: String,
    /// Permission bits (the type bits come from `kind`).
    perm: u32,
    kind: Kind,
}

/// An archive being assembled; [`Archive::to_bytes`] encodes it.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: Vec<Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, path: &str, perm: u32, kind: Kind) -> &mut Self {
        let name = path.trim_start_matches('/').to_owned();
        assert!(
            !name.is_empty() && name != TRAILER,
            "cpio entry name {path:?} is reserved"
        );
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry {
            name,
            perm: perm & 0o7777,
            kind,
        });
        self
    }

    /// Adds directory `path` with permissions `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.push(path, perm, Kind::Directory)
    }

    /// Adds regular file `path` with permissions `perm` and contents `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> &mut Self {
        self.push(path, perm, Kind::File(data))
    }

    /// Adds character device `path` (`major`, `minor`) with permissions `perm`.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.push(path, perm, Kind::CharDevice { major, minor })
    }

    /// The `newc` encoding: entries sorted by name, inodes 1.. in that order,
    /// then the trailer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut out = Vec::new();
        for (index, entry) in sorted.iter().enumerate() {
            let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries");
            let (mode, nlink, data, rdev) = match &entry.kind {
                Kind::Directory => (S_IFDIR | entry.perm, 2, &[][..], (0, 0)),
                Kind::File(data) => (S_IFREG | entry.perm, 1, &data[..], (0, 0)),
                Kind::CharDevice { major, minor } => {
                    (S_IFCHR | entry.perm, 1, &[][..], (*major, *minor))
                }
            };
            write_entry(&mut out, ino, mode, nlink, rdev, &entry.name, data);
        }
        write_entry(&mut out, 0, 0, 1, (0, 0), TRAILER, &[]);
        out
    }
}

/// Appends one header, name and data, each padded to 4 bytes.
fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
    data: &[u8],
) {
    let filesize = u32::try_from(data.len()).expect("cpio (newc) files are below 4 GiB");
    let namesize = u32::try_from(name.len() + 1).expect("short names");
    let fields = [
        ino, mode, 0, // uid
        0, // gid
        nlink, 0, // mtime
        filesize, 0, // devmajor
        0, // devminor
        rdev_major, rdev_minor, namesize, 0, // check
    ];
    out.extend_from_slice(MAGIC);
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as a newc reader sees it.
    #[derive(Debug, PartialEq, Eq)]
    struct Read {
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        name: String,
        data: Vec<u8>,
    }

    /// A small, strict newc reader: checks magic, alignment, the trailer and
    /// that nothing follows it.
    fn read_archive(bytes: &[u8]) -> Vec<Read> {
        let mut at = 0;
        let mut entries = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "entry at {at} is not 4-byte aligned");
            let header = &bytes[at..at + HEADER_LEN];
            assert_eq!(&header[..6], MAGIC, "magic at {at}");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).expect("ascii");
                u32::from_str_radix(hex, 16).expect("hex field")
            };
            let namesize = field(11) as usize;
            let filesize = field(6) as usize;
            let name_start = at + HEADER_LEN;
            let name_bytes = &bytes[name_start..name_start + namesize];
            assert_eq!(name_bytes.last(), Some(&0), "name is NUL-terminated");
            let name = std::str::from_utf8(&name_bytes[..namesize - 1])
                .expect("utf-8 name")
                .to_owned();
            let data_start = (name_start + namesize).next_multiple_of(4);
            assert!(
                bytes[name_start + namesize..data_start]
                    .iter()
                    .all(|&b| b == 0),
                "name padding is zeros"
            );
            let data = bytes[data_start..data_start + filesize].to_vec();
            let next = (data_start + filesize).next_multiple_of(4);
            assert!(bytes[data_start + filesize..next].iter().all(|&b| b == 0));
            assert_eq!(field(12), 0, "check field");
            at = next;
            if name == TRAILER {
                assert_eq!(at, bytes.len(), "nothing after the trailer");
                return entries;
            }
            entries.push(Read {
                ino: field(0),
                mode: field(1),
                uid: field(2),
                gid: field(3),
                nlink: field(4),
                mtime: field(5),
                rdev: (field(9), field(10)),
                name,
                data,
            });
        }
    }

    #[test]
    fn header_layout_is_byte_exact() {
        let bytes = Archive::new().file("/a", 0o644, b"xyz".to_vec()).to_bytes();
        let mut want = Vec::new();
        want.extend_from_slice(b"070701");
        want.extend_from_slice(b"00000001"); // ino
        want.extend_from_slice(b"000081A4"); // mode 0100644
        want.extend_from_slice(b"00000000"); // uid
        want.extend_from_slice(b"00000000"); // gid
        want.extend_from_slice(b"00000001"); // nlink
        want.extend_from_slice(b"00000000"); // mtime
        want.extend_from_slice(b"00000003"); // filesize
        want.extend_from_slice(b"00000000"); // devmajor
        want.extend_from_slice(b"00000000"); // devminor
        want.extend_from_slice(b"00000000"); // rdevmajor
        want.extend_from_slice(b"00000000"); // rdevminor
        want.extend_from_slice(b"00000002"); // namesize "a\0"
        want.extend_from_slice(b"00000000"); // check
        assert_eq!(want.len(), HEADER_LEN);
        want.extend_from_slice(b"a\0"); // 112 bytes: aligned
        want.extend_from_slice(b"xyz\0"); // data padded to 116
        want.extend_from_slice(b"070701");
        want.extend_from_slice(b"00000000"); // ino 0
        want.extend_from_slice(b"00000000"); // mode 0
        want.extend_from_slice(b"00000000");
        want.extend_from_slice(b"00000000");
        want.extend_from_slice(b"00000001"); // nlink 1
        for _ in 0..6 {
            want.extend_from_slice(b"00000000");
        }
        want.extend_from_slice(b"0000000B"); // "TRAILER!!!\0"
        want.extend_from_slice(b"00000000");
        want.extend_from_slice(b"TRAILER!!!\0"); // 116 + 110 + 11 = 237
        want.extend_from_slice(b"\0\0\0"); // → 240
        assert_eq!(bytes, want);
    }

    #[test]
    fn names_and_data_are_padded_to_four_bytes() {
        // Header + name: 110 + len + 1, for name lengths 1..=4 cover every
        // padding amount; data lengths 0..=4 likewise.
        for name_len in 1..=4 {
            for data_len in 0..=4 {
                let name = "n".repeat(name_len);
                let bytes = Archive::new()
                    .file(&name, 0o600, vec![0xAA; data_len])
                    .to_bytes();
                assert_eq!(bytes.len() % 4, 0);
                let data_start = (HEADER_LEN + name_len + 1).next_multiple_of(4);
                assert_eq!(
                    &bytes[data_start..data_start + data_len],
                    &vec![0xAA; data_len]
                );
                let trailer = (data_start + data_len).next_multiple_of(4);
                assert_eq!(&bytes[trailer..trailer + 6], MAGIC, "{name_len} {data_len}");
                let entries = read_archive(&bytes);
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].data.len(), data_len);
            }
        }
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let bytes = Archive::new().to_bytes();
        assert_eq!(bytes.len(), 124); // 110 + "TRAILER!!!\0", padded
        assert!(read_archive(&bytes).is_empty());
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 10], TRAILER.as_bytes());
    }

    fn sample(reverse: bool) -> Vec<u8> {
        let mut entries: Vec<(&str, Kind)> = vec![
            ("/bin", Kind::Directory),
            ("/bin/busybox", Kind::File(b"\x7fELF busybox".to_vec())),
            ("/dev", Kind::Directory),
            ("/dev/console", Kind::CharDevice { major: 5, minor: 1 }),
            ("/init", Kind::File(b"#!/bin/busybox sh\n".to_vec())),
            ("/usr/bin", Kind::Directory),
            ("/usr", Kind::Directory),
        ];
        if reverse {
            entries.reverse();
        }
        let mut a = Archive::new();
        for (path, kind) in entries {
            match kind {
                Kind::Directory => a.dir(path, 0o755),
                Kind::File(data) => a.file(path, 0o755, data),
                Kind::CharDevice { major, minor } => a.char_device(path, 0o600, major, minor),
            };
        }
        a.to_bytes()
    }

    #[test]
    fn reproducible_whatever_the_insertion_order() {
        assert_eq!(sample(false), sample(false));
        assert_eq!(sample(false), sample(true));
    }

    #[test]
    fn round_trip_with_directories_and_devices() {
        let entries = read_archive(&sample(true));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "dev",
                "dev/console",
                "init",
                "usr",
                "usr/bin"
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino as usize, i + 1, "inodes in order");
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.name);
        }
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).expect(n);
        let bin = by_name("bin");
        assert_eq!((bin.mode, bin.nlink), (0o040_755, 2));
        assert!(bin.data.is_empty());
        let console = by_name("dev/console");
        assert_eq!((console.mode, console.rdev), (0o020_600, (5, 1)));
        assert!(console.data.is_empty());
        let init = by_name("init");
        assert_eq!((init.mode, init.nlink), (0o100_755, 1));
        assert_eq!(init.data, b"#!/bin/busybox sh\n");
        assert_eq!(by_name("bin/busybox").data, b"\x7fELF busybox");
    }

    #[test]
    fn adding_a_path_again_replaces_it() {
        let mut a = Archive::new();
        a.file("init", 0o644, b"old".to_vec())
            .file("/init", 0o755, b"new".to_vec());
        let entries = read_archive(&a.to_bytes());
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].mode, &entries[0].data[..]),
            (0o100_755, &b"new"[..])
        );
    }
}
