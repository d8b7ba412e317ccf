//! A trial on a disk whose power can be cut: ordermq's data directory (its
//! SQLite databases and the embedded broker's store) on the power-cut
//! filesystem (`ordermq-powercut`), over the trial's `disk` directory.
//!
//! A cut `kill -9`s every process whose files are on that disk (ordermq,
//! and the broker or feed sink when they run), takes back every write
//! since each file's last `fsync`, and mounts what is left again, as a
//! machine that lost its power comes back on what its disk held. The fake
//! providers' files stay off that disk: they are other machines.

use std::path::PathBuf;

use ordermq_powercut::{CutReport, Mounted};

use super::Trial;
use crate::ChaosError;

/// The power-cut disk of a trial: where its files really are, where ordermq
/// sees them, and the filesystem process between the two.
#[derive(Debug)]
pub(crate) struct PowerDisk {
    program: PathBuf,
    backing: PathBuf,
    pub(crate) mountpoint: PathBuf,
    mounted: Option<Mounted>,
}

impl PowerDisk {
    fn mount(&mut self) -> Result<(), ChaosError> {
        let mounted =
            Mounted::start(&self.program, &self.backing, &self.mountpoint).map_err(|e| {
                ChaosError::Setup(format!(
                    "cannot mount the power-cut disk at {} ({}; root and /dev/fuse needed): {e}",
                    self.mountpoint.display(),
                    self.program.display()
                ))
            })?;
        self.mounted = Some(mounted);
        Ok(())
    }
}

impl Trial {
    /// Puts ordermq's data directory on a power-cut disk: `disk/` holds the
    /// files, `data/` shows them. Call before anything is started or seeded.
    pub fn on_power_cut_disk(&mut self) -> Result<(), ChaosError> {
        let root = self.dir.path();
        let (backing, mountpoint) = (root.join("disk"), root.join("data"));
        for dir in [&backing, &mountpoint] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChaosError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        }
        let program = self
            .bin
            .with_file_name(format!("ordermq-powercut{}", std::env::consts::EXE_SUFFIX));
        let mut disk = PowerDisk {
            program,
            backing,
            mountpoint,
            mounted: None,
        };
        disk.mount()?;
        self.power = Some(disk);
        Ok(())
    }

    /// Cuts the power: `kill -9` of every process with files on the disk,
    /// every write since its file's last `fsync` taken back, the disk
    /// mounted again. Start ordermq again after.
    pub fn cut_power(&mut self) -> Result<CutReport, ChaosError> {
        self.kill_ordermq();
        self.kill_broker();
        self.kill_feed_sink();
        let disk = self
            .power
            .as_mut()
            .ok_or_else(|| ChaosError::Setup("this trial has no power-cut disk".into()))?;
        let mounted = disk
            .mounted
            .take()
            .ok_or_else(|| ChaosError::Setup("the power-cut disk is not mounted".into()))?;
        let report = mounted
            .cut()
            .map_err(|e| ChaosError::Process(format!("cutting the power: {e}")))?;
        disk.mount()?;
        Ok(report)
    }

    /// Unmounts the power-cut disk, if the trial has one (its files stay in
    /// `disk/`).
    pub(crate) fn unmount_power_disk(&mut self) {
        if let Some(mounted) = self.power.as_mut().and_then(|disk| disk.mounted.take())
            && let Err(e) = mounted.unmount()
        {
            eprintln!("chaos: unmounting the power-cut disk: {e}");
        }
    }
}
