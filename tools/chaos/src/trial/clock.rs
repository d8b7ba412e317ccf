//! A wall clock of ordermq's own that the trial steps: the
//! `ordermq-clockshift` library preloaded into `ordermq serve`, reading its
//! offset from a file of the trial's.
//!
//! Only ordermq's *wall* clock (`CLOCK_REALTIME`, what `SystemTime::now`
//! reads; `gettimeofday`, `time`) moves: its monotonic clock, which tokio's
//! timers run on, keeps the real time, as it does when NTP or an operator
//! steps a real machine's clock. The broker, the providers and the
//! databases' servers keep the real time: other machines' clocks. The
//! library reads the file again at most every 200 ms
//! ([`TAKES_EFFECT_WITHIN`] allows for it). `libfaketime` would do the same
//! but deadlocks ordermq at start (see the library's documentation).

use std::path::PathBuf;
use std::time::Duration;

use super::Trial;
use crate::ChaosError;

/// The library's file name, beside the `ordermq` binary (`cargo build`
/// puts both in the same target directory).
const LIBRARY: &str = "libordermq_clockshift.so";

/// The environment variable the library reads the offset file's path from.
const OFFSET_FILE_ENV: &str = "CLOCKSHIFT_FILE";

/// How soon a new offset is what ordermq reads.
pub const TAKES_EFFECT_WITHIN: Duration = Duration::from_millis(500);

/// The offset file and the library that reads it.
#[derive(Debug)]
pub(crate) struct FakeClock {
    library: PathBuf,
    file: PathBuf,
}

impl FakeClock {
    /// What `ordermq serve` needs in its environment to run on this clock.
    pub(crate) fn env(&self) -> [(String, String); 2] {
        [
            ("LD_PRELOAD".into(), self.library.display().to_string()),
            (OFFSET_FILE_ENV.into(), self.file.display().to_string()),
        ]
    }
}

impl Trial {
    /// From the next start on, `ordermq serve` runs on a wall clock that
    /// [`Trial::set_clock`] steps; it starts on the real time.
    ///
    /// # Errors
    ///
    /// No `libordermq_clockshift.so` beside the binary (build the
    /// workspace, or `cargo build -p ordermq-clockshift`), or the offset
    /// file cannot be written.
    pub fn fake_clock(&mut self) -> Result<(), ChaosError> {
        let library = self.bin.with_file_name(LIBRARY);
        if !library.exists() {
            return Err(ChaosError::Setup(format!(
                "stepping ordermq's clock needs {}: `cargo build -p ordermq-clockshift`",
                library.display()
            )));
        }
        self.clock = Some(FakeClock {
            library,
            file: self.dir.path().join("clock-offset"),
        });
        self.set_clock(0)
    }

    /// Puts ordermq's wall clock `offset_s` seconds ahead of the real time
    /// (behind if negative); it reads the new time within
    /// [`TAKES_EFFECT_WITHIN`].
    ///
    /// # Errors
    ///
    /// No fake clock ([`Trial::fake_clock`]), or its file cannot be written.
    pub fn set_clock(&self, offset_s: i64) -> Result<(), ChaosError> {
        let clock = self
            .clock
            .as_ref()
            .ok_or_else(|| ChaosError::Setup("the trial has no fake clock".into()))?;
        // Written whole, then renamed: the library never reads half a number.
        let partial = clock.file.with_extension("partial");
        std::fs::write(&partial, format!("{offset_s:+}\n"))
            .and_then(|()| std::fs::rename(&partial, &clock.file))
            .map_err(|e| ChaosError::Setup(format!("cannot write {}: {e}", clock.file.display())))
    }

    /// The environment of `ordermq serve`: the trial's, and its clock's.
    pub(crate) fn ordermq_env(&self) -> Vec<(String, String)> {
        let mut env = self.env();
        if let Some(clock) = &self.clock {
            env.extend(clock.env());
        }
        env
    }
}
