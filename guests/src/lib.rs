//! Test guest runtime. (being written)
#![no_std]
