//! Starting, stopping and killing a trial's processes: `ordermq serve`,
//! `ordermq broker`, the fake providers and `ordermq feed sink`.
//!
//! Each is a real process of its own ([`Proc`]) with its log in the trial's
//! directory, so a `kill -9` of one leaves the others (and their files)
//! alone, as in production.

use std::path::PathBuf;
use std::time::Duration;

use super::Trial;
use crate::process::{self, Proc};
use crate::{ChaosError, PROVIDER_KEYS, PROVIDERS_DIR};

impl Trial {
    /// Starts `ordermq broker` and waits until its NameServer and broker listen.
    pub async fn start_broker(&mut self) -> Result<(), ChaosError> {
        let mut env = self.env();
        if let Some(dir) = &self.broker_data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChaosError::Setup(format!("cannot create {}: {e}", dir.display())))?;
            env.retain(|(key, _)| key != "ORDERMQ_DATA_DIR");
            env.push(("ORDERMQ_DATA_DIR".into(), dir.display().to_string()));
        }
        let mut proc = Proc::spawn(
            "ordermq broker",
            &self.bin,
            &["broker"],
            &env,
            &self.broker_log(),
        )?;
        process::wait_for_port(&mut proc, self.ports.namesrv, Duration::from_secs(60)).await?;
        process::wait_for_port(&mut proc, self.ports.broker, Duration::from_secs(60)).await?;
        self.broker = Some(proc);
        Ok(())
    }

    /// SIGTERM to the broker process; waits for it to exit.
    pub async fn stop_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.terminate(Duration::from_secs(20)).await;
        }
    }

    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill9();
        }
    }

    /// The providers' directory: their call log and idempotency keys (in
    /// the trial's directory, never on a power-cut disk: the providers are
    /// other machines).
    pub fn providers_dir(&self) -> PathBuf {
        self.dir.path().join(PROVIDERS_DIR)
    }

    /// Starts `ordermq-fake-provider` (next to the `ordermq` binary) as
    /// the SMS gateway, logistics system and payment gateway, and has
    /// every later start of ordermq call it over HTTP. It is a process of
    /// its own: ordermq's `kill -9` leaves it, its keys and its call log
    /// alone.
    pub async fn start_providers(&mut self) -> Result<(), ChaosError> {
        let bin = self.bin.with_file_name(format!(
            "ordermq-fake-provider{}",
            std::env::consts::EXE_SUFFIX
        ));
        let port = match self.providers_port {
            Some(port) => port,
            None => process::free_port()?,
        };
        let dir = self.providers_dir().display().to_string();
        let listen = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            "ordermq-fake-provider",
            &bin,
            &["--listen", &listen, "--data-dir", &dir],
            &[("FAKE_PROVIDER_KEYS".to_owned(), PROVIDER_KEYS.to_owned())],
            &self.dir.path().join("providers.log"),
        )?;
        process::wait_for_port(&mut proc, port, Duration::from_secs(30)).await?;
        self.providers = Some(proc);
        self.providers_port = Some(port);
        Ok(())
    }

    /// Every call the providers received, from their call log on disk.
    pub fn provider_calls(&self) -> Result<Vec<ordermq_fake_provider::CallRecord>, ChaosError> {
        let path = self
            .providers_dir()
            .join(ordermq_fake_provider::ledger::CALL_LOG);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ChaosError::Setup(format!("cannot read {}: {e}", path.display())))?;
        // A line cut short (a crash mid-write) never happened, as for the provider.
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Starts ordermq without waiting for it (to kill it while it starts).
    pub fn spawn_ordermq(&mut self) -> Result<(), ChaosError> {
        self.ordermq = Some(Proc::spawn(
            "ordermq",
            &self.bin,
            &["serve"],
            &self.ordermq_env(),
            &self.log(),
        )?);
        self.starts += 1;
        Ok(())
    }

    /// Starts ordermq and waits until it answers `/healthz`.
    pub async fn start_ordermq(&mut self) -> Result<(), ChaosError> {
        let mut proc = Proc::spawn(
            "ordermq",
            &self.bin,
            &["serve"],
            &self.ordermq_env(),
            &self.log(),
        )?;
        process::wait_for_health(
            &mut proc,
            &self.driver.client,
            self.ports.http,
            Duration::from_secs(90),
        )
        .await?;
        self.ordermq = Some(proc);
        self.starts += 1;
        Ok(())
    }

    /// Starts `ordermq feed sink` (the broker must be up); from now on
    /// `finish` checks the feed with `ordermq feed verify`. ordermq must
    /// have been started with `feed` on (it is off by default): a sink fed
    /// nothing would verify nothing.
    pub fn start_feed_sink(&mut self) -> Result<(), ChaosError> {
        if self.overrides.get("ORDERMQ_FEED").map(String::as_str) != Some("on") {
            return Err(ChaosError::Setup(
                "the feed sink needs ordermq started with feed on (trial.set(\"feed\", \"on\"))"
                    .into(),
            ));
        }
        self.feed_sink = Some(Proc::spawn(
            "ordermq feed sink",
            &self.bin,
            &["feed", "sink"],
            &self.env(),
            &self.dir.path().join("feed-sink.log"),
        )?);
        self.checks_feed = true;
        Ok(())
    }

    /// `kill -9` the feed sink.
    pub fn kill_feed_sink(&mut self) {
        if let Some(mut proc) = self.feed_sink.take() {
            proc.kill9();
        }
    }

    /// The sink is still running (not exited on its own).
    pub fn feed_sink_running(&mut self) -> bool {
        self.feed_sink.as_mut().is_some_and(Proc::is_running)
    }

    /// SIGSTOP ordermq: every thread of it frozen, its sockets open, until
    /// [`Trial::resume_ordermq`].
    pub fn pause_ordermq(&self) -> Result<(), ChaosError> {
        match &self.ordermq {
            Some(proc) => proc.signal("STOP"),
            None => Err(ChaosError::Process("no ordermq to pause".into())),
        }
    }

    /// SIGCONT ordermq after [`Trial::pause_ordermq`].
    pub fn resume_ordermq(&self) -> Result<(), ChaosError> {
        match &self.ordermq {
            Some(proc) => proc.signal("CONT"),
            None => Err(ChaosError::Process("no ordermq to resume".into())),
        }
    }

    /// `kill -9` ordermq.
    pub fn kill_ordermq(&mut self) {
        if let Some(mut proc) = self.ordermq.take() {
            proc.kill9();
        }
    }

    /// Graceful stop (SIGTERM); `kill -9` after 30 s.
    pub async fn stop_ordermq(&mut self) -> bool {
        match self.ordermq.take() {
            Some(mut proc) => proc.terminate(Duration::from_secs(30)).await,
            None => true,
        }
    }
}
