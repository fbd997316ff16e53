//! The configuration as written (serde types with source spans) and the
//! diagnostics that point back into it: `file:line:col: field: message`, or
//! `--flag: message` when the configuration came from command-line flags.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) machine: Option<Spanned<RawMachine>>,
    pub(super) system: Option<Spanned<RawSystem>>,
    #[serde(default)]
    pub(super) vm: Vec<Spanned<RawVm>>,
    #[serde(default)]
    pub(super) channel: Vec<Spanned<RawChannel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSystem {
    pub(super) slice: Option<Spanned<String>>,
    pub(super) stop: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMachine {
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) gic: Option<Spanned<i64>>,
    pub(super) cpu: Option<Spanned<String>>,
    pub(super) memory: Option<Spanned<RawSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVm {
    pub(super) name: Option<Spanned<String>>,
    pub(super) kernel: Option<Spanned<String>>,
    pub(super) initrd: Option<Spanned<String>>,
    pub(super) cmdline: Option<Spanned<String>>,
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) memory: Option<Spanned<RawSize>>,
    pub(super) memory_base: Option<Spanned<RawSize>>,
    pub(super) placement: Option<Spanned<String>>,
    pub(super) pcpus: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) on_crash: Option<Spanned<String>>,
    pub(super) dt_fragment: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) device: Vec<Spanned<RawDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) name: Option<Spanned<String>>,
    pub(super) compatible: Option<Spanned<RawStrings>>,
    pub(super) reg: Option<Spanned<Vec<Spanned<RawSize>>>>,
    pub(super) interrupts: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) name: Option<Spanned<String>>,
    pub(super) vms: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) size: Option<Spanned<RawSize>>,
}

/// A string, or an array of strings (a DT compatible list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawStrings(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for RawStrings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawStrings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawStrings, E> {
                Ok(RawStrings(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawStrings, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(RawStrings(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size as written: an integer or a string, parsed during validation so
/// the error can name the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawSize {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string like \"128M\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Int)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the raw config came from.
pub(super) enum Source {
    File { path: PathBuf, text: String },
    Flags,
}

impl Source {
    /// `path:line:col` for a span (or just `path`).
    pub(super) fn locate(&self, span: Option<Range<usize>>) -> String {
        match (self, span) {
            (Self::File { path, text }, Some(span)) => {
                let (line, col) = line_col(text, span.start);
                format!("{}:{line}:{col}", path.display())
            }
            (Self::File { path, .. }, None) => path.display().to_string(),
            (Self::Flags, _) => "command line".to_owned(),
        }
    }

    /// Renders one diagnostic about `field`.
    fn render(&self, span: Option<Range<usize>>, field: &str, message: &str) -> String {
        match self {
            Self::File { .. } if field.is_empty() => format!("{}: {message}", self.locate(span)),
            Self::File { .. } => format!("{}: {field}: {message}", self.locate(span)),
            Self::Flags => match flag_for(field) {
                Some(flag) => format!("{flag}: {message}"),
                None => message.to_owned(),
            },
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub(super) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The command-line flag that sets config field `field` in flag mode.
pub(super) fn flag_for(field: &str) -> Option<&'static str> {
    let key = field.rsplit('.').next().unwrap_or(field);
    Some(match key {
        "kernel" => "--kernel",
        "initrd" => "--initrd",
        "cmdline" => "--append",
        "cpus" => "--cpus",
        "memory" => "--memory",
        "gic" => "--gic",
        "cpu" => "--cpu",
        _ => return None,
    })
}

pub(super) struct Diagnostics<'a> {
    pub(super) source: &'a Source,
    pub(super) messages: Vec<String>,
}

impl Diagnostics<'_> {
    pub(super) fn push(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl fmt::Display,
    ) {
        let line = self.source.render(span, field, &message.to_string());
        self.messages.push(line);
    }

    pub(super) fn at<T>(&mut self, value: &Spanned<T>, field: &str, message: impl fmt::Display) {
        self.push(Some(value.span()), field, message);
    }
}
