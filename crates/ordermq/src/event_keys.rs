//! Which keys sign and verify events: the configured `event_keys`, or a key
//! generated once per data directory.
//!
//! Why a generated key: the one-command run (`cargo run`, the embedded
//! broker, the tests) must sign its events without anyone choosing a secret,
//! and the key must outlive the process: after a restart, or in `ordermq dlq
//! replay`, events published before must still verify. So the first start
//! writes a random key to `<data_dir>/event-signing.key` (owner-only) and
//! every later process with that data directory reads it. That is only safe
//! where nobody else publishes: the embedded broker, or a NameServer on
//! loopback (a broker started with `ordermq broker`). A remote cluster is
//! shared with other producers, and instances sharing it must share keys:
//! there `event_keys` is required and ordermq refuses to start without it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ordermq_domain::signing::Keyring;
use thiserror::Error;

use crate::config::{Config, SigningKeys};

/// The generated key's file name in the data directory.
pub const KEY_FILE: &str = "event-signing.key";

/// Why no event keys could be had.
#[derive(Debug, Error)]
pub enum EventKeysError {
    #[error(
        "namesrv_addr {namesrv} is not on this machine, and event_keys is not set: events \
         published to a shared cluster must be signed with keys every instance shares. Set \
         ORDERMQ_EVENT_KEYS=id:secret (see `ordermq config`)"
    )]
    RequiredForRemoteCluster { namesrv: String },
    #[error("cannot create or read the event key file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the event key file {path} is not id:secret: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the system's random generator failed: {0}")]
    Random(String),
}

/// Whether every NameServer of `namesrv` (`host:port;host:port`) is on
/// loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(namesrv: &str) -> bool {
    namesrv.split(';').map(str::trim).all(|entry| {
        let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The event keys `config` asks for: `event_keys` if set; otherwise the data
/// directory's generated key (created on first use), unless the cluster is
/// remote.
///
/// # Errors
///
/// [`EventKeysError`] if the cluster is remote and no keys are set, or the
/// key file cannot be created, read or parsed.
pub fn event_keys(config: &Config) -> Result<Keyring, EventKeysError> {
    if let Some(keys) = &config.event_keys {
        return Ok(keys.keyring().clone());
    }
    if let Some(namesrv) = &config.namesrv_addr
        && !is_loopback(namesrv)
    {
        return Err(EventKeysError::RequiredForRemoteCluster {
            namesrv: namesrv.clone(),
        });
    }
    data_dir_key(&config.data_dir)
}

/// The key in `data_dir`'s key file, written on first use.
fn data_dir_key(data_dir: &Path) -> Result<Keyring, EventKeysError> {
    let path = data_dir.join(KEY_FILE);
    let file_error = |source| EventKeysError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(file_error)?;
    match create_owner_only(&path) {
        Ok(mut file) => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| EventKeysError::Random(e.to_string()))?;
            let mut id = [0u8; 4];
            getrandom::fill(&mut id).map_err(|e| EventKeysError::Random(e.to_string()))?;
            let line = format!("local-{}:{}\n", hex::encode(id), hex::encode(secret));
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(file_error)?;
            tracing::info!(path = %path.display(), "generated this data directory's event signing key");
        }
        // Written by an earlier start (or by a process starting alongside).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(file_error(e)),
    }
    let text = std::fs::read_to_string(&path).map_err(file_error)?;
    SigningKeys::parse(text.trim())
        .map(|keys| keys.keyring().clone())
        .map_err(|reason| EventKeysError::Invalid { path, reason })
}

/// Creates `path`, failing if it exists; readable by its owner only.
fn create_owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_told_from_remote_ones() {
        assert!(is_loopback("127.0.0.1:9876"));
        assert!(is_loopback("localhost:9876;127.0.0.2:9877"));
        assert!(is_loopback("[::1]:9876"));
        assert!(!is_loopback("10.0.0.5:9876"));
        assert!(!is_loopback("127.0.0.1:9876;ns2.example.com:9876"));
    }

    #[test]
    fn a_remote_cluster_needs_configured_keys() {
        let config = Config {
            namesrv_addr: Some("ns1.example.com:9876".into()),
            ..Config::default()
        };
        let refused = event_keys(&config).unwrap_err();
        assert!(matches!(
            refused,
            EventKeysError::RequiredForRemoteCluster { .. }
        ));
        assert!(refused.to_string().contains("ORDERMQ_EVENT_KEYS"));
        let configured = Config {
            event_keys: Some(SigningKeys::parse("k1:s1").unwrap()),
            ..config
        };
        assert_eq!(event_keys(&configured).unwrap().signing_key_id(), "k1");
    }

    #[test]
    fn the_generated_key_is_made_once_per_data_dir_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let first = event_keys(&config).unwrap();
        let again = event_keys(&config).unwrap();
        assert_eq!(first.signing_key_id(), again.signing_key_id());
        let signed = first.sign("OrderPaid:O1", b"{}");
        assert!(
            again
                .verify(&signed.key_id, "OrderPaid:O1", b"{}", Some(&signed.hex))
                .is_ok(),
            "a restart verifies what the first process signed"
        );
        let other = tempfile::tempdir().unwrap();
        let elsewhere = event_keys(&Config {
            data_dir: other.path().to_path_buf(),
            ..Config::default()
        })
        .unwrap();
        assert!(
            elsewhere
                .verify(&signed.key_id, "OrderPaid:O1", b"{}", Some(&signed.hex))
                .is_err(),
            "each data directory has its own key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(config.data_dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
