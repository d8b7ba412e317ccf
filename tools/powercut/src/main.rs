//! `ordermq-powercut BACKING MOUNTPOINT`: mounts the power-cut filesystem
//! ([`ordermq_powercut::PowerCut`]) in a process of its own and takes
//! commands on stdin, one a line:
//!
//! - `cut`: cuts the power (every write since a file's last `fsync` taken
//!   back in BACKING), prints `cut files=N pages=N truncated=N`, unmounts
//!   and exits;
//! - end of input: unmounts (nothing taken back) and exits.
//!
//! It prints `mounted` once the filesystem is up. A process of its own
//! because a FUSE server must never touch its own mount: a page fault on a
//! file it serves, from one of its own threads, waits for a thread of the
//! same process that cannot run (the fault holds the process's memory
//! map), and both hang. [`ordermq_powercut::Mounted`] runs it.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ordermq_powercut::PowerCut;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: ordermq-powercut BACKING MOUNTPOINT (then `cut` on stdin)");
        return ExitCode::from(2);
    };
    let fs = match PowerCut::mount(backing, mountpoint) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!(
                "ordermq-powercut: cannot mount on {}: {e} (root and /dev/fuse needed)",
                mountpoint.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    if writeln!(out, "mounted").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "cut" => {
                let code = match fs.cut() {
                    Ok(r) => {
                        let _ = writeln!(
                            out,
                            "cut files={} pages={} truncated={}",
                            r.files, r.pages_restored, r.bytes_truncated
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error {e}");
                        ExitCode::FAILURE
                    }
                };
                let _ = out.flush();
                if let Err(e) = fs.unmount() {
                    eprintln!("ordermq-powercut: unmounting: {e}");
                }
                return code;
            }
            "" => {}
            other => eprintln!("ordermq-powercut: unknown command {other:?} (cut)"),
        }
    }
    match fs.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq-powercut: unmounting: {e}");
            ExitCode::FAILURE
        }
    }
}
