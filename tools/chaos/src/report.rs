//! The suite's figures: one row per scenario, as a table for people and as
//! JSON for `docs/reliability.md` and CI.

use std::fmt::Write as _;

use serde::Serialize;

use super::checker::Verdict;

/// One scenario's totals over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    pub trials: usize,
    /// Faults injected (kills, outages, failed deliveries, duplicates, bad requests…).
    pub faults: usize,
    /// What `faults` counts, in words.
    pub fault_kind: &'static str,
    /// Orders in the databases at the end, over all trials.
    pub orders: usize,
    pub paid: usize,
    pub acknowledged: usize,
    pub answers_lost: usize,
    pub lost: usize,
    pub doubled: usize,
    pub oversold: usize,
    pub phantom: usize,
    pub undrained: usize,
    pub refunds_flagged: usize,
    pub seconds: f64,
    pub passed: bool,
    pub violations: Vec<String>,
    /// Trial directories kept for inspection (failed trials, or `--keep`).
    pub kept: Vec<String>,
    /// What the scenario measured besides the counts, per trial.
    pub figures: Vec<String>,
}

impl ScenarioResult {
    pub fn new(name: &'static str, fault_kind: &'static str) -> Self {
        Self {
            name,
            trials: 0,
            faults: 0,
            fault_kind,
            orders: 0,
            paid: 0,
            acknowledged: 0,
            answers_lost: 0,
            lost: 0,
            doubled: 0,
            oversold: 0,
            phantom: 0,
            undrained: 0,
            refunds_flagged: 0,
            seconds: 0.0,
            passed: true,
            violations: Vec::new(),
            kept: Vec::new(),
            figures: Vec::new(),
        }
    }

    /// Adds one trial's verdict and faults.
    pub fn add(&mut self, verdict: Verdict, faults: usize) {
        self.trials += 1;
        self.faults += faults;
        self.orders += verdict.orders;
        self.paid += verdict.paid;
        self.acknowledged += verdict.acknowledged;
        self.answers_lost += verdict.answers_lost;
        self.lost += verdict.lost;
        self.doubled += verdict.doubled;
        self.oversold += verdict.oversold;
        self.phantom += verdict.phantom;
        self.undrained += verdict.undrained;
        self.refunds_flagged += verdict.refunds_flagged;
        self.passed &= verdict.holds();
        for v in verdict.violations {
            if self.violations.len() < 50 {
                self.violations.push(v);
            }
        }
        let trial = self.trials;
        self.figures.extend(
            verdict
                .figures
                .into_iter()
                .map(|f| format!("trial {trial}: {f}")),
        );
    }

    /// Records a trial that could not run to the end (counts as a failure).
    pub fn failed_to_run(&mut self, error: String) {
        self.trials += 1;
        self.passed = false;
        self.violations
            .push(format!("trial could not run: {error}"));
    }
}

/// Every scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    /// The order database the trials ran on (`sqlite`, `postgres`).
    pub database: String,
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.passed)
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "order database: {}", self.database);
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>7} {:>7} {:>6} {:>6} {:>9} {:>5} {:>7} {:>8} {:>7} {:>9} {:>7}  result",
            "scenario",
            "trials",
            "faults",
            "orders",
            "paid",
            "acked",
            "ans.lost",
            "lost",
            "doubled",
            "oversold",
            "phantom",
            "undrained",
            "secs",
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<14} {:>6} {:>7} {:>7} {:>6} {:>6} {:>9} {:>5} {:>7} {:>8} {:>7} {:>9} {:>7.0}  {}",
                s.name,
                s.trials,
                s.faults,
                s.orders,
                s.paid,
                s.acknowledged,
                s.answers_lost,
                s.lost,
                s.doubled,
                s.oversold,
                s.phantom,
                s.undrained,
                s.seconds,
                if s.passed { "ok" } else { "FAILED" }
            );
        }
        out.push_str(&self.figures());
        for s in self.scenarios.iter().filter(|s| !s.violations.is_empty()) {
            let _ = writeln!(out, "\n{} violations:", s.name);
            for v in s.violations.iter().take(20) {
                let _ = writeln!(out, "  - {v}");
            }
            for k in &s.kept {
                let _ = writeln!(out, "  (logs and databases kept in {k})");
            }
        }
        out
    }

    /// Each scenario's measured figures, a line each under its name.
    fn figures(&self) -> String {
        let mut out = String::new();
        for s in self.scenarios.iter().filter(|s| !s.figures.is_empty()) {
            let _ = writeln!(out, "\n{} figures:", s.name);
            for f in &s.figures {
                let _ = writeln!(out, "  - {f}");
            }
        }
        out
    }

    /// The figures as a Markdown table (for docs/reliability.md).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | trials | faults injected | orders | paid | acknowledged | answers lost | lost | doubled | oversold | phantom | undrained | seconds |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                s.name,
                s.trials,
                s.faults,
                s.fault_kind,
                s.orders,
                s.paid,
                s.acknowledged,
                s.answers_lost,
                s.lost,
                s.doubled,
                s.oversold,
                s.phantom,
                s.undrained,
                s.seconds
            );
        }
        out.push_str(&self.figures());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_trial_fails_the_scenario_and_shows_in_table_and_markdown() {
        let mut ok = ScenarioResult::new("crash", "kill -9 of ordermq");
        ok.add(
            Verdict {
                orders: 10,
                paid: 8,
                acknowledged: 8,
                ..Verdict::default()
            },
            20,
        );
        let mut bad = ScenarioResult::new("flaky", "failed third-party calls");
        bad.add(
            Verdict {
                orders: 5,
                lost: 2,
                violations: vec!["order O1: PAID but no push effect".into()],
                figures: vec!["payments p99 9.5 ms".into()],
                ..Verdict::default()
            },
            7,
        );
        assert!(ok.passed && !bad.passed);
        let report = Report {
            command: "chaos".into(),
            database: "postgres".into(),
            scenarios: vec![ok, bad],
        };
        assert!(!report.passed());
        let table = report.table();
        assert!(table.contains("FAILED") && table.contains("PAID but no push effect"));
        assert!(table.starts_with("order database: postgres\n"));
        let markdown = report.markdown();
        assert!(markdown.contains("| crash | 1 | 20 kill -9 of ordermq | 10 | 8 | 8 |"));
        assert!(table.contains("flaky figures:\n  - trial 1: payments p99 9.5 ms"));
        assert!(markdown.contains("  - trial 1: payments p99 9.5 ms"));
        assert_eq!(markdown.lines().count(), 7);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenarios"][1]["lost"], 2);
        assert_eq!(json["scenarios"][0]["trials"], 1);
    }
}
