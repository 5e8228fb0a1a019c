//! A small tmpfs for tests that fill or freeze a filesystem (needs root).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// A tmpfs mounted at a directory, unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=64k`) at `dir`; the
    /// reason when it cannot (not root).
    pub fn mount(dir: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let r = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir));
        if r.code != 0 {
            return Err(r.stderr.trim().to_owned());
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
