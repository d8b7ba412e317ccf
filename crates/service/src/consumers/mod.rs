//! ordermq's consumers, one file each: every consumer group of
//! [`ordermq_domain::topology::CONSUMER_GROUPS`] has its handler here, and
//! the data team's change-feed sink (`feed`), which `ordermq feed sink` runs.
//!
//! A handler turns a batch of deliveries into an [`Outcome`]: `Consumed`
//! when every message is applied (or was applied before: each is
//! idempotent), `RetryLater` otherwise, and the broker redelivers the batch.
//!
//! [`Outcome`]: ordermq_domain::ports::Outcome

pub mod close;
pub mod feed;
pub mod flash;
pub mod receipt;
pub mod refund;
pub mod system;

pub use close::CloseHandler;
pub use feed::FeedSinkHandler;
pub use flash::{FlashOrderHandler, FlashOrderSettings};
pub use receipt::ReceiptHandler;
pub use refund::RefundHandler;
pub use system::{SystemGateways, SystemHandler};
