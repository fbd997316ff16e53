//! The kernel modules a Linux guest loads at boot: the virtio drivers
//! (transport, network, console, vsock, block), ext4 (a frontend mounts
//! its disk, `/dev/vda`) and the bridge (the service VM bridges the uplink
//! to QEMU's NIC) from the same Debian kernel package as the kernel, with
//! what they depend on.
//!
//! The bridge (`CONFIG_BRIDGE=m`) brings `stp` and `llc`. Only the service
//! VM of an uplink uses it, but every guest loads it: it registers no
//! device until `brctl addbr`, and loading the three costs a few tens of
//! milliseconds of a boot of seconds, less than a second module list
//! would cost in code.
//!
//! ext4 (`CONFIG_EXT4_FS=m`) brings `jbd2`, `mbcache` and `crc16` through
//! its `depends=`; `crc32c_generic` is listed on its own: ext4's
//! `metadata_csum` (on by default in `mkfs.ext4`) and jbd2's journal
//! checksums ask the crypto API for `crc32c` by name, which is no symbol
//! dependency, and with no `modprobe` tree in the initramfs nothing would
//! load it on demand (the mount fails with "Cannot load crc32c driver").
//!
//! Debian 12's arm64 kernel builds these as modules (`CONFIG_VIRTIO_MMIO=m`,
//! `CONFIG_VIRTIO_NET=m`, …, uncompressed: `CONFIG_MODULE_COMPRESS_NONE`).
//! Debian's package does not ship `modules.dep` (its `postinst` runs
//! `depmod`), so [`prune`] writes one from each module's own `.modinfo`
//! (`name=` and `depends=`, what `depmod` reads too) in the usual format;
//! [`load_order`] turns the wanted list into the files to load,
//! dependencies first, which the initramfs carries as
//! `/lib/modules/<name>.ko` and its init loads with busybox `insmod` in
//! the order of `/etc/stratum/modules` ([`super::initramfs`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::{Error, Result};

/// The modules every Debian guest loads (each with its dependencies).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_net",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "bridge",
];

/// A module to load: its name and its file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's name (`virtio_net`), as `/proc/modules` lists it.
    pub name: String,
    /// The `.ko` file.
    pub bytes: Vec<u8>,
}

/// A module's name from its path in `modules.dep` (the kernel treats `-`
/// and `_` in names alike; `/proc/modules` shows `_`).
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The `modules.dep` paths of `wanted` and everything they need, each after
/// its dependencies, each once. An error names a wanted module that
/// `modules.dep` does not have (built in, or missing from this kernel).
pub fn load_order(modules_dep: &str, wanted: &[&str]) -> std::result::Result<Vec<String>, String> {
    let entries: Vec<(String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| {
            let (path, deps) = l.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            Some((path.trim().to_owned(), deps))
        })
        .collect();
    let find = |name: &str| {
        entries
            .iter()
            .find(|(path, _)| name_of(path) == name.replace('-', "_"))
    };
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    for &want in wanted {
        let (path, _) = find(want).ok_or_else(|| {
            format!("module {want} is not in modules.dep (built into this kernel, or absent)")
        })?;
        // Depth-first, dependencies first; `visiting` breaks a malformed
        // file's cycles instead of recursing forever.
        let mut stack = vec![(path.clone(), false)];
        let mut visiting = BTreeSet::new();
        while let Some((p, expanded)) = stack.pop() {
            if placed.contains(&p) {
                continue;
            }
            if expanded {
                visiting.remove(&p);
                placed.insert(p.clone());
                order.push(p);
                continue;
            }
            if !visiting.insert(p.clone()) {
                return Err(format!("modules.dep has a dependency cycle through {p}"));
            }
            stack.push((p.clone(), true));
            let deps = entries
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, d)| d.clone())
                .ok_or_else(|| format!("{p} is a dependency but has no line in modules.dep"))?;
            for d in deps.into_iter().rev() {
                if !placed.contains(&d) {
                    stack.push((d, false));
                }
            }
        }
    }
    Ok(order)
}

/// Keeps, under the modules directory `dir` (`lib/modules/<release>` of an
/// unpacked kernel package), only `modules.dep` and the files
/// [`load_order`] needs for `wanted`: a few hundred KiB instead of the
/// package's hundreds of MiB.
pub fn prune(dir: &Path, wanted: &[&str]) -> Result<()> {
    let dep_path = dir.join("modules.dep");
    if !dep_path.exists() {
        let dep = dependencies_from_modinfo(dir)?;
        fs::write(&dep_path, &dep)
            .map_err(|e| Error::environment(format!("cannot write {}: {e}", dep_path.display())))?;
    }
    let keep: BTreeSet<String> = files_in_order(dir, wanted)?.into_iter().collect();
    prune_tree(dir, dir, &keep)
}

/// A `modules.dep` for every `.ko` under `dir`, from each module's
/// `.modinfo` section: `path: dependency paths`, paths relative to `dir`.
pub fn dependencies_from_modinfo(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_modules(dir, dir, &mut files)?;
    files.sort();
    let mut by_name = std::collections::BTreeMap::new();
    let mut infos = Vec::new();
    for rel in files {
        let path = dir.join(&rel);
        let bytes = fs::read(&path)
            .map_err(|e| Error::environment(format!("cannot read {}: {e}", path.display())))?;
        let (name, deps) = modinfo(&bytes).ok_or_else(|| {
            Error::environment(format!("{}: no .modinfo section", path.display()))
        })?;
        by_name.insert(name.clone(), rel.clone());
        infos.push((rel, deps));
    }
    let mut out = String::new();
    for (rel, deps) in infos {
        out.push_str(&rel);
        out.push(':');
        for d in deps {
            // A dependency that is not a file here is built in: skip it,
            // as depmod does.
            if let Some(p) = by_name.get(&d.replace('-', "_")) {
                out.push(' ');
                out.push_str(p);
            }
        }
        out.push('\n');
    }
    Ok(out)
}

fn collect_modules(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Error::environment(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_modules(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "ko")
            && let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str)
        {
            out.push(rel.to_owned());
        }
    }
    Ok(())
}

/// A module's name and dependencies from its `.modinfo` section (the
/// NUL-separated `key=value` strings `modinfo` prints).
pub fn modinfo(ko: &[u8]) -> Option<(String, Vec<String>)> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(ko).ok()?;
    let data = file.section_by_name(".modinfo")?.data().ok()?;
    let mut name = None;
    let mut deps = Vec::new();
    for entry in data.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(n) = entry.strip_prefix("name=") {
            name = Some(n.replace('-', "_"));
        } else if let Some(d) = entry.strip_prefix("depends=") {
            deps.extend(d.split(',').filter(|d| !d.is_empty()).map(str::to_owned));
        }
    }
    Some((name?, deps))
}

fn prune_tree(root: &Path, dir: &Path, keep: &BTreeSet<String>) -> Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Error::environment(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .unwrap_or_default()
            .to_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            prune_tree(root, &path, keep)?;
            // Empty now: nothing under it is kept.
            fs::remove_dir(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else if rel == "modules.dep" || keep.contains(&rel) {
            Ok(())
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::environment(format!("cannot prune {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Reads `wanted` and their dependencies from the modules directory `dir`,
/// in load order.
pub fn read(dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    files_in_order(dir, wanted)?
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let bytes = fs::read(&path)
                .map_err(|e| Error::environment(format!("cannot read {}: {e}", path.display())))?;
            Ok(Module {
                name: name_of(&rel),
                bytes,
            })
        })
        .collect()
}

/// Whether the modules directory `dir` holds `wanted` and every module
/// they need (a cache pruned for another list may not).
pub fn complete(dir: &Path, wanted: &[&str]) -> bool {
    files_in_order(dir, wanted).is_ok_and(|files| files.iter().all(|f| dir.join(f).is_file()))
}

/// [`load_order`] of `wanted` by the `modules.dep` of the modules
/// directory `dir`; an error names the file.
fn files_in_order(dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let dep_path = dir.join("modules.dep");
    let dep = fs::read_to_string(&dep_path)
        .map_err(|e| Error::environment(format!("cannot read {}: {e}", dep_path.display())))?;
    load_order(&dep, wanted).map_err(|e| Error::environment(format!("{}: {e}", dep_path.display())))
}

/// A short tag of `wanted`, part of the cache's directory name for an
/// unpacked kernel package, so a different module list unpacks afresh.
pub fn set_tag(wanted: &[&str]) -> String {
    // FNV-1a over the names, NUL-separated.
    let mut h: u32 = 0x811c_9dc5;
    for b in wanted.iter().flat_map(|w| w.bytes().chain([0])) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// Writes a modules directory like Debian 12's arm64 kernel package's
/// (no `modules.dep`): the guest modules and a few others, each a minimal
/// ELF with the `.modinfo` of the real one.
#[cfg(test)]
pub(crate) fn write_fake_tree(root: &Path) {
    for line in tests::DEP.lines() {
        let (path, deps) = line.split_once(':').expect("a path");
        let deps: Vec<String> = deps.split_whitespace().map(name_of).collect();
        let file = root.join(path);
        fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
        fs::write(&file, tests::fake_ko(&name_of(path), &deps.join(","))).expect("write");
    }
}

/// A modules directory as the cache keeps it: [`write_fake_tree`], pruned
/// to [`GUEST_MODULES`].
#[cfg(test)]
pub(crate) fn write_fake_cache_dir(root: &Path) {
    write_fake_tree(root);
    prune(root, GUEST_MODULES).expect("the fake tree prunes");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    /// A minimal ELF64 relocatable with a `.modinfo` section holding
    /// `name=NAME` and `depends=DEPS` (what modpost writes).
    pub(crate) fn fake_ko(name: &str, deps: &str) -> Vec<u8> {
        let modinfo = format!("license=GPL\0depends={deps}\0name={name}\0vermagic=6.1\0");
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        let modinfo_at = out.len();
        out.extend_from_slice(modinfo.as_bytes());
        let shstr_at = out.len();
        out.extend_from_slice(shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        let section = |name: u32, kind: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h[48..56].copy_from_slice(&1u64.to_le_bytes());
            h
        };
        out.extend(vec![0u8; 64]);
        out.extend(section(1, 1, modinfo_at, modinfo.len()));
        out.extend(section(10, 3, shstr_at, shstrtab.len()));
        out[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        out[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
        out
    }

    #[test]
    fn modinfo_gives_the_name_and_dependencies() {
        let ko = fake_ko("virtio_net", "net_failover,failover");
        assert_eq!(
            modinfo(&ko),
            Some((
                "virtio_net".into(),
                vec!["net_failover".into(), "failover".into()]
            ))
        );
        assert_eq!(
            modinfo(&fake_ko("virtio-mmio", "")),
            Some(("virtio_mmio".into(), vec![]))
        );
        assert_eq!(modinfo(b"not an ELF"), None);
    }

    #[test]
    fn a_generated_dependency_file_matches_depmods() {
        let dir = TestDir::new("modules-dep");
        write_fake_tree(dir.path());
        let generated = dependencies_from_modinfo(dir.path()).expect("generated");
        let sorted = |t: &str| {
            let mut lines: Vec<String> = t
                .lines()
                .map(|l| {
                    let (p, d) = l.split_once(':').expect("a line");
                    let mut d: Vec<&str> = d.split_whitespace().collect();
                    d.sort_unstable();
                    format!("{p}: {}", d.join(" "))
                })
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&generated), sorted(DEP));
    }

    /// The lines of Debian 12's arm64 `modules.dep` for the guest modules
    /// (and one module more, `xfs`, with a dependency of its own).
    pub(super) const DEP: &str = "\
kernel/drivers/virtio/virtio_mmio.ko:
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/char/virtio_console.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/drivers/block/virtio_blk.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/net/bridge/bridge.ko: kernel/net/llc/llc.ko kernel/net/802/stp.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let order = load_order(DEP, GUEST_MODULES).expect("all present");
        let names: Vec<String> = order.iter().map(|p| name_of(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_mmio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
                "virtio_blk",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4",
                "llc",
                "stp",
                "bridge",
            ]
        );
        for (i, path) in order.iter().enumerate() {
            let deps = DEP
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{path}:")))
                .expect("a line");
            for d in deps.split_whitespace() {
                let at = order.iter().position(|p| p == d).expect("deps are loaded");
                assert!(at < i, "{d} after {path}");
            }
        }
    }

    #[test]
    fn names_normalize_dashes_and_suffixes() {
        assert_eq!(name_of("kernel/drivers/net/virtio_net.ko"), "virtio_net");
        assert_eq!(name_of("kernel/x/snd-hda.ko.xz"), "snd_hda");
        assert_eq!(
            load_order(DEP, &["virtio-mmio"]).unwrap(),
            ["kernel/drivers/virtio/virtio_mmio.ko"]
        );
    }

    #[test]
    fn a_missing_module_or_a_broken_file_is_an_error_not_a_hang() {
        let e = load_order(DEP, &["virtio_gpu"]).unwrap_err();
        assert!(e.contains("virtio_gpu is not in modules.dep"), "{e}");
        let dangling = "kernel/a.ko: kernel/b.ko\n";
        assert!(
            load_order(dangling, &["a"])
                .unwrap_err()
                .contains("kernel/b.ko")
        );
        let cycle = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n";
        assert!(load_order(cycle, &["a"]).unwrap_err().contains("cycle"));
    }

    #[test]
    fn prune_keeps_only_what_is_loaded_and_read_returns_it_in_order() {
        let dir = TestDir::new("modules");
        let root = dir.path().join("lib/modules/6.1.0-57-arm64");
        write_fake_tree(&root);
        assert!(!root.join("modules.dep").exists(), "as in Debian's package");
        fs::write(root.join("modules.alias"), "x").expect("write alias");
        assert!(!complete(&root, GUEST_MODULES), "no modules.dep yet");
        prune(&root, GUEST_MODULES).expect("prune");
        assert!(!root.join("kernel/fs/xfs").exists(), "unneeded trees go");
        assert!(!root.join("kernel/lib/libcrc32c.ko").exists());
        assert!(
            root.join("kernel/lib/crc16.ko").is_file(),
            "a dependency stays"
        );
        assert!(!root.join("modules.alias").exists());
        let mods = read(&root, GUEST_MODULES).expect("read");
        assert_eq!(mods.len(), 17);
        assert_eq!(mods[1].name, "failover");
        assert_eq!(mods[1].bytes, fake_ko("failover", ""));
        assert!(root.join("modules.dep").is_file(), "written by prune");
        assert!(complete(&root, GUEST_MODULES));
        // A module the pruned tree lacks is reported with the file.
        let e = read(&root, &["xfs"]).unwrap_err().to_string();
        assert!(e.contains("xfs") || e.contains("libcrc32c"), "{e}");
        assert!(!complete(&root, &["xfs"]));
    }

    /// A cache pruned for a shorter list (before ext4 was a guest module)
    /// is incomplete for today's: the fetch must not use it.
    #[test]
    fn a_tree_pruned_for_another_list_is_incomplete() {
        let dir = TestDir::new("modules-old");
        write_fake_tree(dir.path());
        let old = &GUEST_MODULES[..5];
        prune(dir.path(), old).expect("prune");
        assert!(complete(dir.path(), old));
        assert!(!complete(dir.path(), GUEST_MODULES));
    }

    #[test]
    fn the_set_tag_follows_the_list() {
        assert_eq!(set_tag(GUEST_MODULES), set_tag(GUEST_MODULES));
        assert_ne!(set_tag(GUEST_MODULES), set_tag(&GUEST_MODULES[..4]));
        assert_ne!(set_tag(&["ab", "c"]), set_tag(&["a", "bc"]));
    }
}
