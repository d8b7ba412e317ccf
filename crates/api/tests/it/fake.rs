//! An `OrderService` that records what it is asked and answers from a script.

use std::sync::Mutex;

use ordermq_domain::ports::{BoxFuture, OrderService, StorageError};
use ordermq_domain::view::{
    CarrierReceipt, OrderView, PaymentReceipt, RefundView, Stats, UserActivity,
};
use ordermq_domain::{
    Actor, CarrierUpdate, CarrierUpdateError, CreateOrderError, NewOrder, OrderId, OrderStatus,
    PayOrderError, PaymentNotice, Product, RefundError, RefundId, RefundRequest, RetryRefundError,
    UserId,
};

/// What the fake was called with, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    CreateOrder(NewOrder),
    Pay(PaymentNotice),
    Order(OrderId),
    Refund(RefundRequest),
    RetryRefund(RefundId, Actor),
    Other(&'static str),
}

/// Answers payments with `pay_answer` (a receipt when `None`), every order
/// lookup with "not found", and the reads and refunds the handler tests do
/// not look into with a refusal (storage unavailable, or not found).
#[derive(Debug, Default)]
pub(crate) struct FakeService {
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) pay_answer: Mutex<Option<PayOrderError>>,
    /// What `sales` lists (and `sale` finds).
    pub(crate) sales: Mutex<Vec<ordermq_domain::SaleProgress>>,
}

impl FakeService {
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl OrderService for FakeService {
    fn products(&self) -> BoxFuture<'_, Result<Vec<Product>, StorageError>> {
        self.record(Call::Other("products"));
        Box::pin(async { Ok(Vec::new()) })
    }

    fn create_order(&self, order: NewOrder) -> BoxFuture<'_, Result<OrderView, CreateOrderError>> {
        let sku = order.lines()[0].sku.as_str().to_owned();
        self.record(Call::CreateOrder(order));
        Box::pin(async move { Err(CreateOrderError::UnknownSku(sku)) })
    }

    fn pay(&self, notice: PaymentNotice) -> BoxFuture<'_, Result<PaymentReceipt, PayOrderError>> {
        let order_id = notice.order_id.clone();
        self.record(Call::Pay(notice));
        let scripted = self.pay_answer.lock().unwrap().take();
        Box::pin(async move {
            match scripted {
                Some(error) => Err(error),
                None => Ok(PaymentReceipt {
                    order_id,
                    status: OrderStatus::Paid,
                    duplicate: false,
                    refund_required: false,
                }),
            }
        })
    }

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderView>, StorageError>> {
        self.record(Call::Order(id));
        Box::pin(async { Ok(None) })
    }

    fn user_activity(&self, _: UserId) -> BoxFuture<'_, Result<UserActivity, StorageError>> {
        self.record(Call::Other("user_activity"));
        Box::pin(async { Err(StorageError::unavailable("fake")) })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StorageError>> {
        self.record(Call::Other("stats"));
        Box::pin(async { Err(StorageError::unavailable("fake")) })
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<RefundView, RefundError>> {
        let order_id = request.order_id.to_string();
        self.record(Call::Refund(request));
        Box::pin(async move { Err(RefundError::OrderNotFound(order_id)) })
    }

    fn retry_refund(
        &self,
        id: RefundId,
        actor: Actor,
    ) -> BoxFuture<'_, Result<RefundView, RetryRefundError>> {
        self.record(Call::RetryRefund(id.clone(), actor));
        Box::pin(async move { Err(RetryRefundError::NotFound(id.to_string())) })
    }

    fn carrier_update(
        &self,
        update: CarrierUpdate,
    ) -> BoxFuture<'_, Result<CarrierReceipt, CarrierUpdateError>> {
        self.record(Call::Other("carrier_update"));
        let order_id = update.order_id.to_string();
        Box::pin(async move { Err(CarrierUpdateError::OrderNotFound(order_id)) })
    }
}

impl ordermq_domain::ports::FlashSaleService for FakeService {
    fn create_sale(
        &self,
        sale: ordermq_domain::NewSale,
    ) -> BoxFuture<'_, Result<ordermq_domain::Sale, ordermq_domain::CreateSaleError>> {
        self.record(Call::Other("create_sale"));
        Box::pin(async move {
            Err(ordermq_domain::CreateSaleError::UnknownSku(
                sale.sku.to_string(),
            ))
        })
    }

    fn attempt(
        &self,
        sale: ordermq_domain::SaleId,
        _: UserId,
        _: u32,
    ) -> BoxFuture<'_, Result<ordermq_domain::Attempt, ordermq_domain::AttemptRefusal>> {
        self.record(Call::Other("attempt"));
        Box::pin(async move {
            Err(ordermq_domain::AttemptRefusal::SaleNotFound(
                sale.to_string(),
            ))
        })
    }

    fn attempt_state(
        &self,
        _: ordermq_domain::AttemptId,
    ) -> BoxFuture<'_, Result<Option<ordermq_domain::Attempt>, StorageError>> {
        self.record(Call::Other("attempt_state"));
        Box::pin(async { Ok(None) })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<ordermq_domain::SaleProgress>, StorageError>> {
        self.record(Call::Other("sales"));
        let sales = self.sales.lock().unwrap().clone();
        Box::pin(async move { Ok(sales) })
    }

    fn sale(
        &self,
        sale: ordermq_domain::SaleId,
    ) -> BoxFuture<'_, Result<Option<ordermq_domain::SaleProgress>, StorageError>> {
        self.record(Call::Other("sale"));
        let found = self
            .sales
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.sale.sale_id == sale)
            .cloned();
        Box::pin(async move { Ok(found) })
    }
}
