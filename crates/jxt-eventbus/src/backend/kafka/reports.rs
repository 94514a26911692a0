//! Delivery reports of a batch of records, gathered without a future or a
//! channel per record.
//!
//! Each enqueued record carries a [`Ticket`] (its batch and its place in it)
//! as librdkafka's per-message opaque. The producer's polling thread writes
//! the record's report into the batch's slot and counts the batch down; the
//! publisher is woken once, when the batch's last report is in, instead of
//! once per record.
//!
//! A ticket dropped without a report (its record was never enqueued) counts
//! down too, so a batch always completes. A publisher that stops waiting
//! (timeout) leaves the batch to the tickets still out: late reports land in
//! slots nobody reads, and the batch is freed with the last of them.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use futures::task::AtomicWaker;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::context::BusClientContext;

/// A record's delivery report: its partition and offset, or why it failed.
pub(super) type Report = Result<(i32, i64), KafkaError>;

/// The reports of one batch.
#[derive(Debug)]
pub(super) struct Reports {
    slots: Box<[OnceLock<Report>]>,
    /// Tickets not yet reported or dropped.
    remaining: AtomicUsize,
    waker: AtomicWaker,
}

impl Reports {
    /// Room for `records` reports.
    pub(super) fn new(records: usize) -> Arc<Self> {
        Arc::new(Reports {
            slots: (0..records).map(|_| OnceLock::new()).collect(),
            remaining: AtomicUsize::new(records),
            waker: AtomicWaker::new(),
        })
    }

    /// The ticket of the record at `index`; each index is handed out once.
    pub(super) fn ticket(self: &Arc<Self>, index: usize) -> Box<Ticket> {
        Box::new(Ticket {
            reports: self.clone(),
            index,
        })
    }

    /// Resolves once every ticket was reported or dropped.
    pub(super) async fn all(&self) {
        poll_fn(|cx| {
            if self.remaining.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A report that came in between the check and the registration
            // found no waker to wake.
            if self.remaining.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// The report of the record at `index`, if it came.
    pub(super) fn get(&self, index: usize) -> Option<&Report> {
        self.slots[index].get()
    }
}

/// One record's place in its batch: librdkafka's opaque for the record.
#[derive(Debug)]
pub(super) struct Ticket {
    reports: Arc<Reports>,
    index: usize,
}

impl Ticket {
    fn report(self, report: Report) {
        let _ = self.reports.slots[self.index].set(report);
        // Dropping the ticket counts the batch down.
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.reports.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reports.waker.wake();
        }
    }
}

impl ProducerContext for BusClientContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        (*ticket).report(match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[tokio::test]
    async fn a_batch_completes_when_every_ticket_is_reported_or_dropped() {
        let reports = Reports::new(3);
        let (a, b, c) = (*reports.ticket(0), *reports.ticket(1), *reports.ticket(2));
        let waiting = tokio::spawn({
            let reports = reports.clone();
            async move { reports.all().await }
        });
        a.report(Ok((0, 7)));
        drop(b);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one report is still out");
        std::thread::spawn(move || {
            c.report(Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )))
        })
        .join()
        .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the last report")
            .unwrap();
        assert!(matches!(reports.get(0), Some(Ok((0, 7)))));
        assert!(
            reports.get(1).is_none(),
            "a dropped ticket leaves no report"
        );
        assert!(matches!(reports.get(2), Some(Err(_))));
    }
}
