//! The host tool's config parser and validator (`stratum::config`): TOML
//! text in, as if read from `<dir>/configs/fuzz.toml`, where `<dir>`
//! (`$TMPDIR/stratum-fuzz-config`, written at start) holds small stand-ins for
//! the guests the repository's configs name (`../target/…/release/NAME`),
//! an initrd and the passthrough DT fragment, so valid configs get past
//! the file checks to the rules between fields and VMs.
//!
//! Checked: parsing never panics; a refused config's report names the
//! file on its first line, and every `file:line:col` it gives points into
//! the text; an accepted config answers every query (`summary`,
//! `check_supported`, `virtio_devices`, `bundle_size`) and, when this
//! build supports it, encodes into a boot bundle of exactly `bundle_size`
//! bytes that the hypervisor's parser accepts.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stratum::Config;
use stratum_abi::bundle::Bundle;

const GUESTS: [&str; 12] = [
    "hello", "pingpong", "restart", "ticker", "rtcpass", "canary", "spinner", "crash", "probe",
    "psci", "bench", "hostile",
];

/// The directory the config "lives" in, set up once.
fn config_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // A fixed place, so a crash reproduces in another process.
        let dir = std::env::temp_dir().join("stratum-fuzz-config");
        let guests = dir.join("target/aarch64-unknown-none/release");
        let configs = dir.join("configs");
        std::fs::create_dir_all(&guests).expect("temporary guest directory");
        std::fs::create_dir_all(&configs).expect("temporary config directory");
        // A raw kernel: a branch-to-self and padding.
        let mut kernel = vec![0u8; 4096];
        kernel[..4].copy_from_slice(&0x1400_0000u32.to_le_bytes());
        for g in GUESTS {
            std::fs::write(guests.join(g), &kernel).expect("a stand-in guest");
        }
        std::fs::write(configs.join("initrd.cpio"), [0u8; 512]).expect("an initrd");
        std::fs::write(
            configs.join("passthrough-fragment.dtb"),
            include_bytes!("../../configs/passthrough-fragment.dtb"),
        )
        .expect("the DT fragment");
        configs.join("fuzz.toml")
    })
}

/// Every report line that starts with `PATH:LINE:COL` points into `text`
/// (a line may go on with text quoted from the config, which may hold
/// anything).
fn check_places(report: &str, path: &str, text: &str) {
    let lines = text.split('\n').count();
    for line in report.lines() {
        let Some(after) = line.strip_prefix(path).and_then(|r| r.strip_prefix(':')) else {
            continue;
        };
        let mut parts = after.splitn(3, ':');
        let (Some(l), Some(c)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(l), Ok(c)) = (l.parse::<usize>(), c.parse::<usize>()) else {
            continue;
        };
        assert!(
            l >= 1 && l <= lines,
            "line {l} of a {lines}-line file: {report}"
        );
        assert!(c >= 1, "column {c}: {report}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = config_path();
    let shown = path.display().to_string();
    let mut no_debian = || -> stratum::Result<stratum::linux::LinuxGuest> {
        Err(stratum::Error::environment(
            "the fuzz target does not fetch Debian",
        ))
    };
    match Config::parse_with(text, path, &mut no_debian) {
        Err(e) => {
            let report = format!("{e:#}");
            assert!(
                report.starts_with(&shown),
                "a config error without its file: {report:?}"
            );
            check_places(&report, &shown, text);
        }
        Ok(config) => {
            let _ = config.summary();
            let _ = config.virtio_devices();
            let size = config.bundle_size();
            if config.check_supported().is_ok()
                && let Ok(bytes) = stratum::kernel::build_bundle(&config, 0, [0; 16])
            {
                assert_eq!(bytes.len() as u64, size, "bundle_size");
                if let Err(e) = Bundle::parse(&bytes) {
                    panic!("a valid config encodes a bundle the hypervisor refuses: {e}");
                }
            }
        }
    }
});
