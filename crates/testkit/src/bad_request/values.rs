//! The wrong values every endpoint's generator draws from: ids, keys,
//! quantities and amounts that break the API's rules, random bytes, and a
//! known order to aim at.
//!
//! They live apart from the endpoints because the same mistake (an id with a
//! space, an amount that overflows) is tried on several endpoints; drawing it
//! from one place keeps every endpoint tested against the same bad values.

use serde_json::{Value, json};

use super::{FuzzContext, KnownOrder};

/// A valid id: 1 to 20 alphanumerics.
pub(super) fn random_id(rng: &mut fastrand::Rng) -> String {
    let len = rng.usize(1..=20);
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// Strings that are not valid ids (`[A-Za-z0-9_.:-]{1,64}`).
pub(super) fn bad_id(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..6) {
        0 => String::new(),
        1 => "x".repeat(65 + rng.usize(0..200)),
        2 => "has space".into(),
        3 => "ünïcødé".into(),
        4 => "semi;colon".into(),
        _ => "new\nline".into(),
    }
}

/// Header-safe strings that are not valid idempotency keys.
pub(super) fn bad_key(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..4) {
        0 => String::new(),
        1 => "k".repeat(65 + rng.usize(0..200)),
        2 => "has space".into(),
        _ => "semi;colon/slash".into(),
    }
}

/// Quantities outside 1..=10000, or not integers.
pub(super) fn bad_quantity(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..10) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MIN),
        3 => json!(i64::MAX),
        4 => json!(10_001),
        5 => json!(u64::MAX),
        6 => json!(1.5),
        7 => json!("3"),
        8 => json!(null),
        _ => json!(-rng.i64(1..i64::MAX)),
    }
}

/// Amounts that are negative, overflow i64, or are not integers.
pub(super) fn bad_amount(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..7) {
        0 => json!(-1),
        1 => json!(i64::MIN),
        2 => json!(u64::MAX),
        3 => json!(1e30),
        4 => json!(12.5),
        5 => json!("100"),
        _ => json!(-rng.i64(1..i64::MAX)),
    }
}

/// Up to `max` random bytes (rarely valid JSON).
pub(super) fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..max);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// One of the context's existing orders.
pub(super) fn known_order(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> KnownOrder {
    ctx.orders[rng.usize(..ctx.orders.len())].clone()
}
