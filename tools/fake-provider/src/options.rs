//! What a provider is told at start: where to listen, where to keep its call
//! log, which keys may sign, how fresh a signature must be, and the knobs
//! that make it slow, failing or hanging.
//!
//! Why apart from the server: the binary fills these from flags and
//! `FAKE_PROVIDER_*` variables, a test fills them in code; both then call
//! [`spawn`](crate::spawn) the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ordermq_domain::signing::Keyring;

/// How the provider behaves; changeable while it runs ([`Handle::set_knobs`]).
///
/// [`Handle::set_knobs`]: crate::Handle::set_knobs
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Knobs {
    /// Every call waits this long before it is answered.
    pub latency: Duration,
    /// Plus a uniform extra wait of 0..=jitter.
    pub jitter: Duration,
    /// Probability that a call is answered 503 with no effect.
    pub failure_rate: f64,
    /// Probability that a call has its effect and is then answered 503 (the
    /// answer is lost; a retry with the same key gets it).
    pub lost_answer_rate: f64,
    /// Probability that a call hangs for [`Knobs::hang`] before going on.
    pub hang_rate: f64,
    /// How long a hanging call hangs.
    pub hang: Duration,
}

/// Everything a provider needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the call log (`calls.jsonl`), created if missing.
    pub data_dir: PathBuf,
    /// The keys whose signatures are accepted (ordermq signs with the first
    /// of its own keyring; the ids must match).
    pub keys: Keyring,
    /// How far a signed timestamp may be from the provider's clock.
    pub freshness: Duration,
    /// Latency, failures, hangs.
    pub knobs: Knobs,
}

impl Options {
    /// A provider on loopback, any free port, accepting `keys`, keeping its
    /// call log in `data_dir`, answering at once, with a five-minute freshness
    /// window.
    pub fn local(keys: Keyring, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            keys,
            freshness: Duration::from_secs(300),
            knobs: Knobs::default(),
        }
    }
}

/// Parses `id:secret[,id:secret...]` into a keyring (the form ordermq's
/// `gateways.*.keys` takes).
///
/// # Errors
///
/// A message (never quoting a secret) if a pair has no colon, or the keys do
/// not make a keyring (an empty or repeated id, an empty secret).
pub fn parse_keys(text: &str) -> Result<Keyring, String> {
    let pairs = text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((id, secret)) => Ok((id.trim().to_owned(), secret.as_bytes().to_vec())),
            None => Err("each key is id:secret (an id, a colon, the secret)".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Keyring::new(pairs).map_err(|e| e.to_string())
}
