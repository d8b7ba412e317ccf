//! The change feed's invariant after a trial: `ordermq feed verify`, run as
//! the operator would run it, finds the order database and the sink's
//! analytics database equal — 0 differences, 0 `order_seq` gaps, 0
//! reorderings, nothing parked.
//!
//! Why the command and not the library call: the suite tests what ships,
//! and the command's exit code and summary line are what an operator's
//! monitoring would read. The sink catches up asynchronously, so a trial
//! runs the command until it passes or a deadline expires; the last run is
//! the verdict.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::ChaosError;

/// One run of `ordermq feed verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedCheck {
    /// Orders compared.
    pub orders: u64,
    pub differences: u64,
    pub gaps: u64,
    pub reorderings: u64,
    pub parked: u64,
    /// The command's exit code (`None`: killed by a signal).
    pub exit: Option<i32>,
    /// What it printed (stdout, then stderr).
    pub output: String,
}

impl FeedCheck {
    /// Exit 0 and every count zero.
    pub fn clean(&self) -> bool {
        self.exit == Some(0)
            && self.differences == 0
            && self.gaps == 0
            && self.reorderings == 0
            && self.parked == 0
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "feed verify: {} orders, {} differences, {} gaps, {} reorderings, {} parked (exit {})",
            self.orders,
            self.differences,
            self.gaps,
            self.reorderings,
            self.parked,
            self.exit
                .map_or_else(|| "signal".to_owned(), |c| c.to_string())
        )
    }

    /// Reads the counts from verify's last line:
    /// `N orders compared: D difference(s), G order_seq gap(s), R reordering(s), P parked event(s)`.
    pub fn parse(exit: Option<i32>, output: String) -> Self {
        let mut check = Self {
            exit,
            ..Self::default()
        };
        if let Some(line) = output
            .lines()
            .rev()
            .find(|l| l.contains("orders compared:"))
        {
            let number = |before: &str| -> u64 {
                line.split(", ")
                    .flat_map(|part| part.split(": "))
                    .find(|part| part.ends_with(before))
                    .and_then(|part| part.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX)
            };
            check.orders = number("orders compared");
            check.differences = number("difference(s)");
            check.gaps = number("gap(s)");
            check.reorderings = number("reordering(s)");
            check.parked = number("parked event(s)");
        } else {
            // No summary: the command could not run; count it as broken.
            check.differences = u64::MAX;
        }
        check.output = output;
        check
    }
}

/// Runs `bin feed verify` once with `env` (and no other `ORDERMQ_*`).
///
/// # Errors
///
/// The binary cannot be started.
pub async fn verify_once(bin: &Path, env: &[(String, String)]) -> Result<FeedCheck, ChaosError> {
    let mut command = tokio::process::Command::new(bin);
    command.args(["feed", "verify"]).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERMQ_") {
            command.env_remove(&key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let out = command
        .output()
        .await
        .map_err(|e| ChaosError::Setup(format!("cannot run {} feed verify: {e}", bin.display())))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(FeedCheck::parse(out.status.code(), text))
}

/// Runs `feed verify` until it is clean or `timeout` passed; the last run.
///
/// # Errors
///
/// The binary cannot be started.
pub async fn verify_until_clean(
    bin: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<FeedCheck, ChaosError> {
    let deadline = Instant::now() + timeout;
    loop {
        let check = verify_once(bin, env).await?;
        if check.clean() || Instant::now() >= deadline {
            return Ok(check);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_read_and_anything_else_is_broken() {
        let ok = FeedCheck::parse(
            Some(0),
            "12 orders compared: 0 difference(s), 0 order_seq gap(s), 0 reordering(s), 0 parked event(s)\n".into(),
        );
        assert!(ok.clean(), "{ok:?}");
        assert_eq!(ok.orders, 12);
        let bad = FeedCheck::parse(
            Some(1),
            "gap: …\n12 orders compared: 2 difference(s), 1 order_seq gap(s), 3 reordering(s), 4 parked event(s)\n".into(),
        );
        assert_eq!(
            (bad.differences, bad.gaps, bad.reorderings, bad.parked),
            (2, 1, 3, 4)
        );
        assert!(!bad.clean());
        assert!(!FeedCheck::parse(Some(2), "ordermq feed verify: cannot open".into()).clean());
    }
}
