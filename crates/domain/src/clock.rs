//! Time: the wall clock every stored time is read from, and the clock that
//! says when a deadline has passed.
//!
//! Every time ordermq stores is wall-clock milliseconds since the Unix
//! epoch ([`now_millis`]). A wall clock can be stepped: NTP finding it
//! wrong, an operator, a virtual machine resumed. Stepped back, a deadline
//! read from it passes late; stepped ahead, early — and an early deadline
//! takes something away: an unpaid order closed while its buyer may still
//! pay, its stock given to someone else. So the decisions that take
//! something away when time is up (a close; the close sweep) read
//! [`deadline_millis`] instead: the wall clock as far as this process's
//! monotonic clock has seen time pass. It follows the wall clock back at
//! once (a deadline comes late, never early) and a step ahead only once
//! the step has held for [`FORWARD_STEP_TRUSTED_AFTER`] — long enough to
//! ride out an operator's slip or a bad time source that is corrected, and
//! short enough that a clock found behind is believed the same hour.
//!
//! What it cannot know: a process *started* with its clock ahead counts
//! from there (docs/reliability.md, "Clock steps").

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Wall-clock milliseconds since the Unix epoch; the one time unit stored anywhere.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long the wall clock must stay stepped ahead of the time counted
/// before [`deadline_millis`] believes it.
pub const FORWARD_STEP_TRUSTED_AFTER: Duration = Duration::from_secs(10 * 60);

/// How far the wall clock may run ahead of the time counted and still be
/// followed at once: below a close's tolerance (1 s), above what NTP slews.
const FOLLOWED_AHEAD_MS: i64 = 1_000;

/// The time counted since the last reading the wall clock agreed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineClock {
    /// The wall clock at the last reading followed.
    wall: i64,
    /// The monotonic clock then (ms since any fixed origin).
    monotonic: u64,
    /// The monotonic time at which the wall clock was first seen ahead of
    /// the time counted, while it stays ahead.
    ahead_since: Option<u64>,
}

impl DeadlineClock {
    /// A clock that starts where the wall clock is.
    pub fn new(wall: i64, monotonic: u64) -> Self {
        Self {
            wall,
            monotonic,
            ahead_since: None,
        }
    }

    /// The deadline time for a reading of the wall clock (`wall`, ms since
    /// the epoch) and the monotonic clock (`monotonic`, ms since the same
    /// origin as before; never smaller than the last).
    pub fn read(&mut self, wall: i64, monotonic: u64) -> i64 {
        let counted = self.wall + monotonic.saturating_sub(self.monotonic) as i64;
        let trusted_after = FORWARD_STEP_TRUSTED_AFTER.as_millis() as u64;
        let follow = wall <= counted + FOLLOWED_AHEAD_MS || {
            let since = *self.ahead_since.get_or_insert(monotonic);
            monotonic.saturating_sub(since) >= trusted_after
        };
        if follow {
            *self = Self::new(wall, monotonic);
            wall
        } else {
            counted
        }
    }

    /// Whether the last reading found the wall clock stepped ahead, not yet
    /// believed.
    pub fn is_held_back(&self) -> bool {
        self.ahead_since.is_some()
    }
}

/// The process's deadline clock, started at its first reading.
fn process_clock() -> &'static (Instant, Mutex<DeadlineClock>) {
    static CLOCK: OnceLock<(Instant, Mutex<DeadlineClock>)> = OnceLock::new();
    CLOCK.get_or_init(|| {
        (
            Instant::now(),
            Mutex::new(DeadlineClock::new(now_millis(), 0)),
        )
    })
}

/// Wall-clock milliseconds since the Unix epoch for deciding whether a
/// deadline has passed: never ahead of the time this process has counted
/// since it last agreed with the wall clock (see the module's documentation).
pub fn deadline_millis() -> i64 {
    let (origin, clock) = process_clock();
    let monotonic = origin.elapsed().as_millis() as u64;
    let wall = now_millis();
    clock
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .read(wall, monotonic)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const MIN: u64 = 60_000;

    #[test]
    fn in_step_it_is_the_wall_clock() {
        let mut clock = DeadlineClock::new(T0, 0);
        assert_eq!(clock.read(T0 + 5_000, 5_000), T0 + 5_000);
        // A little ahead (slewing, rounding): followed.
        assert_eq!(clock.read(T0 + 10_900, 10_000), T0 + 10_900);
        assert!(!clock.is_held_back());
    }

    #[test]
    fn a_step_back_is_followed_at_once() {
        let mut clock = DeadlineClock::new(T0, 0);
        assert_eq!(clock.read(T0 - 120_000, 1_000), T0 - 120_000);
        assert_eq!(clock.read(T0 - 119_000, 2_000), T0 - 119_000);
    }

    #[test]
    fn a_step_ahead_is_held_back_until_it_has_held_ten_minutes() {
        let mut clock = DeadlineClock::new(T0, 0);
        // Two minutes ahead at 1 s: the counted time, not the wall.
        assert_eq!(clock.read(T0 + 121_000, 1_000), T0 + 1_000);
        assert!(clock.is_held_back());
        assert_eq!(clock.read(T0 + 125_000, 5_000), T0 + 5_000);
        // Just short of ten minutes of it: still counted.
        let almost = 1_000 + 10 * MIN - 1;
        assert_eq!(
            clock.read(T0 + 120_000 + almost as i64, almost),
            T0 + almost as i64
        );
        // Ten minutes: believed.
        let held = 1_000 + 10 * MIN;
        assert_eq!(
            clock.read(T0 + 120_000 + held as i64, held),
            T0 + 120_000 + held as i64
        );
        assert!(!clock.is_held_back());
    }

    #[test]
    fn a_step_ahead_taken_back_is_forgotten() {
        let mut clock = DeadlineClock::new(T0, 0);
        assert_eq!(clock.read(T0 + 121_000, 1_000), T0 + 1_000);
        // Back to the real time after 5 minutes: in step again…
        let back = 5 * MIN;
        assert_eq!(clock.read(T0 + back as i64, back), T0 + back as i64);
        // …and a new step ahead starts its ten minutes from zero.
        let again = back + 1_000;
        assert_eq!(
            clock.read(T0 + 120_000 + again as i64, again),
            T0 + again as i64
        );
        let later = again + 6 * MIN;
        assert_eq!(
            clock.read(T0 + 120_000 + later as i64, later),
            T0 + later as i64
        );
    }

    #[test]
    fn behind_then_forward_to_the_real_time_counts_on_from_behind() {
        // The clock found 2 minutes behind and stepped back, then NTP puts
        // it right: what was stamped behind falls due at its real time.
        let mut clock = DeadlineClock::new(T0, 0);
        assert_eq!(clock.read(T0 - 119_000, 1_000), T0 - 119_000);
        assert_eq!(clock.read(T0 + 10_000, 10_000), T0 - 110_000);
    }

    #[test]
    fn the_process_clock_reads_the_wall_clock_when_nothing_stepped() {
        let before = now_millis();
        let read = deadline_millis();
        assert!(
            read >= before - 1_000 && read <= now_millis(),
            "{before} {read}"
        );
    }
}
