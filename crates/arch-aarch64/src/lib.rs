//! AArch64 EL2 hardware access. (being written)
#![no_std]
