//! `ordermq dlq list|replay|parked`: dead-lettered and parked messages from
//! the command line; the work is in [`ordermq::dlq`].

use std::process::ExitCode;

use clap::Subcommand;
use ordermq::Config;
use tracing_subscriber::EnvFilter;

use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum DlqAction {
    /// Every message in the DLQ of one group (or all four), its reason and state.
    List {
        /// credit_group, marketing_group, push_group or warehouse_group (default: all).
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply every not-yet-applied dead-lettered message through its group's
    /// handler; already applied ones are skipped. Exits 1 if any still fails.
    Replay {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Messages consumer groups refused because they failed verification
    /// (forged, unsigned, under an unknown key): never applied, never
    /// replayed; each with its group, message id, key, reason and time.
    Parked {
        /// Any consumer group, e.g. credit_group (default: all).
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(config: Config, action: DlqAction) -> ExitCode {
    // The tool reports its own errors; the RocketMQ client's connection
    // chatter only shows when ORDERMQ_LOG asks for it.
    let filter = match std::env::var_os("ORDERMQ_LOG") {
        Some(_) => EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("error")),
        None => EnvFilter::new("error,rocketmq_transport=off,rocketmq_client_rust=off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let (group, json) = match &action {
        DlqAction::List { group, json }
        | DlqAction::Replay { group, json }
        | DlqAction::Parked { group, json } => (group.clone(), *json),
    };
    if matches!(action, DlqAction::Parked { .. }) {
        let code = runtime.block_on(parked(&config, group.as_deref(), json));
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        return code;
    }
    let systems = match ordermq::dlq::systems(group.as_deref()) {
        Ok(systems) => systems,
        Err(e) => {
            eprintln!("ordermq dlq: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match action {
            DlqAction::List { .. } => match ordermq::dlq::list(&config, &systems).await {
                Ok(entries) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&entries).unwrap_or_default()
                        );
                    } else {
                        print!("{}", ordermq::dlq::render_list(&entries));
                        if let Ok(parked @ 1..) = ordermq::dlq::parked_count(&config).await {
                            println!(
                                "{parked} parked message(s) failed verification and were never applied: `ordermq dlq parked`"
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq dlq list: {e}");
                    ExitCode::FAILURE
                }
            },
            DlqAction::Replay { .. } => match ordermq::dlq::replay(&config, &systems).await {
                Ok(outcomes) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
                        );
                    } else {
                        print!("{}", ordermq::dlq::render_replay(&outcomes));
                    }
                    if outcomes
                        .iter()
                        .any(|o| o.result == "failed" || o.result == "unverified")
                    {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("ordermq dlq replay: {e}");
                    ExitCode::FAILURE
                }
            },
            DlqAction::Parked { .. } => parked(&config, group.as_deref(), json).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// `ordermq dlq parked`: what consumer groups refused as unverified.
async fn parked(config: &Config, group: Option<&str>, json: bool) -> ExitCode {
    match ordermq::dlq::parked(config, group).await {
        Ok(parked) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&parked).unwrap_or_default()
                );
            } else {
                print!("{}", ordermq::dlq::render_parked(&parked));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ordermq dlq parked: {e}");
            ExitCode::FAILURE
        }
    }
}
