//! Test helpers: synthetic ELF files and Linux Images, and scratch directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("stratum-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An arm64 Image header (with an "MZ" stub) padded to `len` bytes.
pub fn linux_image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(0x40)];
    b[0..2].copy_from_slice(b"MZ");
    b[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    b[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
    b[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
    b[0x38..0x3c].copy_from_slice(b"ARM\x64");
    b
}

/// Builds ELF64 little-endian AArch64 executables with identity-mapped
/// PT_LOAD segments.
pub struct ElfBuilder {
    entry: u64,
    segments: Vec<(u64, Vec<u8>, u64)>,
}

impl ElfBuilder {
    pub fn new(entry: u64) -> Self {
        Self {
            entry,
            segments: Vec::new(),
        }
    }

    pub fn segment(mut self, paddr: u64, data: &[u8], mem_size: u64) -> Self {
        self.segments.push((paddr, data.to_vec(), mem_size));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let phoff = 64usize;
        let mut data_at = (phoff + self.segments.len() * 56).next_multiple_of(16);
        let mut out = vec![0u8; data_at];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(self.segments.len() as u16).to_le_bytes());
        for (i, (paddr, data, mem_size)) in self.segments.iter().enumerate() {
            let p = phoff + i * 56;
            let fields: [(usize, u64); 6] = [
                (8, data_at as u64),
                (16, *paddr),
                (24, *paddr),
                (32, data.len() as u64),
                (40, *mem_size),
                (48, 0x1000),
            ];
            out[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            out[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            for (at, v) in fields {
                out[p + at..p + at + 8].copy_from_slice(&v.to_le_bytes());
            }
            out.resize(data_at, 0);
            out.extend_from_slice(data);
            data_at = out.len().next_multiple_of(16);
        }
        out
    }
}

/// A stand-in hypervisor: an arm64 Image that prints "Hi\n" on the PL011 at
/// 0x0900_0000 and exits QEMU through semihosting `SYS_EXIT_EXTENDED` with
/// `code`.
pub fn fake_hypervisor(code: u64) -> Vec<u8> {
    let words: [u32; 12] = [
        0xD2A1_2001, // movz x1, #0x0900, lsl #16
        0x5280_0902, // movz w2, #'H'
        0x3900_0022, // strb w2, [x1]
        0x5280_0D22, // movz w2, #'i'
        0x3900_0022, // strb w2, [x1]
        0x5280_0142, // movz w2, #'\n'
        0x3900_0022, // strb w2, [x1]
        0x1000_00A1, // adr x1, block (+0x14)
        0xD280_0400, // movz x0, #0x20 (SYS_EXIT_EXTENDED)
        0xD45E_0000, // hlt #0xf000
        0x1400_0000, // b .
        0xD503_201F, // nop
    ];
    let mut b = linux_image(0, 0x20_0000, 0xa, 0x40);
    b[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b 0x40
    for w in words {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(&0x20026u64.to_le_bytes()); // ADP_Stopped_ApplicationExit
    b.extend_from_slice(&code.to_le_bytes());
    b
}
