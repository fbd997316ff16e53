//! Tests of the fetch's decisions and of the cache paths that need no
//! network (the network paths run in the tier-3 system test).

use super::*;
use crate::testutil::{TestDir, linux_image};

#[test]
fn cache_dir_precedence() {
    let s = |v: &str| Some(OsString::from(v));
    assert_eq!(
        cache_dir_from(s("/c"), s("/x"), s("/h")),
        Some(PathBuf::from("/c/debian"))
    );
    assert_eq!(
        cache_dir_from(None, s("/x"), s("/h")),
        Some(PathBuf::from("/x/stratum/debian"))
    );
    assert_eq!(
        cache_dir_from(None, None, s("/h")),
        Some(PathBuf::from("/h/.cache/stratum/debian"))
    );
    assert_eq!(cache_dir_from(None, None, None), None);
}

#[test]
fn parses_apt_cache_depends() {
    let out = "linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64\n";
    assert_eq!(
        parse_kernel_dependency(out).as_deref(),
        Some("linux-image-6.1.0-56-arm64")
    );
    let virtual_dep = "linux-image-arm64\n  PreDepends: x\n  Depends: <linux-image-6.12.9-arm64>\n  Recommends: y\n";
    assert_eq!(
        parse_kernel_dependency(virtual_dep).as_deref(),
        Some("linux-image-6.12.9-arm64")
    );
    assert_eq!(
        parse_kernel_dependency("linux-image-arm64\n  Depends: kmod\n"),
        None
    );
    assert_eq!(parse_kernel_dependency(""), None);
}

#[test]
fn parses_apt_cache_show_stanzas() {
    let a = "a".repeat(64);
    let b = "B".repeat(64);
    let show = format!(
        "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nSHA256: {a}\nFilename: pool/x.deb\n\n\
         Package: busybox-static\nVersion: 1:1.30\nSHA256: {b}\n\n\
         Package: no-hash\nVersion: 1\n\n\
         Package: short-hash\nVersion: 1\nSHA256: abc\n"
    );
    assert_eq!(
        parse_stanzas(&show),
        [
            PackageRef {
                package: "busybox-static".into(),
                version: "1:1.35.0-4+deb12u1+b1".into(),
                sha256: a,
            },
            PackageRef {
                package: "busybox-static".into(),
                version: "1:1.30".into(),
                sha256: "b".repeat(64),
            },
        ]
    );
    assert_eq!(parse_stanzas(""), []);
}

#[test]
fn tail_keeps_the_last_lines() {
    let text: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
    let t = tail(&text);
    assert_eq!(t.lines().count(), APT_TAIL_LINES);
    assert!(
        t.starts_with("    line 13") && t.ends_with("line 20"),
        "{t}"
    );
}

/// A complete guest in `cache` for `deb` with `origin`.
fn cached_guest(cache: &Cache, deb: &PackageRef, origin: KernelOrigin) -> DebianGuest {
    let release = deb.package.strip_prefix("linux-image-").expect("kernel");
    let pkg = cache.package_dir(deb, Some("t"));
    let boot = pkg.join("boot");
    fs::create_dir_all(&boot).expect("mkdir");
    let kernel = boot.join(format!("vmlinuz-{release}"));
    fs::write(&kernel, linux_image(0, 0x10000, 0xa, 0x1000)).expect("kernel");
    let bb = cache.packages.join("busybox-static_1/bin");
    fs::create_dir_all(&bb).expect("mkdir");
    fs::write(bb.join("busybox"), b"\x7fELF").expect("busybox");
    let modules_dir = pkg.join(format!("lib/modules/{release}"));
    super::super::modules::write_fake_cache_dir(&modules_dir);
    let board_dtbs = pkg.join(format!("usr/lib/linux-image-{release}"));
    for dtb in super::BOARD_DTBS {
        let path = board_dtbs.join(dtb);
        fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        fs::write(&path, b"\xd0\x0d\xfe\xed").expect("dtb");
    }
    DebianGuest {
        kernel,
        busybox: bb.join("busybox"),
        modules_dir,
        board_dtbs,
        kernel_version: release.into(),
        kernel_deb: deb.clone(),
        origin,
    }
}

/// A kernel package newer than the pin.
fn newer_package() -> PackageRef {
    PackageRef {
        package: "linux-image-9.9.9-1-arm64".into(),
        version: "9.9.9-1".into(),
        sha256: "c".repeat(64),
    }
}

#[test]
fn which_cached_fetch_is_current() {
    let dir = TestDir::new("debian-current");
    let cache = Cache::open(dir.path()).expect("cache");
    let pinned = cached_guest(&cache, &KERNEL_PIN.package_ref(), KernelOrigin::Pin);
    let newer = newer_package();
    let newest = cached_guest(&cache, &newer, KernelOrigin::Newest);
    let stand_in = DebianGuest {
        origin: KernelOrigin::InsteadOfPin {
            pinned: format!("{} {}", KERNEL_PIN.package, KERNEL_PIN.version),
        },
        ..newest.clone()
    };
    let stand_in_for_an_old_pin = DebianGuest {
        origin: KernelOrigin::InsteadOfPin {
            pinned: "linux-image-1-arm64 1-1".into(),
        },
        ..newest.clone()
    };
    let old_pin = DebianGuest {
        origin: KernelOrigin::Pin,
        ..newest.clone()
    };
    let pin = &KERNEL_PIN;
    use KernelChoice::{Latest, Pinned};
    // The pin needs no network, however old the lists.
    assert!(cached_is_current(Pinned, &pinned, pin, false));
    // A stand-in for this pin, only while the lists are fresh.
    assert!(cached_is_current(Pinned, &stand_in, pin, true));
    assert!(!cached_is_current(Pinned, &stand_in, pin, false));
    // What another pin fetched is not this pin's.
    assert!(!cached_is_current(Pinned, &old_pin, pin, true));
    assert!(!cached_is_current(
        Pinned,
        &stand_in_for_an_old_pin,
        pin,
        true
    ));
    // The newest, while the lists are fresh.
    assert!(cached_is_current(Latest, &newest, pin, true));
    assert!(!cached_is_current(Latest, &newest, pin, false));
}

/// A pinned fetch whose kernel is in the cache runs no apt (the lists are
/// stale, there are no sources): nothing would answer if it did.
#[test]
fn a_cached_pinned_kernel_needs_no_network() {
    let dir = TestDir::new("debian-cache");
    let cache = Cache::open(dir.path()).expect("cache");
    let guest = cached_guest(&cache, &KERNEL_PIN.package_ref(), KernelOrigin::Pin);
    cache
        .set_manifest(KernelChoice::Pinned, &guest)
        .expect("manifest");
    assert!(!cache.lists_fresh());
    assert_eq!(
        fetch_debian(dir.path(), KernelChoice::Pinned, false).expect("from cache"),
        guest
    );
    assert!(
        !cache.apt.source_list().exists(),
        "apt was not even prepared"
    );

    // A kernel that is not an arm64 Image is refused.
    fs::write(
        &guest.kernel,
        b"not a kernel, just text that is long enough",
    )
    .expect("w");
    let e = fetch_debian(dir.path(), KernelChoice::Pinned, false).expect_err("not an Image");
    assert!(e.to_string().contains("not an arm64 Linux Image"), "{e}");
}

/// A `--latest` fetch uses its own manifest while the lists are fresh, and
/// the pinned one is not taken for it.
#[test]
fn a_fresh_latest_fetch_uses_its_own_manifest() {
    let dir = TestDir::new("debian-latest");
    let cache = Cache::open(dir.path()).expect("cache");
    let pinned = cached_guest(&cache, &KERNEL_PIN.package_ref(), KernelOrigin::Pin);
    let newer = newer_package();
    let latest = cached_guest(&cache, &newer, KernelOrigin::Newest);
    cache
        .set_manifest(KernelChoice::Pinned, &pinned)
        .expect("manifest");
    cache
        .set_manifest(KernelChoice::Latest, &latest)
        .expect("manifest");
    cache.touch_updated().expect("stamp");
    assert_eq!(
        fetch_debian(dir.path(), KernelChoice::Latest, false).expect("latest"),
        latest
    );
    assert_eq!(
        fetch_debian(dir.path(), KernelChoice::Pinned, false).expect("pinned"),
        pinned
    );
}

#[test]
fn describes_the_kernel_and_its_origin() {
    let dir = TestDir::new("debian-describe");
    let cache = Cache::open(dir.path()).expect("cache");
    let mut g = cached_guest(&cache, &KERNEL_PIN.package_ref(), KernelOrigin::Pin);
    let d = g.describe_kernel();
    assert!(
        d.starts_with(&format!(
            "{} {} sha256 {}",
            KERNEL_PIN.package, KERNEL_PIN.version, KERNEL_PIN.sha256
        )) && d.ends_with("(pinned)"),
        "{d}"
    );
    g.origin = KernelOrigin::InsteadOfPin {
        pinned: "linux-image-1-arm64 1-1".into(),
    };
    assert!(
        g.describe_kernel()
            .contains("the pinned linux-image-1-arm64 1-1 is not")
    );
}
