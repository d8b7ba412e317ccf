//! A trial on a small disk that fills up: ordermq's data directory (its
//! SQLite databases and the embedded broker's store) on a `tmpfs` of its
//! own, mounted at the trial's `data/`.
//!
//! Filling it is a file written until the filesystem answers `ENOSPC`, so
//! ordermq meets a full disk as it would a real one: every write that needs
//! space it does not already hold fails (SQLite's journal and WAL growing,
//! a new file, the broker's next commit-log file), while what it had
//! allocated before (the broker's commit log is `fallocate`d up front)
//! still takes writes. Deleting the file gives the space back. A `tmpfs`
//! keeps nothing across a reboot, which this scenario never does. Mounting
//! one needs root, as the power-cut disk does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Trial;
use crate::ChaosError;

/// The name of the file that fills the disk.
const FILLER: &str = "filler";

/// The small disk of a trial: where it is mounted, while it is.
#[derive(Debug)]
pub(crate) struct SmallDisk {
    pub(crate) mountpoint: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    fn unmount(&mut self) {
        if !std::mem::take(&mut self.mounted) {
            return;
        }
        // Lazy: a process killed a moment ago may still be closing files.
        match Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "chaos: unmounting the small disk at {}: {}",
                self.mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("chaos: cannot run umount: {e}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Writes `path` until the filesystem is full: megabytes while they fit,
/// then pages, so nothing is left. Returns the bytes written.
fn fill(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let mut written = 0;
    for chunk in [1 << 20, 4096] {
        let block = vec![0x5a_u8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}

impl Trial {
    /// Puts ordermq's data directory on a `tmpfs` of `bytes`: `data/` under
    /// the trial's directory. Call before anything is started or seeded.
    pub fn on_small_disk(&mut self, bytes: u64) -> Result<(), ChaosError> {
        let mountpoint = self.dir.path().join("data");
        std::fs::create_dir_all(&mountpoint).map_err(|e| {
            ChaosError::Setup(format!("cannot create {}: {e}", mountpoint.display()))
        })?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("tmpfs")
            .arg(&mountpoint)
            .output()
            .map_err(|e| ChaosError::Setup(format!("cannot run mount: {e}")))?;
        if !out.status.success() {
            return Err(ChaosError::Setup(format!(
                "cannot mount a {bytes}-byte tmpfs at {} (root needed): {}",
                mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.small = Some(SmallDisk {
            mountpoint,
            mounted: true,
        });
        Ok(())
    }

    fn small_disk(&self) -> Result<&SmallDisk, ChaosError> {
        self.small
            .as_ref()
            .ok_or_else(|| ChaosError::Setup("this trial has no small disk".into()))
    }

    /// Fills the small disk to its last byte; returns how many it took.
    pub fn fill_disk(&self) -> Result<u64, ChaosError> {
        let path = self.small_disk()?.mountpoint.join(FILLER);
        fill(&path).map_err(|e| ChaosError::Process(format!("filling the disk: {e}")))
    }

    /// Gives the space back: the filler deleted.
    pub fn free_disk(&self) -> Result<(), ChaosError> {
        let path = self.small_disk()?.mountpoint.join(FILLER);
        std::fs::remove_file(&path)
            .map_err(|e| ChaosError::Process(format!("freeing the disk: {e}")))
    }

    /// Unmounts the small disk, if the trial has one (its files go with it).
    pub(crate) fn unmount_small_disk(&mut self) {
        if let Some(disk) = self.small.as_mut() {
            disk.unmount();
        }
    }
}
