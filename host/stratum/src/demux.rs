//! Telling the VMs' output apart on the one console the hypervisor writes.
//!
//! With several VMs the hypervisor starts each VM's line with a tag, `name
//! | `, in a colour when the console is a terminal; when another writer cut
//! a VM's line, the rest comes later as `name + …`. Its own messages have
//! no tag and start with `[stratum] `. With a single VM nothing is tagged
//! (every line but the hypervisor's is the VM's). [`Demux`]
//! turns the byte stream back into [`Piece`]s that say whose each piece of
//! text is and whether it starts a new line of that VM's; [`LineJoiner`]
//! puts a VM's pieces back into whole lines.

/// The separator after a VM's name at the start of its line.
pub const TAG: &str = " | ";
/// The separator after a VM's name when its line goes on after another
/// writer cut it.
pub const CONTINUED: &str = " + ";

/// What the hypervisor's own messages start with (the `log!` macro).
pub const HYPERVISOR_PREFIX: &str = "[stratum] ";

/// A piece of console output, as [`Demux::feed`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text of VM `vm` (its index): a new line of its (`starts_line`), or
    /// the rest of the line another writer cut. Without the tag, the line
    /// end or colour codes.
    Vm {
        /// The VM's index in the config.
        vm: usize,
        /// This piece starts a new line of the VM's.
        starts_line: bool,
        /// The text.
        text: &'a str,
    },
    /// A whole line of the hypervisor's own (or of anyone untagged).
    Other(&'a str),
}

/// Splits a console byte stream into [`Piece`]s.
#[derive(Clone, Debug)]
pub struct Demux {
    names: Vec<String>,
    line: Vec<u8>,
}

impl Demux {
    /// A demultiplexer for VMs named `names`, in config order (one VM: no
    /// tags to read; every line is its).
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            line: Vec::new(),
        }
    }

    /// Takes the next bytes; calls `out` for every line they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut dyn FnMut(Piece<'_>)) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.physical_line(&strip_escapes(&line), out);
            } else {
                self.line.push(b);
            }
        }
    }

    /// The end of the stream: an unfinished last line is handed out.
    pub fn finish(&mut self, out: &mut dyn FnMut(Piece<'_>)) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.physical_line(&strip_escapes(&line), out);
        }
    }

    fn physical_line(&self, line: &str, out: &mut dyn FnMut(Piece<'_>)) {
        // A cut line ends in the guest's \r and the hypervisor's own \r\n.
        let line = line.trim_end_matches('\r');
        if self.names.len() == 1 {
            if line.starts_with(HYPERVISOR_PREFIX) {
                return out(Piece::Other(line));
            }
            return out(Piece::Vm {
                vm: 0,
                starts_line: true,
                text: line,
            });
        }
        // The longest name that tags this line (one name may prefix another).
        let tagged = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let rest = line.strip_prefix(name.as_str())?;
                let (text, starts_line) = match rest.strip_prefix(TAG) {
                    Some(text) => (text, true),
                    None => (rest.strip_prefix(CONTINUED)?, false),
                };
                Some((name.len(), i, starts_line, text))
            })
            .max_by_key(|t| t.0);
        match tagged {
            Some((_, vm, starts_line, text)) => out(Piece::Vm {
                vm,
                starts_line,
                text,
            }),
            None => out(Piece::Other(line)),
        }
    }
}

/// Puts each VM's pieces back into whole lines: a line is whole once the
/// VM starts its next one (a cut line may still be continued until then),
/// or at [`LineJoiner::finish`].
#[derive(Clone, Debug)]
pub struct LineJoiner {
    pending: Vec<Option<String>>,
}

impl LineJoiner {
    /// A joiner for `vms` VMs.
    pub fn new(vms: usize) -> Self {
        Self {
            pending: vec![None; vms],
        }
    }

    /// Takes a piece; calls `whole(vm, line)` for a line it completes.
    pub fn take(&mut self, piece: &Piece<'_>, whole: &mut dyn FnMut(usize, &str)) {
        let Piece::Vm {
            vm,
            starts_line,
            text,
        } = *piece
        else {
            return;
        };
        let Some(slot) = self.pending.get_mut(vm) else {
            return;
        };
        match slot {
            Some(line) if !starts_line => line.push_str(text),
            _ => {
                if let Some(done) = slot.replace(text.to_owned()) {
                    whole(vm, &done);
                }
            }
        }
    }

    /// Hands out every line still open.
    pub fn finish(&mut self, whole: &mut dyn FnMut(usize, &str)) {
        for (vm, slot) in self.pending.iter_mut().enumerate() {
            if let Some(line) = slot.take() {
                whole(vm, &line);
            }
        }
    }
}

/// `line` without ANSI escape sequences (the tags' colours).
fn strip_escapes(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(names: &[&str], chunks: &[&[u8]]) -> Vec<String> {
        let mut d = Demux::new(names.iter().map(|n| (*n).to_owned()).collect());
        let mut out = Vec::new();
        let mut record = |p: Piece<'_>| {
            out.push(match p {
                Piece::Vm {
                    vm,
                    starts_line,
                    text,
                } => format!("{vm}{}{text}", if starts_line { '|' } else { '+' }),
                Piece::Other(l) => format!("-{l}"),
            });
        };
        for c in chunks {
            d.feed(c, &mut record);
        }
        d.finish(&mut record);
        out
    }

    #[test]
    fn tags_colours_and_continuations_are_read() {
        assert_eq!(
            pieces(
                &["a", "ab"],
                &[
                    b"\x1b[36mab | \x1b[0mhello\r\n[stratum] note\na | par",
                    b"t one\nab + more\na",
                ]
            ),
            ["1|hello", "-[stratum] note", "0|part one", "1+more", "-a"]
        );
    }

    #[test]
    fn a_line_cut_between_its_cr_and_lf_loses_both() {
        assert_eq!(
            pieces(&["a", "b"], &[b"a | tick 1\r\r\nb | x\r\na + \r\n"]),
            ["0|tick 1", "1|x", "0+"]
        );
    }

    #[test]
    fn one_vm_owns_every_line() {
        assert_eq!(
            pieces(&["linux"], &[b"x | y\n[stratum] z\r\n"]),
            ["0|x | y", "-[stratum] z"]
        );
    }

    #[test]
    fn cut_lines_are_joined_and_completed_by_the_next() {
        let mut j = LineJoiner::new(2);
        let mut whole = Vec::new();
        let mut record = |vm: usize, l: &str| whole.push(format!("{vm}:{l}"));
        for p in [
            Piece::Vm {
                vm: 0,
                starts_line: true,
                text: "STRATUM-LINUX: exec exi",
            },
            Piece::Other("ignored"),
            Piece::Vm {
                vm: 1,
                starts_line: true,
                text: "b",
            },
            Piece::Vm {
                vm: 0,
                starts_line: false,
                text: "t 0",
            },
            Piece::Vm {
                vm: 0,
                starts_line: true,
                text: "next",
            },
            Piece::Vm {
                vm: 7,
                starts_line: true,
                text: "no such VM",
            },
        ] {
            j.take(&p, &mut record);
        }
        j.finish(&mut record);
        assert_eq!(whole, ["0:STRATUM-LINUX: exec exit 0", "0:next", "1:b"]);
    }
}
