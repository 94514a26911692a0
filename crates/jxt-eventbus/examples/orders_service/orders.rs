//! The orders service's domain: an order, the totals kept, and the handler.
//! Apart from `main.rs` so that `examples/memory_testing.rs` tests this
//! very handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jxt_eventbus::{Delivery, Event, HandlerError, Outputs};

#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub(crate) struct Order {
    pub(crate) customer: String,
    pub(crate) total: u64,
}

/// Total billed per customer, shared by every call of [`bill`].
pub(crate) type Totals = Mutex<HashMap<String, u64>>;

/// Bills an order: a `PaymentRequested` on `payments`, which the bus
/// publishes before it acknowledges the order. An order without a total is
/// poison (dead-lettered at once); the ledger is busy on the first try of
/// an order whose total is a multiple of 7 (retried in the key's lane).
pub(crate) async fn bill(
    totals: Arc<Totals>,
    (order, d): (Event<Order>, Delivery),
) -> Result<Outputs, HandlerError> {
    if order.data.total == 0 {
        return Err(HandlerError::permanent("an order without a total"));
    }
    if order.data.total % 7 == 0 && d.attempt() == 1 {
        return Err(HandlerError::retryable("ledger busy"));
    }
    let payment = order
        .envelope
        .follow_up("PaymentRequested", 1, &order.data)?;
    let mut totals = totals.lock().unwrap();
    *totals.entry(order.data.customer).or_default() += order.data.total;
    Ok(Outputs::new().envelope("payments", payment))
}
