//! `ordermq broker` and `ordermq namesrv`: one RocketMQ node per process, so
//! a cluster (or the fault suite) can stop and kill each on its own. Builds
//! without the `embedded-broker` feature refuse them with a clear error.

use std::process::ExitCode;

use ordermq::Config;
#[cfg(feature = "embedded-broker")]
use ordermq::logging::log_filter;

#[cfg(feature = "embedded-broker")]
use crate::runtime;

#[cfg(not(feature = "embedded-broker"))]
pub(crate) fn broker(_config: Config) -> ExitCode {
    eprintln!(
        "ordermq broker: this build has no embedded broker (built without the `embedded-broker` feature)"
    );
    ExitCode::from(2)
}

#[cfg(feature = "embedded-broker")]
pub(crate) fn broker(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config))
        .init();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let broker = ordermq_messaging::EmbeddedBroker::start(config.embedded_options()).await?;
        tracing::info!(
            namesrv = %broker.namesrv_addr(),
            broker = %broker.broker_addr(),
            "RocketMQ broker running; set ORDERMQ_NAMESRV_ADDR={} for ordermq",
            broker.namesrv_addr()
        );
        ordermq::startup::shutdown_signal().await;
        tracing::info!("stopping the broker");
        broker.shutdown().await;
        Ok::<(), ordermq_messaging::MqError>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq broker: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
pub(crate) fn namesrv(_config: Config, _listen: Option<std::net::SocketAddr>) -> ExitCode {
    eprintln!(
        "ordermq namesrv: this build has no embedded NameServer (built without the `embedded-broker` feature)"
    );
    ExitCode::from(2)
}

#[cfg(feature = "embedded-broker")]
pub(crate) fn namesrv(config: Config, listen: Option<std::net::SocketAddr>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config))
        .init();
    let listen = listen.unwrap_or_else(|| {
        std::net::SocketAddr::from(([127, 0, 0, 1], config.embedded_namesrv_port))
    });
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // Its kvConfig and properties files, one directory per listening port.
    let dir = config
        .data_dir
        .join(format!("rocketmq-namesrv-{}", listen.port()));
    let result = runtime.block_on(async {
        let namesrv = ordermq_messaging::EmbeddedNameServer::start(&dir, listen).await?;
        tracing::info!(addr = %namesrv.addr(), "RocketMQ NameServer running");
        ordermq::startup::shutdown_signal().await;
        tracing::info!("stopping the NameServer");
        namesrv.shutdown().await;
        Ok::<(), ordermq_messaging::MqError>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq namesrv: {e}");
            ExitCode::FAILURE
        }
    }
}
