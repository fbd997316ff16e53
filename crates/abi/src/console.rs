//! Console markers shared by the test guests and the system-test harness.
//!
//! A test guest prints `STRATUM-TEST PASS <name>` or `STRATUM-TEST FAIL <name>: <why>`
//! on its UART; the harness matches these lines.

/// Prefix of every line the harness interprets.
pub const TEST_PREFIX: &str = "STRATUM-TEST";
/// Printed by the hypervisor once the banner is complete.
pub const BANNER_PREFIX: &str = "Stratum";
