//! The guests' command line (`/chosen/bootargs`): space-separated `key=value`
//! words, e.g. `role=ping rounds=100` or `probe=0x40000000-0x80000000`.
//! Numbers are decimal or `0x` hexadecimal. Pure (host-tested).

/// The value of the first `key=value` word for `key`.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Parses a decimal or `0x`-hexadecimal number (`_` separators allowed).
pub fn parse_number(text: &str) -> Option<u64> {
    let mut digits = [0u8; 32];
    let mut len = 0;
    let (body, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    for b in body.bytes().filter(|&b| b != b'_') {
        *digits.get_mut(len)? = b;
        len += 1;
    }
    let clean = core::str::from_utf8(&digits[..len]).ok()?;
    if clean.is_empty() {
        return None;
    }
    u64::from_str_radix(clean, radix).ok()
}

/// Why a command-line value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// The value is not a number (or a range of numbers).
    NotANumber,
    /// A range whose end is not above its start.
    EmptyRange,
}

impl core::fmt::Display for ArgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotANumber => "not a number",
            Self::EmptyRange => "range end not above its start",
        })
    }
}

/// The number `key=N`, or `default` when the word is absent.
pub fn number(cmdline: &str, key: &str, default: u64) -> Result<u64, ArgError> {
    match value(cmdline, key) {
        None => Ok(default),
        Some(v) => parse_number(v).ok_or(ArgError::NotANumber),
    }
}

/// The range `key=START-END` (end exclusive), if the word is present.
pub fn range(cmdline: &str, key: &str) -> Result<Option<(u64, u64)>, ArgError> {
    let Some(v) = value(cmdline, key) else {
        return Ok(None);
    };
    let (start, end) = v.split_once('-').ok_or(ArgError::NotANumber)?;
    let start = parse_number(start).ok_or(ArgError::NotANumber)?;
    let end = parse_number(end).ok_or(ArgError::NotANumber)?;
    if end <= start {
        return Err(ArgError::EmptyRange);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_numbers() {
        let cmd = "console=ttyAMA0 period_ms=500  ticks=0x10 role=pong";
        assert_eq!(value(cmd, "role"), Some("pong"));
        assert_eq!(value(cmd, "rol"), None);
        assert_eq!(number(cmd, "period_ms", 1), Ok(500));
        assert_eq!(number(cmd, "ticks", 1), Ok(16));
        assert_eq!(number(cmd, "absent", 7), Ok(7));
        assert_eq!(number(cmd, "role", 7), Err(ArgError::NotANumber));
        assert_eq!(parse_number("1_000"), Some(1000));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("99999999999999999999999"), None);
    }

    #[test]
    fn parses_ranges() {
        let cmd = "probe=0x40000000-0x80000000 bad=5-5 worse=x-1";
        assert_eq!(range(cmd, "probe"), Ok(Some((0x4000_0000, 0x8000_0000))));
        assert_eq!(range(cmd, "none"), Ok(None));
        assert_eq!(range(cmd, "bad"), Err(ArgError::EmptyRange));
        assert_eq!(range(cmd, "worse"), Err(ArgError::NotANumber));
    }
}
