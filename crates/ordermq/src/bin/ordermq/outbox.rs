//! `ordermq outbox parked|requeue|missing`: the outbox rows the relay parked
//! and the sent events the reconciler gave up on; the work is in
//! [`ordermq::outbox`].

use std::process::ExitCode;

use clap::Subcommand;
use ordermq::Config;

use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum OutboxAction {
    /// Every parked row: its event, attempts, last error and when it was parked.
    Parked {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sent events some subscribed group still owes after the reconciler
    /// published them again reconcile_max times, with the groups that owe them.
    Missing {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hand a parked row (or every one, --all) back to the relay, its
    /// attempts counted from zero. Exits 1 if the id names no parked row.
    Requeue {
        /// The row's id, as `ordermq outbox parked` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every parked row.
        #[arg(long)]
        all: bool,
    },
}

/// `ordermq outbox parked|requeue|missing`.
pub(crate) fn run(config: &Config, action: OutboxAction) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(async {
        match action {
            OutboxAction::Parked { json } => match ordermq::outbox::parked(config).await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&ordermq::outbox::parked_json(&rows))
                            .unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", ordermq::outbox::render_parked(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq outbox parked: {e}");
                    ExitCode::FAILURE
                }
            },
            OutboxAction::Missing { json } => match ordermq::outbox::missing(config).await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&ordermq::outbox::missing_json(&rows))
                            .unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", ordermq::outbox::render_missing(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq outbox missing: {e}");
                    ExitCode::FAILURE
                }
            },
            OutboxAction::Requeue { id, all } => {
                let id = if all { None } else { id };
                match ordermq::outbox::requeue(config, id).await {
                    Ok(0) if id.is_some() => {
                        eprintln!(
                            "ordermq outbox requeue: no parked row has id {}",
                            id.unwrap_or_default()
                        );
                        ExitCode::FAILURE
                    }
                    Ok(n) => {
                        println!("{n} outbox row(s) handed back to the relay");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ordermq outbox requeue: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
