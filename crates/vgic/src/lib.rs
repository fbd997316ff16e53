//! The virtual GIC model (being written).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
