//! A filesystem that loses what was never synced when its power is cut.
//!
//! The fault suite's power loss. A process killed with `kill -9` loses
//! nothing it wrote: its writes sit in the kernel's page cache, which
//! survives it. A machine that loses power loses that page cache: every
//! write not yet made durable by `fsync` (`fdatasync`, `msync`) is gone.
//! Nothing on one machine cuts its power, so [`PowerCut`] mounts a FUSE
//! filesystem over a backing directory that passes every operation through
//! and remembers, per file, what a power cut would take back:
//!
//! - the file's length at its last `fsync` (its length when first seen, or
//!   0 for a file created on it);
//! - the content, before the first write since that `fsync`, of every page
//!   written since (an undo log, a page at a time, never the whole file:
//!   RocketMQ's commit log is a 1 GiB memory-mapped file).
//!
//! [`PowerCut::cut`] turns the power off — every later operation fails with
//! `EIO`, so pages the kernel writes back after the cut (a killed process's
//! dirty memory-mapped pages) never land — and takes back every write since
//! each file's last `fsync`: its undo pages written back, its length set to
//! the synced one. What is left in the backing directory is what a disk
//! would hold after the cut; mount it again to start on it.
//!
//! Memory-mapped files work: the kernel hands their dirty pages to the
//! filesystem as writes, and `msync` arrives as `fsync`, as on any FUSE
//! filesystem. Directory operations (create, unlink, rename, mkdir) are
//! taken as durable at once, as a journaling filesystem commits them with
//! the next `fsync` of any file on it; only file contents follow `fsync`.
//! This is the model of LazyFS, narrowed to what ordermq's durability
//! rests on.
//!
//! The mount needs `/dev/fuse` and root (it mounts without `fusermount`).
//! Users run it as its own process, the `ordermq-powercut` binary, through
//! [`Mounted`]: a process must never use a mount it serves itself (see the
//! binary's doc).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

mod fs;

use fs::{PowerCutFs, State, lock};

/// A power-cut filesystem mounted by this process. Dropping it unmounts it.
/// Never touch the mount from this same process (use [`Mounted`]).
#[derive(Debug)]
pub struct PowerCut {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// What a cut took back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files with writes since their last `fsync`.
    pub files: usize,
    /// Pages whose content went back to what it was at the last `fsync`.
    pub pages_restored: usize,
    /// Bytes cut off the ends of files (written past their synced length).
    pub bytes_truncated: u64,
}

impl PowerCut {
    /// Mounts a power-cut filesystem at `mountpoint` (an empty directory)
    /// over `backing`, whose contents count as durable.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Self> {
        let backing = backing.canonicalize()?;
        let state = Arc::new(Mutex::new(State::new(backing)));
        let fs = PowerCutFs::new(state.clone());
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".to_owned()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Self {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every later operation fails with `EIO`, and every
    /// write since each file's last `fsync` is taken back in the backing
    /// directory. Stop (kill) the processes using the filesystem first, or
    /// at once after; then [`PowerCut::unmount`].
    pub fn cut(&self) -> io::Result<CutReport> {
        lock(&self.state).cut()
    }

    /// Unmounts; if a process still holds a file on it (`EBUSY`), detaches
    /// it lazily instead: gone from the namespace at once, and its last
    /// users get errors once this process exits.
    pub fn unmount(mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(io::Error::from)
            }
            other => other,
        }
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// The power-cut filesystem in a process of its own (`ordermq-powercut`),
/// as every user outside that process needs it (see the binary's doc for
/// why it may not run in the process that uses the mount).
#[derive(Debug)]
pub struct Mounted {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Starts `program` (the `ordermq-powercut` binary) mounting `backing`
    /// at `mountpoint`, and waits until it is mounted.
    pub fn start(program: &Path, backing: &Path, mountpoint: &Path) -> io::Result<Self> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .arg(backing)
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "mounted" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{} did not mount {}",
                program.display(),
                mountpoint.display()
            )));
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power (see [`PowerCut::cut`]) and unmounts.
    pub fn cut(mut self) -> io::Result<CutReport> {
        use std::io::{BufRead, Write};
        let mut stdin = self.stdin.take().expect("stdin until cut or unmount");
        writeln!(stdin, "cut")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        drop(stdin);
        self.child.wait()?;
        parse_report(&line)
            .ok_or_else(|| io::Error::other(format!("the power cut failed: {}", line.trim())))
    }

    /// Unmounts, nothing taken back.
    pub fn unmount(mut self) -> io::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "ordermq-powercut exited {status}"
            )))
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `cut files=N pages=N truncated=N`.
fn parse_report(line: &str) -> Option<CutReport> {
    let mut report = CutReport::default();
    let mut fields = line.split_whitespace();
    (fields.next()? == "cut").then_some(())?;
    for field in fields {
        let (key, value) = field.split_once('=')?;
        match key {
            "files" => report.files = value.parse().ok()?,
            "pages" => report.pages_restored = value.parse().ok()?,
            "truncated" => report.bytes_truncated = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_report_is_read_back_and_an_error_is_not_one() {
        assert_eq!(
            parse_report("cut files=3 pages=7 truncated=4096\n"),
            Some(CutReport {
                files: 3,
                pages_restored: 7,
                bytes_truncated: 4096
            })
        );
        assert_eq!(parse_report("error disk gone"), None);
        assert_eq!(parse_report("cut files=x"), None);
    }
}
