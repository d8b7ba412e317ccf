//! Delivering a message at a given time (an unpaid order's close) on any
//! RocketMQ.
//!
//! RocketMQ 5 has timer messages (`deliver_time_ms`), exact to the broker's
//! timer precision; RocketMQ 4.x brokers do not, and a rocketmq-rust broker
//! with its timer enabled holds a wheel of seven days of slots in memory
//! (~37 MiB) whether or not a timer message ever comes. Every RocketMQ has the
//! fixed delay levels (`messageDelayLevel`, `1s 5s 10s 30s 1m … 2h` by default).
//! [`DelayedDelivery::Levels`] reaches any due time with those alone: the
//! message goes out with the longest level that does not overshoot it, and
//! the consumer side sends it on again for whatever remains ("a hop") until it
//! is due. A handler never sees a message before its due time; one due sooner
//! than the shortest level arrives at most one shortest level late.

use std::fmt;

/// How messages with a due time are delayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelayedDelivery {
    /// RocketMQ 5 timer messages; the broker must have its timer wheel enabled.
    Timer,
    /// Delay levels and hops; `DelayLevels` must match the broker's `messageDelayLevel`.
    Levels(DelayLevels),
}

impl Default for DelayedDelivery {
    fn default() -> Self {
        Self::Levels(DelayLevels::default())
    }
}

/// A broker's `messageDelayLevel`: level `n` (from 1) waits the `n`-th delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels {
    delays_ms: Vec<u64>,
}

/// The `messageDelayLevel` every RocketMQ broker has unless configured otherwise.
pub const ROCKETMQ_DEFAULT_LEVELS: &str =
    "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

impl Default for DelayLevels {
    fn default() -> Self {
        Self::parse(ROCKETMQ_DEFAULT_LEVELS).expect("RocketMQ's default levels parse")
    }
}

/// A `messageDelayLevel` string that is not a list of delays such as `1s 5m 2h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLevels(String);

impl fmt::Display for InvalidLevels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: expected delays like \"1s 5s 10s 30s 1m 2h\" (units s, m, h, d)",
            self.0
        )
    }
}

impl std::error::Error for InvalidLevels {}

impl DelayLevels {
    /// Parses RocketMQ's format: delays separated by spaces, each a positive
    /// whole number followed by `s`, `m`, `h` or `d`.
    pub fn parse(levels: &str) -> Result<Self, InvalidLevels> {
        let invalid = || InvalidLevels(levels.to_owned());
        let delays_ms = levels
            .split_whitespace()
            .map(|delay| {
                let unit = delay.chars().last().ok_or_else(invalid)?;
                let number = &delay[..delay.len() - unit.len_utf8()];
                let unit_ms = match unit {
                    's' => 1_000,
                    'm' => 60_000,
                    'h' => 3_600_000,
                    'd' => 86_400_000,
                    _ => return Err(invalid()),
                };
                if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                match number.parse::<u32>() {
                    Ok(n) if n > 0 => Ok(u64::from(n) * unit_ms),
                    _ => Err(invalid()),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays_ms.is_empty() {
            return Err(invalid());
        }
        Ok(Self { delays_ms })
    }

    /// The level to send a message due in `remaining_ms` with: the longest
    /// delay that does not overshoot it, or else the shortest one.
    pub fn level_for(&self, remaining_ms: i64) -> i32 {
        let remaining = u64::try_from(remaining_ms).unwrap_or(0);
        let fitting = self
            .delays_ms
            .iter()
            .enumerate()
            .filter(|(_, delay)| **delay <= remaining)
            .max_by_key(|(_, delay)| **delay);
        let (index, _) = fitting.unwrap_or_else(|| {
            self.delays_ms
                .iter()
                .enumerate()
                .min_by_key(|(_, delay)| **delay)
                .expect("at least one level")
        });
        index as i32 + 1
    }

    /// The delay of `level` (from 1), if the broker has it.
    pub fn delay_ms(&self, level: i32) -> Option<u64> {
        let index = usize::try_from(level.checked_sub(1)?).ok()?;
        self.delays_ms.get(index).copied()
    }

    /// How long RocketMQ waits before it redelivers a message that failed
    /// `tries` times already: level 3 + `tries` (10 s, 30 s, 1 min … with
    /// the default levels), the last level for any try beyond it.
    pub fn retry_delay_ms(&self, tries: i32) -> u64 {
        let last = i32::try_from(self.delays_ms.len()).unwrap_or(i32::MAX);
        let level = tries.max(0).saturating_add(3).min(last);
        self.delay_ms(level)
            .unwrap_or(self.delays_ms[self.delays_ms.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rocketmq_format_and_refuses_anything_else() {
        let levels = DelayLevels::parse("1s 2m 3h 1d").unwrap();
        assert_eq!(levels.delay_ms(1), Some(1_000));
        assert_eq!(levels.delay_ms(2), Some(120_000));
        assert_eq!(levels.delay_ms(3), Some(10_800_000));
        assert_eq!(levels.delay_ms(4), Some(86_400_000));
        assert_eq!(levels.delay_ms(5), None);
        assert_eq!(levels.delay_ms(0), None);
        for bad in ["", "  ", "1x", "s", "0s", "-1s", "1.5s", "1s 2"] {
            assert!(DelayLevels::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(DelayLevels::default().delay_ms(18), Some(7_200_000));
    }

    #[test]
    fn picks_the_longest_level_that_does_not_overshoot() {
        let levels = DelayLevels::default();
        // 30 min is a level of its own: one send, no hop.
        assert_eq!(levels.level_for(30 * 60_000), 16);
        // 15 min: 10 min now, then 5 min on the hop.
        assert_eq!(levels.level_for(15 * 60_000), 14);
        assert_eq!(levels.level_for(5 * 60_000), 9);
        // Beyond the longest level: the longest, then hops.
        assert_eq!(levels.level_for(5 * 3_600_000), 18);
        // Sooner than the shortest level: the shortest (at most 1 s late).
        assert_eq!(levels.level_for(400), 1);
        assert_eq!(levels.level_for(0), 1);
        assert_eq!(levels.level_for(-5), 1);
    }

    #[test]
    fn a_retry_waits_level_three_plus_its_tries_and_the_last_level_beyond() {
        let levels = DelayLevels::default();
        assert_eq!(levels.retry_delay_ms(0), 10_000);
        assert_eq!(levels.retry_delay_ms(1), 30_000);
        assert_eq!(levels.retry_delay_ms(2), 60_000);
        assert_eq!(levels.retry_delay_ms(15), 7_200_000);
        assert_eq!(levels.retry_delay_ms(40), 7_200_000);
        assert_eq!(levels.retry_delay_ms(-1), 10_000);
        // Fewer than three levels: the last one.
        let short = DelayLevels::parse("1s 2s").unwrap();
        assert_eq!(short.retry_delay_ms(0), 2_000);
        assert_eq!(short.retry_delay_ms(9), 2_000);
    }

    #[test]
    fn unsorted_and_repeated_levels_still_pick_by_delay() {
        let levels = DelayLevels::parse("1m 1s 1s 10s").unwrap();
        assert_eq!(levels.level_for(20_000), 4);
        assert_eq!(levels.level_for(90_000), 1);
        assert_eq!(levels.delay_ms(levels.level_for(500)), Some(1_000));
    }

    #[test]
    fn hops_reach_any_due_time_without_overshooting_more_than_the_shortest_level() {
        let levels = DelayLevels::default();
        for due in [
            1_500_i64,
            7_000,
            61_000,
            17 * 60_000 + 3_000,
            5 * 3_600_000 + 1,
        ] {
            let (mut elapsed, mut hops) = (0_i64, 0);
            while elapsed < due {
                elapsed += levels.delay_ms(levels.level_for(due - elapsed)).unwrap() as i64;
                hops += 1;
            }
            assert!(elapsed - due < 1_000, "{due} ms overshot to {elapsed} ms");
            assert!(hops <= 8, "{due} ms took {hops} hops");
        }
    }
}
