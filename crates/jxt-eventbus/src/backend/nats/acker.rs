//! Acknowledgements of delivered records, sent by one task per consumer.
//!
//! Every record the bus holds (queued in a key lane or running in a handler)
//! is tracked here from delivery until the dispatcher acknowledges it or
//! lets it go:
//!
//! * handled: `+ACK`;
//! * written to the dead-letter topic: `+TERM`, so the server never
//!   redelivers it and advisories show it was given up on;
//! * let go without finishing (its topic was unsubscribed, shutdown gave up
//!   on it, the bus was dropped): `-NAK`, so the group gets it again at once.
//!   The `-NAK`s wait until the topic's pull loop has stopped (the consumer
//!   says when, with [`Acker::nak_released`] or [`Acker::release_all`]) and
//!   go out in stream order: a record `NAK`ed while this bus still had a
//!   pull request open would come straight back to it, behind the others;
//! * still held after `ack_wait / 3`: `+WPI` (in progress), again every
//!   `ack_wait / 3`, so JetStream does not redeliver a record that is only
//!   waiting behind its key or running a slow handler;
//! * of a topic whose ownership this bus lost ([`Acker::forget`]): nothing
//!   more, neither `+WPI` nor an acknowledgement: the server redelivers them
//!   to the topic's new owner once `ack_wait` has passed.
//!
//! The records of one read from the pull inbox are tracked with one command
//! ([`Tracking`]), sent before any of them is handed over, so a record's
//! tracking always reaches the task before its acknowledgement.
//!
//! [`RecordAck::ack`] is called from the dispatcher task and must not block:
//! it only queues a command. The queue is unbounded on purpose: its length is
//! bounded by the records in flight (capped by `dispatch.max_buffered`), and
//! an acknowledgement must never be dropped or wait behind a full channel.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::backend::RecordAck;

const ACK: &[u8] = b"+ACK";
const NAK: &[u8] = b"-NAK";
const IN_PROGRESS: &[u8] = b"+WPI";
const TERM: &[u8] = b"+TERM";

enum Command {
    Track(Vec<Tracked>),
    Ack { id: u64 },
    Term { id: u64 },
    Release { id: u64 },
    Forget { topic: u64 },
    NakReleased,
    ReleaseAll,
    Flush(oneshot::Sender<()>),
}

/// A delivered record to track: its id, ack subject, stream sequence and
/// topic ([`Held::topic`]).
struct Tracked(u64, Subject, u64, u64);

struct Entry {
    reply: Subject,
    seq: u64,
    topic: u64,
    touched: Instant,
}

/// Queues acknowledgements for the acknowledging task of one consumer.
#[derive(Clone, Debug)]
pub(crate) struct Acker {
    tx: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

impl Acker {
    /// Starts the task; it ends once every [`Acker`] and record
    /// acknowledgement is dropped.
    pub(crate) fn spawn(client: Client, ack_wait: Duration) -> Acker {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx, ack_wait));
        Acker {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Starts tracking the records of one read; they are tracked once the
    /// returned [`Tracking`] is dropped.
    pub(crate) fn tracking(&self) -> Tracking<'_> {
        Tracking {
            acker: self,
            records: Vec::new(),
        }
    }

    /// Stops tracking every record of a topic (`held`) whose ownership was
    /// lost: no more `+WPI`s, and whatever the dispatcher still reports for
    /// them (`+ACK`, `+TERM`, `-NAK`) is not sent. The server redelivers
    /// them to the topic's owner once `ack_wait` has passed since the last
    /// `+WPI`, so that is when no delivery of this bus is outstanding.
    pub(crate) fn forget(&self, held: &Held) {
        let _ = self.tx.send(Command::Forget { topic: held.topic });
    }

    /// Sends `-NAK` for every record let go so far, in stream order. Call it
    /// once the pull loop of their topic has stopped.
    pub(crate) fn nak_released(&self) {
        let _ = self.tx.send(Command::NakReleased);
    }

    /// Lets go of every tracked record and `NAK`s them with the others let
    /// go, in stream order: the consumer's pull loops have stopped.
    pub(crate) fn release_all(&self) {
        let _ = self.tx.send(Command::ReleaseAll);
    }

    /// Resolves when every acknowledgement queued so far reached the server.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Records of one read from the pull inbox, tracked together when dropped.
pub(crate) struct Tracking<'a> {
    acker: &'a Acker,
    records: Vec<Tracked>,
}

impl Tracking<'_> {
    /// Tracks a delivered record; the returned acknowledgement goes with it
    /// to the dispatcher once this [`Tracking`] is dropped. `held` counts
    /// the record until it is acknowledged or let go.
    pub(crate) fn track(
        &mut self,
        reply: Subject,
        seq: u64,
        held: Arc<Held>,
    ) -> Box<dyn RecordAck> {
        let id = self.acker.next_id.fetch_add(1, Ordering::Relaxed);
        self.records.push(Tracked(id, reply, seq, held.topic));
        held.count.fetch_add(1, Ordering::AcqRel);
        Box::new(NatsRecordAck {
            id,
            tx: self.acker.tx.clone(),
            held,
            acked: false,
        })
    }
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            let _ = self.acker.tx.send(Command::Track(records));
        }
    }
}

/// The acknowledgement of one delivered record. Dropping it without
/// [`RecordAck::ack`] lets the record go (`-NAK`).
struct NatsRecordAck {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
    held: Arc<Held>,
    acked: bool,
}

/// Records of one topic delivered to the bus and not yet acknowledged or
/// let go, whether queued in the dispatcher's channel, in a key lane or
/// running. The topic's pull loop asks for more only while this is low, a
/// bound that holds however late a pause takes effect.
#[derive(Debug)]
pub(crate) struct Held {
    /// Tells the topics of the acknowledging task apart.
    topic: u64,
    count: AtomicUsize,
    /// Woken when a record is acknowledged or let go.
    pub(crate) freed: Notify,
}

impl Default for Held {
    fn default() -> Self {
        static TOPICS: AtomicU64 = AtomicU64::new(1);
        Held {
            topic: TOPICS.fetch_add(1, Ordering::Relaxed),
            count: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }
}

impl Held {
    /// Records held now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

impl fmt::Debug for NatsRecordAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsRecordAck")
            .field("id", &self.id)
            .finish()
    }
}

impl RecordAck for NatsRecordAck {
    fn ack(mut self: Box<Self>) {
        self.acked = true;
        let _ = self.tx.send(Command::Ack { id: self.id });
    }

    fn dead_lettered(mut self: Box<Self>) {
        self.acked = true;
        let _ = self.tx.send(Command::Term { id: self.id });
    }
}

impl Drop for NatsRecordAck {
    fn drop(&mut self) {
        if !self.acked {
            let _ = self.tx.send(Command::Release { id: self.id });
        }
        self.held.release();
    }
}

async fn run(client: Client, mut rx: mpsc::UnboundedReceiver<Command>, ack_wait: Duration) {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: HashMap<u64, Entry> = HashMap::default();
    let mut buf = Vec::with_capacity(1024);
    let mut released = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, 1024) => {
                if n == 0 {
                    // Everything is dropped, maybe the connection's last
                    // user too: make sure what was sent leaves first.
                    flush(&client).await;
                    return;
                }
                let mut nak_now = false;
                // One clock read per batch: progress only needs ack_wait / 3
                // precision.
                let now = Instant::now();
                for command in buf.drain(..) {
                    match command {
                        Command::Track(records) => {
                            pending.extend(records.into_iter().map(|Tracked(id, reply, seq, topic)| {
                                (id, Entry { reply, seq, topic, touched: now })
                            }));
                        }
                        Command::Ack { id } => {
                            if let Some(e) = pending.remove(&id) {
                                send(&client, e.reply, ACK).await;
                            }
                        }
                        Command::Term { id } => {
                            if let Some(e) = pending.remove(&id) {
                                send(&client, e.reply, TERM).await;
                            }
                        }
                        Command::Release { id } => {
                            if let Some(e) = pending.remove(&id) {
                                released.push(e);
                            }
                        }
                        Command::Forget { topic } => {
                            pending.retain(|_, e| e.topic != topic);
                            released.retain(|e| e.topic != topic);
                        }
                        Command::NakReleased => nak_now = true,
                        Command::ReleaseAll => {
                            released.extend(pending.drain().map(|(_, e)| e));
                            nak_now = true;
                        }
                        Command::Flush(done) => {
                            // NAKs asked for before the flush go out before
                            // it: a pin is released only once they are in.
                            if nak_now {
                                nak(&client, &mut released).await;
                                nak_now = false;
                            }
                            // Earlier commands are already queued on the
                            // connection; a flush round trip follows them.
                            let client = client.clone();
                            tokio::spawn(async move {
                                if let Err(e) = client.flush().await {
                                    tracing::debug!(error = %e, "flushing acknowledgements failed");
                                }
                                let _ = done.send(());
                            });
                        }
                    }
                }
                if nak_now {
                    nak(&client, &mut released).await;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for e in pending.values_mut() {
                    if now.duration_since(e.touched) >= every {
                        e.touched = now;
                        send(&client, e.reply.clone(), IN_PROGRESS).await;
                    }
                }
            }
        }
    }
}

/// `NAK`s the records let go, in stream order.
async fn nak(client: &Client, released: &mut Vec<Entry>) {
    if released.is_empty() {
        return;
    }
    released.sort_by_key(|e| e.seq);
    tracing::debug!(
        records = released.len(),
        "releasing unfinished records for redelivery"
    );
    for e in released.drain(..) {
        send(client, e.reply, NAK).await;
    }
    // The bus may be going away: the NAKs must reach the server before the
    // connection closes.
    flush(client).await;
}

/// How long the acknowledging task waits for the server to confirm a flush.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

async fn flush(client: &Client) {
    match tokio::time::timeout(FLUSH_WAIT, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "flushing acknowledgements failed"),
        Err(_) => tracing::debug!("flushing acknowledgements timed out"),
    }
}

async fn send(client: &Client, reply: Subject, what: &'static [u8]) {
    if let Err(e) = client.publish(reply, Bytes::from_static(what)).await {
        // Only a closed connection fails here; the server redelivers the
        // record after ack_wait, so nothing is lost.
        tracing::debug!(error = %e, "acknowledgement not sent");
    }
}
