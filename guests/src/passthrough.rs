//! What the passthrough test guests (`rtcpass`, `uartpass`) share besides
//! [`crate::irq::await_spi`]: finding their device in the device tree.

/// Whether the device tree blob at `dtb` holds `needle` (a compatible
/// string of a node the hypervisor generated, NUL included).
pub fn dtb_contains(dtb: usize, needle: &[u8]) -> bool {
    // SAFETY: by the boot protocol x0 points at the DTB in guest RAM, which
    // nothing writes; `blob_at` checks its header before sizing the slice.
    match unsafe { crate::fdt::blob_at(dtb) } {
        Ok(blob) => blob.windows(needle.len()).any(|w| w == needle),
        Err(_) => false,
    }
}
