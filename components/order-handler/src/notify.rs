//! The three notifications of an accepted order, put in the transactional
//! outbox so they are delivered iff the order commits.
//!
//! Connector names and the fulfilment path come from this component's
//! config, so an operator can rename or swap connectors without a rebuild.

use crate::error::ApiError;
use crate::orders::Order;
use crate::switchyard::platform::config;
use crate::switchyard::platform::outbox::{self, EnqueueError};
use crate::switchyard::platform::types::Message;

/// Queues the email, SMS and webhook messages for `order`; `order_json` is
/// its stored JSON, which the webhook carries unchanged.
pub fn order_accepted(order: &Order, order_json: &str) -> Result<(), ApiError> {
    let total = format_cents(order.total_cents);
    enqueue(
        &setting("email_connector", "email"),
        &Message {
            recipient: order.email.clone(),
            subject: Some(format!("Order {} confirmed", order.id)),
            body: format!(
                "Hello {},\n\nthank you for your order {}. It is confirmed, total {total}.\n",
                order.customer, order.id
            ),
            metadata: Vec::new(),
        },
    )?;
    enqueue(
        &setting("sms_connector", "sms"),
        &Message {
            recipient: order.phone.clone(),
            subject: None,
            body: format!("Order {} confirmed, total {total}.", order.id),
            metadata: Vec::new(),
        },
    )?;
    enqueue(
        &setting("webhook_connector", "webhook"),
        &Message {
            recipient: setting("fulfilment_path", "/fulfilment"),
            subject: None,
            body: order_json.to_owned(),
            metadata: vec![("content-type".into(), "application/json".into())],
        },
    )
}

fn enqueue(connector: &str, message: &Message) -> Result<(), ApiError> {
    outbox::enqueue(connector, message).map(drop).map_err(|error| {
        let reason = match error {
            EnqueueError::UnknownConnector(detail) => format!("unknown connector: {detail}"),
            EnqueueError::Invalid(detail) => format!("invalid message: {detail}"),
            EnqueueError::Unavailable(detail) => format!("outbox unavailable: {detail}"),
        };
        ApiError::Notifications(format!("enqueue to connector {connector:?}: {reason}"))
    })
}

/// A config value, or `default` when it is unset or blank.
fn setting(key: &str, default: &str) -> String {
    config::get(key).filter(|value| !value.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Cents as `12.34`; the currency is the shop's, not this component's.
fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}
