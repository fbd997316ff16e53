//! A plain vCPU register file for tests (x0–x30, SP, PC), shared by the
//! MMIO and exit-policy tests.

use super::GuestRegs;

/// Registers with recognisable contents: xN = `0xa5a5_0000_0000_000N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TestRegs {
    pub(crate) x: [u64; 31],
    pub(crate) sp: u64,
    pub(crate) pc: u64,
}

impl TestRegs {
    /// The recognisable register file, SP `0xffff_8000_0000_8000`, PC
    /// `0xffff_8000_0010_0000`.
    pub(crate) fn new() -> Self {
        let mut x = [0; 31];
        for (n, r) in x.iter_mut().enumerate() {
            *r = 0xa5a5_0000_0000_0000 | n as u64;
        }
        Self {
            x,
            sp: 0xffff_8000_0000_8000,
            pc: 0xffff_8000_0010_0000,
        }
    }

    /// The same with xN = `v`.
    pub(crate) fn with(mut self, n: usize, v: u64) -> Self {
        self.x[n] = v;
        self
    }
}

impl GuestRegs for TestRegs {
    fn x(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }
    fn set_x(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }
    fn sp(&self) -> u64 {
        self.sp
    }
    fn set_sp(&mut self, v: u64) {
        self.sp = v;
    }
    fn pc(&self) -> u64 {
        self.pc
    }
}
