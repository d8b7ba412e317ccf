//! How much one user may hold without paying: the per-user limits on unpaid
//! orders and on units of one SKU across them.
//!
//! Why: creating an order reserves its stock until it is paid or closes
//! (30 minutes by default), so without a limit one script can reserve
//! everything and keep the shop sold out for everyone else, at the cost of
//! a request every half hour. With these limits a user holds at most
//! `unpaid_orders` unpaid orders and at most `units_per_sku` units of any
//! one SKU across them; whatever is left stays on sale for others.
//!
//! The numbers and the check are here, free of I/O; the store counts what
//! the user holds inside the transaction that reserves the stock (so two
//! concurrent orders of one user cannot both pass) and asks [`UserLimits`]
//! whether one more order fits.

use crate::error::CreateOrderError;
use crate::order::{NewOrder, Sku};

/// The per-user limits on unpaid orders; `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    unpaid_orders: u32,
    units_per_sku: u32,
}

impl UserLimits {
    /// No limit at all (tools that load data, and shops that rate-limit
    /// elsewhere).
    pub const OFF: Self = Self {
        unpaid_orders: 0,
        units_per_sku: 0,
    };

    /// At most `unpaid_orders` unpaid orders per user and at most
    /// `units_per_sku` units of one SKU across a user's unpaid orders; `0`
    /// turns either off.
    pub const fn new(unpaid_orders: u32, units_per_sku: u32) -> Self {
        Self {
            unpaid_orders,
            units_per_sku,
        }
    }

    /// The most unpaid orders a user may have, if limited.
    pub fn unpaid_orders(self) -> Option<u32> {
        (self.unpaid_orders > 0).then_some(self.unpaid_orders)
    }

    /// The most units of one SKU a user may hold in unpaid orders, if limited.
    pub fn units_per_sku(self) -> Option<u32> {
        (self.units_per_sku > 0).then_some(self.units_per_sku)
    }

    /// Whether either limit is on (the store counts nothing otherwise).
    pub fn any(self) -> bool {
        self.unpaid_orders().is_some() || self.units_per_sku().is_some()
    }

    /// Whether a user who has `unpaid` unpaid orders may create one more.
    ///
    /// # Errors
    ///
    /// [`CreateOrderError::TooManyUnpaidOrders`] if `unpaid` is already at
    /// (or over) the limit.
    pub fn check_unpaid_orders(self, unpaid: u64) -> Result<(), CreateOrderError> {
        match self.unpaid_orders() {
            Some(limit) if unpaid >= u64::from(limit) => {
                Err(CreateOrderError::TooManyUnpaidOrders { limit })
            }
            _ => Ok(()),
        }
    }

    /// Whether a user who holds `held` units of `sku` in unpaid orders may
    /// order `requested` more.
    ///
    /// # Errors
    ///
    /// [`CreateOrderError::SkuLimitExceeded`] if `held + requested` is over
    /// the limit.
    pub fn check_units(self, sku: &Sku, held: u64, requested: u32) -> Result<(), CreateOrderError> {
        match self.units_per_sku() {
            Some(limit) if held.saturating_add(u64::from(requested)) > u64::from(limit) => {
                Err(CreateOrderError::SkuLimitExceeded {
                    sku: sku.to_string(),
                    limit,
                    held,
                    requested,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `order` could fit for a user who holds nothing: no line asks
    /// for more units than the per-SKU limit. Checked before the order
    /// reaches the database, so an order no user could ever place costs no
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`CreateOrderError::SkuLimitExceeded`] for the first line over the limit.
    pub fn check_lines(self, order: &NewOrder) -> Result<(), CreateOrderError> {
        order
            .lines()
            .iter()
            .try_for_each(|line| self.check_units(&line.sku, 0, line.quantity.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderLine, Quantity, UserId};

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    #[test]
    fn the_unpaid_limit_admits_up_to_the_limit() {
        let limits = UserLimits::new(5, 0);
        assert!(limits.check_unpaid_orders(4).is_ok());
        assert!(matches!(
            limits.check_unpaid_orders(5),
            Err(CreateOrderError::TooManyUnpaidOrders { limit: 5 })
        ));
        assert!(limits.check_unpaid_orders(9).is_err());
        assert!(UserLimits::OFF.check_unpaid_orders(u64::MAX).is_ok());
    }

    #[test]
    fn the_units_limit_counts_what_is_held_and_what_is_asked() {
        let limits = UserLimits::new(0, 20);
        assert!(limits.check_units(&sku("A"), 15, 5).is_ok());
        let refused = limits.check_units(&sku("A"), 15, 6).unwrap_err();
        assert!(matches!(
            &refused,
            CreateOrderError::SkuLimitExceeded {
                limit: 20,
                held: 15,
                requested: 6,
                ..
            }
        ));
        let message = refused.to_string();
        assert!(
            message.contains("20") && message.contains("pay"),
            "{message}"
        );
        assert!(
            UserLimits::OFF
                .check_units(&sku("A"), u64::MAX, u32::MAX)
                .is_ok()
        );
    }

    #[test]
    fn a_line_over_the_limit_is_refused_before_any_count() {
        let order = |q| {
            NewOrder::new(
                UserId::parse("u1").unwrap(),
                vec![
                    OrderLine {
                        sku: sku("A"),
                        quantity: Quantity::parse(1).unwrap(),
                    },
                    OrderLine {
                        sku: sku("B"),
                        quantity: Quantity::parse(q).unwrap(),
                    },
                ],
            )
            .unwrap()
        };
        let limits = UserLimits::new(5, 20);
        assert!(limits.check_lines(&order(20)).is_ok());
        assert!(matches!(
            limits.check_lines(&order(21)),
            Err(CreateOrderError::SkuLimitExceeded { ref sku, held: 0, .. }) if sku == "B"
        ));
        assert!(UserLimits::OFF.check_lines(&order(10_000)).is_ok());
        assert!(limits.any() && !UserLimits::OFF.any());
    }
}
