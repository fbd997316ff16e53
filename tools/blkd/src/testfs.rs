//! Temporary directories and files for the unit tests (no `tempfile`
//! dependency): under the system's temporary directory, one per test,
//! removed on drop.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name has `tag`, this process's id and a
    /// counter.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("stratum-blkd-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file `name` holding `bytes`, opened read-write.
    pub fn file(&self, name: &str, bytes: &[u8]) -> File {
        let path = self.0.join(name);
        fs::write(&path, bytes).expect("write a temporary file");
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open a temporary file")
    }

    /// The bytes of file `name`.
    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.0.join(name)).expect("read a temporary file")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
