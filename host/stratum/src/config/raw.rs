//! The configuration as written (serde types with source spans) and the
//! diagnostics that point back into it: `file:line:col: field: message`, or
//! `--flag: message` when the configuration came from command-line flags.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
pub(super) struct RawConfig {
    pub(super) machine: Option<Spanned<RawMachine>>,
    pub(super) system: Option<Spanned<RawSystem>>,
    #[serde(default)]
    pub(super) vm: Vec<Spanned<RawVm>>,
    #[serde(default)]
    pub(super) channel: Vec<Spanned<RawChannel>>,
    #[serde(default)]
    pub(super) network: Vec<Spanned<RawNetwork>>,
    #[serde(default)]
    pub(super) vsock: Vec<Spanned<RawVsock>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawSystem {
    pub(super) slice: Option<Spanned<String>>,
    pub(super) stop: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawMachine {
    pub(super) board: Option<Spanned<String>>,
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) gic: Option<Spanned<i64>>,
    pub(super) cpu: Option<Spanned<String>>,
    pub(super) memory: Option<Spanned<RawSize>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawVm {
    pub(super) name: Option<Spanned<String>>,
    pub(super) kernel: Option<Spanned<String>>,
    pub(super) initrd: Option<Spanned<String>>,
    pub(super) cmdline: Option<Spanned<String>>,
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) memory: Option<Spanned<RawSize>>,
    pub(super) memory_base: Option<Spanned<RawSize>>,
    pub(super) identity: Option<Spanned<bool>>,
    pub(super) firmware: Option<Spanned<bool>>,
    pub(super) placement: Option<Spanned<String>>,
    pub(super) pcpus: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) on_crash: Option<Spanned<String>>,
    pub(super) dt_fragment: Option<Spanned<String>>,
    pub(super) debian: Option<Spanned<bool>>,
    pub(super) exec: Option<Spanned<String>>,
    pub(super) vsock: Option<Spanned<bool>>,
    pub(super) virtio_console: Option<Spanned<bool>>,
    pub(super) role: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) device: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    pub(super) disk: Vec<Spanned<RawDisk>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawDisk {
    pub(super) image: Option<Spanned<String>>,
    pub(super) readonly: Option<Spanned<bool>>,
    /// Added by `--disk` to a config file: its problems are the flag's.
    #[serde(skip)]
    pub(super) flag: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawDevice {
    pub(super) name: Option<Spanned<String>>,
    pub(super) compatible: Option<Spanned<RawStrings>>,
    pub(super) reg: Option<Spanned<Vec<Spanned<RawSize>>>>,
    pub(super) interrupts: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawChannel {
    pub(super) name: Option<Spanned<String>>,
    pub(super) vms: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) size: Option<Spanned<RawSize>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawNetwork {
    pub(super) name: Option<Spanned<String>>,
    pub(super) vms: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) uplink: Option<Spanned<bool>>,
    /// Added by `--net user`: its problems are the flag's.
    #[serde(skip)]
    pub(super) flag: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawVsock {
    pub(super) allow: Option<Spanned<Vec<Spanned<String>>>>,
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
            // A flag's value added to a file's system (`--disk`).
            Self::File { .. } if span.is_none() && field.starts_with("--") => {
                format!("{field}: {message}")
            }
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
        "exec" => "--exec",
        "debian" => "--debian",
        "image" | "readonly" => "--disk",
        "--net" => "--net",
        _ => return None,
    })
}

/// The problems found so far, each rendered with its place.
pub(super) struct Diagnostics<'a> {
    pub(super) source: &'a Source,
    pub(super) messages: Vec<String>,
    /// Where each message points (byte offset; `None` for the whole file).
    starts: Vec<Option<usize>>,
}

impl<'a> Diagnostics<'a> {
    /// No problem yet, in `source`.
    pub(super) fn new(source: &'a Source) -> Self {
        Self {
            source,
            messages: Vec::new(),
            starts: Vec::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl fmt::Display,
    ) {
        let start = span.as_ref().map(|s| s.start);
        let line = self.source.render(span, field, &message.to_string());
        // The same finding reached twice (two rules over one value) is
        // said once.
        if !self.messages.contains(&line) {
            self.messages.push(line);
            self.starts.push(start);
        }
    }

    /// Every message, in the order of the places they point at (those about
    /// the whole file last), one per line.
    pub(super) fn report(&self) -> String {
        let mut order: Vec<usize> = (0..self.messages.len()).collect();
        order.sort_by_key(|&i| (self.starts[i].is_none(), self.starts[i]));
        let lines: Vec<&str> = order.iter().map(|&i| self.messages[i].as_str()).collect();
        lines.join("\n")
    }

    pub(super) fn at<T>(&mut self, value: &Spanned<T>, field: &str, message: impl fmt::Display) {
        self.push(Some(value.span()), field, message);
    }
}

/// The field names a derived `Deserialize` struct accepts, as serde's
/// derive passes them to `deserialize_struct` (so the list cannot drift
/// from the struct).
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(&'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// The tables of a config file, by their path (`vm.device` for the
/// devices of any VM), with the keys each accepts.
fn schema(path: &str) -> &'static [&'static str] {
    match path {
        "" => fields_of::<RawConfig>(),
        "machine" => fields_of::<RawMachine>(),
        "system" => fields_of::<RawSystem>(),
        "vm" => fields_of::<RawVm>(),
        "vm.device" => fields_of::<RawDevice>(),
        "vm.disk" => fields_of::<RawDisk>(),
        "channel" => fields_of::<RawChannel>(),
        "network" => fields_of::<RawNetwork>(),
        "vsock" => fields_of::<RawVsock>(),
        _ => &[],
    }
}

/// Reports every key that no table of the format has, wherever it is in
/// `table` (the whole document), each at its place with its field path
/// and what was expected (the closest key first when one is near).
pub(super) fn unknown_keys(d: &mut Diagnostics<'_>, table: &toml::de::DeTable<'_>) {
    walk_table(d, table, "", "");
}

fn walk_table(d: &mut Diagnostics<'_>, table: &toml::de::DeTable<'_>, path: &str, field: &str) {
    let known = schema(path);
    for (key, value) in table {
        let name: &str = key.get_ref();
        let here = if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
        if !known.contains(&name) {
            let near = known
                .iter()
                .filter(|k| edit_distance(k, name) <= 2)
                .min_by_key(|k| edit_distance(k, name));
            let list = known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = near.map_or_else(String::new, |k| format!("did you mean `{k}`? "));
            d.push(
                Some(key.span()),
                field,
                format!("unknown field `{name}`: {hint}expected one of {list}"),
            );
            continue;
        }
        let sub = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        match value.get_ref() {
            toml::de::DeValue::Table(t) => walk_table(d, t, &sub, &here),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::de::DeValue::Table(t) = item.get_ref() {
                        walk_table(d, t, &sub, &format!("{here}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Levenshtein distance between two short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let here = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = here;
        }
    }
    row[b.len()]
}
