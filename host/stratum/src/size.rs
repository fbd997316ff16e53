//! Memory sizes and addresses as people write them: `4096`, `"64K"`,
//! `"128M"`, `"1G"`, `"0x4000_0000"`.
//!
//! The grammar, used by config files and command-line flags alike:
//! a decimal number with an optional binary suffix `K`, `M`, `G` or `T`
//! (case-insensitive, powers of 1024, an optional trailing `B` or `iB` is
//! accepted: `"128MiB"`), or a hexadecimal number `0x…` without suffix.
//! `_` may separate digits. Fractions (`"1.5G"`) are rejected: write `"1536M"`.

use std::fmt;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Why a size string was rejected. Rendered as `bad size "…": <reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad size {:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for SizeError {}

const EXPECTED: &str = "expected a number with an optional K/M/G suffix, or 0x… hex";

/// Parses a size or address string (see the module docs).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        text: text.to_owned(),
        reason,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err(EXPECTED));
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let digits: String = hex.chars().filter(|&c| c != '_').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(EXPECTED));
        }
        return u64::from_str_radix(&digits, 16).map_err(|_| err("too large"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if suffix.starts_with('.') || suffix.starts_with(',') {
        return Err(err(
            "fractions are not accepted; use a smaller unit (\"1536M\", not \"1.5G\")",
        ));
    }
    let digits: String = num.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(err(EXPECTED));
    }
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => TIB,
        _ => return Err(err(EXPECTED)),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| err("too large"))
}

/// Formats a byte count for people: the largest binary unit that divides
/// it exactly (`128 MiB`, `1536 MiB`, `4 KiB`, `12345 bytes`).
pub fn format_size(bytes: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let cases: &[(&str, u64)] = &[
            ("4096", 4096),
            ("0", 0),
            ("64K", 64 * KIB),
            ("64k", 64 * KIB),
            ("128M", 128 * MIB),
            ("128MiB", 128 * MIB),
            ("128mb", 128 * MIB),
            ("1G", GIB),
            ("2T", 2 * TIB),
            ("1_024M", GIB),
            (" 16M ", 16 * MIB),
            ("0x4000_0000", 0x4000_0000),
            ("0X40000000", 0x4000_0000),
            ("0xffffffffffffffff", u64::MAX),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejected() {
        let cases: &[(&str, &str)] = &[
            ("", "expected a number"),
            ("12Q", "expected a number with an optional K/M/G suffix"),
            ("M", "expected a number"),
            ("-1", "expected a number"),
            ("1.5G", "fractions are not accepted"),
            ("0x", "expected a number"),
            ("0x12M", "expected a number"),
            ("0x1_0000_0000_0000_0000", "too large"),
            ("16777216T", "too large"),
            ("99999999999999999999", "too large"),
            ("128 M", "expected a number"),
        ];
        for &(text, fragment) in cases {
            let e = parse_size(text).expect_err(text);
            assert!(e.to_string().contains(fragment), "{text}: {e}");
            assert!(e.to_string().starts_with("bad size \""), "{e}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(128 * MIB), "128 MiB");
        assert_eq!(format_size(1536 * MIB), "1536 MiB");
        assert_eq!(format_size(GIB), "1 GiB");
        assert_eq!(format_size(4 * KIB), "4 KiB");
        assert_eq!(format_size(12345), "12345 bytes");
        assert_eq!(format_size(0), "0 bytes");
    }
}
