//! Per-client outgoing queues.
//!
//! The engine pushes into a queue and returns at once: it never waits for a
//! client. Each queue is bounded. Session events coalesce (only the newest
//! unsent one matters), log lines are shed first, and a client that still
//! falls behind is cut off with a `SlowSubscriber` error instead of growing
//! the helper's memory or delaying anyone else.

use crate::events::{EncodedEvent, EventKind};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;
use warren_proto::ipc::{ErrorCode, IpcError};

/// What a queue may hold before its client counts as too slow.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        // Room for a full state of ~100,000 agents plus a burst of diffs.
        Self {
            max_items: 4096,
            max_bytes: 48 * 1024 * 1024,
        }
    }
}

/// An item to write to the client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An event; the writer wraps it with the connection's next `seq`.
    Event(EncodedEvent),
    /// A complete, already-encoded frame (a reply or an error).
    Frame(Vec<u8>),
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Event(e) => e.json.len(),
            Outgoing::Frame(f) => f.len(),
        }
    }
}

/// What the writer gets next.
#[derive(Debug)]
pub enum Next {
    Item(Outgoing),
    /// Nothing more will come; send the error, if any, and close.
    Closed(Option<IpcError>),
}

#[derive(Debug)]
enum Phase {
    Open,
    /// Drain what is queued, then close.
    Finishing,
    /// Drop what is queued, send the error, close.
    Aborted(Option<IpcError>),
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Outgoing>,
    bytes: usize,
    phase: Phase,
    subscribed: bool,
}

#[derive(Debug)]
pub struct SubscriberQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    /// Wakes a writer blocked on a client that stopped reading, so a cut-off
    /// takes effect at once rather than when the write times out.
    aborted: Notify,
    limits: QueueLimits,
}

impl SubscriberQueue {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                phase: Phase::Open,
                subscribed: false,
            }),
            notify: Notify::new(),
            aborted: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still
        // consistent enough to drain or drop; recover it instead of
        // propagating the poison to every other client.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item. Returns false if the queue is closed (the client is
    /// gone or was cut off) so the caller can forget it.
    pub fn push(&self, item: Outgoing) -> bool {
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::Open) {
            return false;
        }
        if let Outgoing::Event(e) = &item {
            match e.kind {
                EventKind::Session => {
                    // Latest wins: overwrite an unsent session event in place.
                    if let Some(pos) = inner.items.iter().position(
                        |i| matches!(i, Outgoing::Event(q) if q.kind == EventKind::Session),
                    ) {
                        let old = inner.items[pos].len();
                        inner.bytes = inner.bytes - old + item.len();
                        inner.items[pos] = item;
                        return true;
                    }
                }
                EventKind::Log => {
                    // Logs are the first thing to shed.
                    if inner.items.len() >= self.limits.max_items / 2 {
                        return true;
                    }
                }
                EventKind::StateStart | EventKind::Ordered => {}
            }
        }
        if inner.items.len() + 1 > self.limits.max_items
            || inner.bytes + item.len() > self.limits.max_bytes
        {
            inner.items.clear();
            inner.bytes = 0;
            inner.phase = Phase::Aborted(Some(IpcError::new(
                ErrorCode::SlowSubscriber,
                "this client fell too far behind the helper's updates and was disconnected; reconnect and subscribe again",
            )));
            drop(inner);
            self.notify.notify_one();
            self.aborted.notify_waiters();
            return false;
        }
        inner.bytes += item.len();
        inner.items.push_back(item);
        drop(inner);
        self.notify.notify_one();
        true
    }

    /// Queues an event (see [`Self::push`]).
    pub fn push_event(&self, event: &EncodedEvent) -> bool {
        self.push(Outgoing::Event(event.clone()))
    }

    /// Closes after what is queued has been written.
    pub fn finish(&self) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::Open) {
            inner.phase = Phase::Finishing;
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Drops what is queued and closes, sending `error` if given.
    pub fn abort(&self, error: Option<IpcError>) {
        let mut inner = self.lock();
        inner.items.clear();
        inner.bytes = 0;
        inner.phase = Phase::Aborted(error);
        drop(inner);
        self.notify.notify_one();
        self.aborted.notify_waiters();
    }

    /// Resolves once the queue has been aborted (cut off or client gone).
    pub async fn wait_aborted(&self) {
        let notified = self.aborted.notified();
        tokio::pin!(notified);
        // Register before checking, so an abort in between is not missed.
        notified.as_mut().enable();
        if matches!(self.lock().phase, Phase::Aborted(_)) {
            return;
        }
        notified.await;
    }

    pub fn is_closed(&self) -> bool {
        !matches!(self.lock().phase, Phase::Open)
    }

    /// Marks the client as subscribed (it receives events); returns false
    /// if it already was.
    pub fn set_subscribed(&self) -> bool {
        let mut inner = self.lock();
        !std::mem::replace(&mut inner.subscribed, true)
    }

    pub fn queued(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.items.len(), inner.bytes)
    }

    /// Waits for the next item to write.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut inner = self.lock();
                match &mut inner.phase {
                    Phase::Aborted(error) => return Next::Closed(error.take()),
                    Phase::Open | Phase::Finishing => {
                        if let Some(item) = inner.items.pop_front() {
                            inner.bytes -= item.len();
                            return Next::Item(item);
                        }
                        if matches!(inner.phase, Phase::Finishing) {
                            return Next::Closed(None);
                        }
                    }
                }
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, json: &str) -> EncodedEvent {
        EncodedEvent {
            kind,
            json: json.into(),
        }
    }

    fn expect_event(next: Next) -> EncodedEvent {
        match next {
            Next::Item(Outgoing::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn session_events_coalesce_in_place() {
        let q = SubscriberQueue::new(QueueLimits::default());
        q.push_event(&ev(EventKind::Session, "s1"));
        q.push_event(&ev(EventKind::Ordered, "d1"));
        q.push_event(&ev(EventKind::Session, "s2"));
        assert_eq!(q.queued().0, 2);
        assert_eq!(&*expect_event(q.next().await).json, "s2");
        assert_eq!(&*expect_event(q.next().await).json, "d1");
    }

    #[tokio::test]
    async fn overflow_cuts_the_client_off_with_a_reason() {
        let q = SubscriberQueue::new(QueueLimits {
            max_items: 3,
            max_bytes: 1 << 20,
        });
        assert!(q.push_event(&ev(EventKind::Ordered, "1")));
        assert!(q.push_event(&ev(EventKind::Ordered, "2")));
        assert!(q.push_event(&ev(EventKind::Ordered, "3")));
        assert!(!q.push_event(&ev(EventKind::Ordered, "4")));
        assert!(q.is_closed());
        match q.next().await {
            Next::Closed(Some(e)) => assert_eq!(e.code, ErrorCode::SlowSubscriber),
            other => panic!("{other:?}"),
        }
        assert!(!q.push_event(&ev(EventKind::Ordered, "5")));
    }

    #[tokio::test]
    async fn byte_limit_counts_too_and_logs_are_shed_first() {
        let q = SubscriberQueue::new(QueueLimits {
            max_items: 4,
            max_bytes: 10,
        });
        assert!(q.push_event(&ev(EventKind::Ordered, "12345")));
        assert!(q.push_event(&ev(EventKind::Ordered, "12")));
        // Half full by count: the log line is dropped, the queue stays open.
        assert!(q.push_event(&ev(EventKind::Log, "log")));
        assert_eq!(q.queued(), (2, 7));
        assert!(!q.push_event(&ev(EventKind::Ordered, "123456")));
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn finish_drains_then_closes() {
        let q = SubscriberQueue::new(QueueLimits::default());
        q.push(Outgoing::Frame(vec![1, 2, 3]));
        q.finish();
        assert!(matches!(q.next().await, Next::Item(Outgoing::Frame(_))));
        assert!(matches!(q.next().await, Next::Closed(None)));
    }

    #[tokio::test]
    async fn wait_aborted_wakes_on_overflow() {
        let q = std::sync::Arc::new(SubscriberQueue::new(QueueLimits {
            max_items: 1,
            max_bytes: 1 << 20,
        }));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_aborted().await });
        tokio::task::yield_now().await;
        q.push_event(&ev(EventKind::Ordered, "1"));
        assert!(!waiter.is_finished());
        q.push_event(&ev(EventKind::Ordered, "2"));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken by the cut-off")
            .unwrap();
        // Already aborted: returns at once.
        q.wait_aborted().await;
    }

    #[tokio::test]
    async fn next_waits_for_a_push() {
        let q = std::sync::Arc::new(SubscriberQueue::new(QueueLimits::default()));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { expect_event(q2.next().await) });
        tokio::task::yield_now().await;
        q.push_event(&ev(EventKind::Ordered, "later"));
        assert_eq!(&*waiter.await.unwrap().json, "later");
    }
}
