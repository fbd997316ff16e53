//! The Debian kernel the project pins, and the decision between it and the
//! newest one ([`plan_kernel`], a pure function).
//!
//! Every machine boots the same kernel by default, so that `stratum bench`
//! compares like with like: [`KERNEL_PIN`] names the package, its version
//! and the SHA-256 of its `.deb`. `--latest` takes the kernel the
//! meta-package `linux-image-arm64` depends on instead. When the archive no
//! longer carries the pinned version (Debian removes superseded kernels from
//! `bookworm-security`), a pinned fetch takes the newest with a loud warning
//! ([`fallback_warning`]) rather than failing, so that CI keeps working
//! until the pin is updated.
//!
//! Updating the pin: run `stratum fetch debian --latest`; its `package:`
//! line prints the package, version and SHA-256 the signed index gives for
//! the newest kernel; copy the three into [`KERNEL_PIN`] (or read them with
//! `apt-cache show` against the cache's apt state). Bench figures measured
//! with different kernels are not comparable: re-run `cargo xtask bench`
//! after the change and say so in the commit.

/// A package at one version, with the SHA-256 (lower-case hex) of its
/// `.deb`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRef {
    /// The package name, e.g. `linux-image-6.1.0-57-arm64`.
    pub package: String,
    /// The Debian version, e.g. `6.1.192-3`.
    pub version: String,
    /// The SHA-256 of the `.deb`, 64 lower-case hex digits.
    pub sha256: String,
}

impl std::fmt::Display for PackageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.package, self.version)
    }
}

/// The pinned kernel package: what [`KernelChoice::Pinned`] fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPin {
    /// The package, `linux-image-<release>`.
    pub package: &'static str,
    /// Its Debian version.
    pub version: &'static str,
    /// The SHA-256 of its `.deb`, as the signed index of the archive gives it.
    pub sha256: &'static str,
}

impl KernelPin {
    /// The pin as a [`PackageRef`].
    pub fn package_ref(&self) -> PackageRef {
        PackageRef {
            package: self.package.to_owned(),
            version: self.version.to_owned(),
            sha256: self.sha256.to_owned(),
        }
    }

    /// The kernel release the package installs (`uname -r`): the package
    /// name without `linux-image-`.
    pub fn release(&self) -> &'static str {
        self.package
            .strip_prefix("linux-image-")
            .unwrap_or(self.package)
    }
}

/// The kernel every machine boots unless asked for `--latest` (Debian 12,
/// from `bookworm-security`). See the module docs for how to update it.
pub const KERNEL_PIN: KernelPin = KernelPin {
    package: "linux-image-6.1.0-57-arm64",
    version: "6.1.192-3",
    sha256: "8301bd5b5b2cf8fd5e479832200c23e64eca0ae9ec45c487c5c318b1e44d4692",
};

/// Which kernel a fetch wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// [`KERNEL_PIN`] (the newest, with a warning, if the archive lost it).
    Pinned,
    /// The newest: the package `linux-image-arm64` depends on.
    Latest,
}

impl KernelChoice {
    /// The choice's name in file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Latest => "latest",
        }
    }
}

/// Where a fetched kernel came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOrigin {
    /// The pin, checked against the pin's SHA-256.
    Pin,
    /// The newest, asked for (`--latest`), checked against the signed index.
    Newest,
    /// The newest, because the archive no longer carries the pinned
    /// package and version (named here); checked against the signed index.
    InsteadOfPin {
        /// The pinned `package version` that was missing.
        pinned: String,
    },
}

impl KernelOrigin {
    /// The origin as one manifest value (see [`KernelOrigin::parse`]).
    pub fn to_field(&self) -> String {
        match self {
            Self::Pin => "pin".to_owned(),
            Self::Newest => "newest".to_owned(),
            Self::InsteadOfPin { pinned } => format!("instead-of-pin {pinned}"),
        }
    }

    /// Reads [`KernelOrigin::to_field`]'s text.
    pub fn parse(field: &str) -> Option<Self> {
        match field.trim() {
            "pin" => Some(Self::Pin),
            "newest" => Some(Self::Newest),
            other => {
                let pinned = other.strip_prefix("instead-of-pin ")?.trim();
                (!pinned.is_empty()).then(|| Self::InsteadOfPin {
                    pinned: pinned.to_owned(),
                })
            }
        }
    }
}

/// The kernel package a fetch downloads, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlan {
    /// The package, version and the SHA-256 its `.deb` must have.
    pub deb: PackageRef,
    /// Where it came from.
    pub origin: KernelOrigin,
}

/// Whether [`plan_kernel`] needs the newest kernel, given the choice and
/// whether the index carries the pinned version.
pub fn needs_newest(choice: KernelChoice, pin_in_index: bool) -> bool {
    choice == KernelChoice::Latest || !pin_in_index
}

/// Decides which kernel package to download.
///
/// `pin_in_index`: the index's entry for the pinned package at the pinned
/// version (`None` when the archive no longer carries it); `newest`: the
/// package `linux-image-arm64` depends on, at its candidate version (needed
/// when [`needs_newest`]). A pinned version whose indexed SHA-256 differs
/// from the pin's is an error: one of them is not what the project tested.
pub fn plan_kernel(
    choice: KernelChoice,
    pin: &KernelPin,
    pin_in_index: Option<&PackageRef>,
    newest: Option<&PackageRef>,
) -> Result<KernelPlan, String> {
    let newest_or = |what: &str| {
        newest.cloned().ok_or_else(|| {
            format!("{what}, and the archive names no newest kernel (linux-image-arm64)")
        })
    };
    match (choice, pin_in_index) {
        (KernelChoice::Pinned, Some(indexed)) => {
            if !indexed.sha256.eq_ignore_ascii_case(pin.sha256) {
                return Err(format!(
                    "the signed index gives SHA-256 {} for the pinned kernel {} {}, \
                     but the pin says {}: refusing it",
                    indexed.sha256, pin.package, pin.version, pin.sha256
                ));
            }
            Ok(KernelPlan {
                deb: pin.package_ref(),
                origin: KernelOrigin::Pin,
            })
        }
        (KernelChoice::Pinned, None) => {
            let deb = newest_or(&format!(
                "the archive no longer carries the pinned kernel {} {}",
                pin.package, pin.version
            ))?;
            Ok(KernelPlan {
                deb,
                origin: KernelOrigin::InsteadOfPin {
                    pinned: format!("{} {}", pin.package, pin.version),
                },
            })
        }
        (KernelChoice::Latest, _) => Ok(KernelPlan {
            deb: newest_or("--latest asks for the newest kernel")?,
            origin: KernelOrigin::Newest,
        }),
    }
}

/// The warning a pinned fetch gives when it took the newest kernel instead
/// of the pin (`pinned`: `package version`).
pub fn fallback_warning(pinned: &str, chosen: &str) -> String {
    format!(
        "THE PINNED KERNEL IS NOT IN THE DEBIAN ARCHIVE ANY MORE.\n\
         \x20 pinned:   {pinned}\n\
         \x20 using:    {chosen} (the newest)\n\
         Bench figures measured with this kernel are NOT comparable with the pinned \
         kernel's.\n\
         Update KERNEL_PIN in host/stratum/src/linux/debian/pin.rs (docs/testing.md, \
         \"The pinned Debian kernel\")."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: KernelPin = KernelPin {
        package: "linux-image-6.1.0-57-arm64",
        version: "6.1.192-3",
        sha256: "aa11",
    };

    fn pkg(package: &str, version: &str, sha256: &str) -> PackageRef {
        PackageRef {
            package: package.into(),
            version: version.into(),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn the_pin_is_well_formed() {
        assert!(KERNEL_PIN.package.starts_with("linux-image-"));
        assert!(KERNEL_PIN.package.ends_with("-arm64"));
        assert_eq!(KERNEL_PIN.release(), "6.1.0-57-arm64");
        assert_eq!(KERNEL_PIN.sha256.len(), 64);
        assert!(
            KERNEL_PIN
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn pinned_and_carried_takes_the_pin_with_its_hash() {
        let indexed = pkg(PIN.package, PIN.version, "AA11");
        assert!(!needs_newest(KernelChoice::Pinned, true));
        let plan = plan_kernel(KernelChoice::Pinned, &PIN, Some(&indexed), None).expect("pin");
        assert_eq!(plan.deb, pkg(PIN.package, PIN.version, "aa11"));
        assert_eq!(plan.origin, KernelOrigin::Pin);
    }

    #[test]
    fn pinned_with_another_hash_in_the_index_is_refused() {
        let indexed = pkg(PIN.package, PIN.version, "bb22");
        let e = plan_kernel(KernelChoice::Pinned, &PIN, Some(&indexed), None)
            .expect_err("hash differs");
        assert!(e.contains("bb22") && e.contains("aa11"), "{e}");
    }

    #[test]
    fn pinned_but_gone_falls_back_to_the_newest() {
        assert!(needs_newest(KernelChoice::Pinned, false));
        let newest = pkg("linux-image-6.1.0-58-arm64", "6.1.200-1", "cc33");
        let plan = plan_kernel(KernelChoice::Pinned, &PIN, None, Some(&newest)).expect("newest");
        assert_eq!(plan.deb, newest);
        assert_eq!(
            plan.origin,
            KernelOrigin::InsteadOfPin {
                pinned: "linux-image-6.1.0-57-arm64 6.1.192-3".into()
            }
        );
        let e = plan_kernel(KernelChoice::Pinned, &PIN, None, None).expect_err("nothing");
        assert!(e.contains("no longer carries the pinned kernel"), "{e}");
    }

    #[test]
    fn latest_takes_the_newest_even_when_the_pin_is_there() {
        assert!(needs_newest(KernelChoice::Latest, true));
        let indexed = pkg(PIN.package, PIN.version, "aa11");
        let newest = pkg("linux-image-6.1.0-58-arm64", "6.1.200-1", "cc33");
        let plan =
            plan_kernel(KernelChoice::Latest, &PIN, Some(&indexed), Some(&newest)).expect("newest");
        assert_eq!(plan.deb, newest);
        assert_eq!(plan.origin, KernelOrigin::Newest);
        assert!(plan_kernel(KernelChoice::Latest, &PIN, Some(&indexed), None).is_err());
    }

    #[test]
    fn the_fallback_warning_names_both_versions_and_the_consequence() {
        let w = fallback_warning(
            "linux-image-6.1.0-57-arm64 6.1.192-3",
            "linux-image-6.1.0-58-arm64 6.1.200-1",
        );
        for needle in ["6.1.192-3", "6.1.200-1", "NOT comparable", "KERNEL_PIN"] {
            assert!(w.contains(needle), "{needle}: {w}");
        }
    }

    #[test]
    fn origin_round_trips_as_a_field() {
        for origin in [
            KernelOrigin::Pin,
            KernelOrigin::Newest,
            KernelOrigin::InsteadOfPin {
                pinned: "linux-image-1-arm64 1-1".into(),
            },
        ] {
            assert_eq!(KernelOrigin::parse(&origin.to_field()), Some(origin));
        }
        assert_eq!(KernelOrigin::parse("instead-of-pin "), None);
        assert_eq!(KernelOrigin::parse("whatever"), None);
    }
}
