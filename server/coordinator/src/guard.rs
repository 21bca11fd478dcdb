//! What keeps `serve` answering under a flood: connection limits (per source
//! address and in total), the per-connection timers of connections that are
//! not WebSockets, and the throttle on failed authentications. The parts are
//! plain data structures with the clock passed in, so their rules are tested
//! without sockets; `serve` wires them to the listener.
//!
//! A "source" is an IPv4 address or an IPv6 /64: one IPv6 host usually has a
//! whole /64 to pick addresses from.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Most keys the throttle tracks; beyond it, those whose buckets have
/// refilled are forgotten first.
const MAX_TRACKED_SOURCES: usize = 100_000;

/// How many evicted connections may still be closing before a new one is
/// refused instead of evicting yet another: bounds how far the descriptor
/// count can overshoot the global cap while evicted tasks wind down.
const EVICTION_SLACK: usize = 64;

/// The source a peer address counts against.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves only counters behind,
    // which stay usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Failed authentications

/// What failed authentications are counted against: a source, and the id
/// of the token tried (`None` for malformed tokens and ids that don't
/// exist, so that spraying made-up ids shares one bucket).
pub type ThrottleKey = (IpAddr, Option<String>);

/// A token bucket per [`ThrottleKey`]: every failed authentication takes a
/// token, tokens come back at a steady rate, and a key with no token left
/// gets 429 before its token is even looked at. Successes cost nothing. A
/// token's owner elsewhere has buckets of their own, and so does every other
/// token used from the guessing address, so guessing one token's secret
/// locks out neither the token nor the address's other users; only that
/// token from that address waits.
pub struct AuthThrottle {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<ThrottleKey, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AuthThrottle {
    /// `burst` failures at once, then `per_minute` a minute. A `burst` of 0
    /// turns the throttle off.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &Bucket, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + secs * self.per_second).min(self.burst)
    }

    /// `Some(wait)` when `key` must wait before another try.
    pub fn check(&self, key: &ThrottleKey, now: Instant) -> Option<Duration> {
        if self.burst == 0.0 {
            return None;
        }
        let buckets = lock(&self.buckets);
        let b = buckets.get(key)?;
        let tokens = self.refill(b, now);
        if tokens >= 1.0 {
            return None;
        }
        // Whole seconds, rounded up, as Retry-After carries them.
        let wait = ((1.0 - tokens) / self.per_second).ceil().max(1.0);
        Some(Duration::from_secs(wait as u64))
    }

    /// Records a failed authentication. True when this one used up the
    /// key's last token (worth one log line).
    pub fn failed(&self, key: ThrottleKey, now: Instant) -> bool {
        if self.burst == 0.0 {
            return false;
        }
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED_SOURCES {
            buckets.retain(|_, b| self.refill(b, now) < self.burst);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                // Every tracked source is still throttled: keep them rather
                // than forget one mid-penalty.
                return false;
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = (self.refill(b, now) - 1.0).max(0.0);
        *b = Bucket { tokens, at: now };
        tokens < 1.0
    }

    /// How many sources are tracked (for tests).
    pub fn tracked(&self) -> usize {
        lock(&self.buckets).len()
    }
}

// ---------------------------------------------------------------------------
// Connection limits

/// Connection limits of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections in total (WebSockets included): below the process's
    /// descriptor limit.
    pub global: usize,
    /// Connections from one source that are not (yet) WebSockets. A
    /// WebSocket needed a valid token, so it no longer counts here: a large
    /// office behind one NAT address is fine.
    pub per_source: usize,
}

/// A connection let in: its slots, its timers, and whether an older
/// waiting connection was told to make room for it.
pub struct Admitted {
    pub fd: FdSlot,
    pub http: HttpSlot,
    pub watch: Arc<ConnWatch>,
    pub evicted_another: bool,
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerSource,
    Global,
}

/// Counts connections and picks which waiting connection gives way when a
/// limit is reached: the oldest one of the same source (per-source limit) or
/// the oldest of all (global limit) that is still waiting for a request, so
/// idle and half-sent connections make room for clients that talk.
pub struct ConnLimiter {
    limits: ConnLimits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    total: usize,
    /// HTTP-phase connections per source.
    per_source: HashMap<IpAddr, usize>,
    /// HTTP-phase connections by age.
    http: BTreeMap<u64, Arc<ConnWatch>>,
    next_id: u64,
    /// Evicted connections that have not closed yet.
    evicting: usize,
}

/// One open connection's share of the limits: the descriptor slot lives as
/// long as the socket (it travels inside the stream, into a WebSocket), the
/// HTTP slot until [`HttpSlot`] is dropped.
pub struct FdSlot {
    limiter: Arc<ConnLimiter>,
    watch: Arc<ConnWatch>,
}

impl Drop for FdSlot {
    fn drop(&mut self) {
        let mut inner = lock(&self.limiter.inner);
        inner.total = inner.total.saturating_sub(1);
        if self.watch.evicted.load(Ordering::Relaxed) {
            inner.evicting = inner.evicting.saturating_sub(1);
        }
    }
}

/// The HTTP phase of a connection: counted against its source and open to
/// eviction until the connection closes or becomes a WebSocket.
pub struct HttpSlot {
    limiter: Arc<ConnLimiter>,
    watch: Arc<ConnWatch>,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let mut inner = lock(&self.limiter.inner);
        if inner.http.remove(&self.watch.id).is_some() {
            let source = self.watch.source;
            if let Some(n) = inner.per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    inner.per_source.remove(&source);
                }
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Admits a new connection from `source` at `now`, evicting a waiting
    /// one if a limit is reached, or says why not.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let mut inner = lock(&self.inner);
        let mut evicted_another = false;
        let from_source = inner.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.per_source {
            if !Self::evict(&mut inner, |w| w.source == source) {
                return Err(Refusal::PerSource);
            }
            evicted_another = true;
        }
        if inner.total - inner.evicting.min(inner.total) >= self.limits.global {
            if !Self::evict(&mut inner, |_| true) {
                return Err(Refusal::Global);
            }
            evicted_another = true;
        }
        inner.total += 1;
        *inner.per_source.entry(source).or_insert(0) += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let watch = Arc::new(ConnWatch::new(id, source, now));
        inner.http.insert(id, watch.clone());
        drop(inner);
        Ok(Admitted {
            fd: FdSlot {
                limiter: self.clone(),
                watch: watch.clone(),
            },
            http: HttpSlot {
                limiter: self.clone(),
                watch: watch.clone(),
            },
            watch,
            evicted_another,
        })
    }

    /// Tells the oldest waiting connection that matches to close. Its slots
    /// stay taken until its task drops them; `evicting` lets a new
    /// connection have the slot meanwhile, up to [`EVICTION_SLACK`].
    fn evict(inner: &mut Inner, matches: impl Fn(&ConnWatch) -> bool) -> bool {
        if inner.evicting >= EVICTION_SLACK {
            return false;
        }
        let victim = inner
            .http
            .values()
            .find(|w| matches(w) && w.is_waiting() && !w.evicted.load(Ordering::Relaxed))
            .cloned();
        let Some(victim) = victim else {
            return false;
        };
        victim.evicted.store(true, Ordering::Relaxed);
        victim.evict.notify_one();
        inner.evicting += 1;
        // The victim leaves the per-source count and the eviction list now,
        // so the slot it held is the newcomer's at once.
        inner.http.remove(&victim.id);
        if let Some(n) = inner.per_source.get_mut(&victim.source) {
            *n -= 1;
            if *n == 0 {
                inner.per_source.remove(&victim.source);
            }
        }
        true
    }

    /// Open connections in total, and those still in their HTTP phase.
    pub fn counts(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.total, inner.http.len())
    }

    /// Tells every connection still in its HTTP phase to close (shutdown).
    pub fn close_http(&self) {
        let inner = lock(&self.inner);
        for w in inner.http.values() {
            w.evict.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------
// Per-connection timers

/// What the timers of one connection in its HTTP phase know: whether it is
/// waiting for a request, since when, and when the first byte of that
/// request arrived. The stream wrapper and the service update it; the
/// connection's task reads it to decide when to give up.
pub struct ConnWatch {
    id: u64,
    source: IpAddr,
    base: Instant,
    waiting: AtomicBool,
    /// Milliseconds since `base`.
    waiting_since: AtomicU64,
    /// Milliseconds since `base`, plus one; 0 while no byte has come.
    head_started: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
}

/// Why a connection's timers closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request began within the idle timeout.
    Idle,
    /// A request began but its head did not complete in time.
    Header,
    /// Made room for a newer connection.
    Evicted,
    /// The server is stopping.
    Shutdown,
}

impl ConnWatch {
    fn new(id: u64, source: IpAddr, now: Instant) -> Self {
        Self {
            id,
            source,
            base: now,
            waiting: AtomicBool::new(true),
            waiting_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Bytes arrived.
    pub fn on_read(&self, now: Instant) {
        if self.is_waiting() && self.head_started.load(Ordering::Relaxed) == 0 {
            self.head_started.store(self.ms(now) + 1, Ordering::Relaxed);
        }
    }

    /// A complete request head arrived and is being served.
    pub fn request_started(&self) {
        self.waiting.store(false, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// The response is on its way; the connection waits for the next request.
    pub fn request_done(&self, now: Instant) {
        self.waiting_since.store(self.ms(now), Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// When the timers next need a look, or why the connection is over.
    pub fn deadline(
        &self,
        now: Instant,
        idle: Duration,
        header: Duration,
    ) -> Result<Instant, Expiry> {
        if self.evicted.load(Ordering::Relaxed) {
            return Err(Expiry::Evicted);
        }
        if !self.is_waiting() {
            // A request is being served; look again later.
            return Ok(now + idle);
        }
        let (from, limit, expiry) = match self.head_started.load(Ordering::Relaxed) {
            0 => (
                self.waiting_since.load(Ordering::Relaxed),
                idle,
                Expiry::Idle,
            ),
            started => (started - 1, header, Expiry::Header),
        };
        let at = self.base + Duration::from_millis(from) + limit;
        if at <= now {
            Err(expiry)
        } else {
            Ok(at)
        }
    }

    /// Runs until the connection must close: a timeout, an eviction, or a
    /// shutdown (also delivered as an eviction).
    pub async fn expired(&self, idle: Duration, header: Duration) -> Expiry {
        loop {
            let now = Instant::now();
            match self.deadline(now, idle, header) {
                Err(why) => return why,
                Ok(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = self.evict.notified() => {
                            return if self.evicted.load(Ordering::Relaxed) {
                                Expiry::Evicted
                            } else {
                                Expiry::Shutdown
                            };
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Rate-limited logging

/// Counts events and says when one log line is due: at most one per
/// `every`, carrying how many happened since the last.
pub struct LogEvery {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; `Some(n)` when a line is due for `n` events.
    pub fn tick(&self, now: Instant) -> Option<u64> {
        let mut s = lock(&self.state);
        s.1 += 1;
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => None,
            _ => {
                let n = s.1;
                *s = (Some(now), 0);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_group_ipv6_by_64_and_unmap_ipv4() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_of(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    fn key(a: &str, id: Option<&str>) -> ThrottleKey {
        (ip(a), id.map(str::to_string))
    }

    #[test]
    fn throttle_lets_a_burst_through_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let th = AuthThrottle::new(3, 6); // one token every 10 s
        let a = key("192.0.2.1", Some("0123456789abcdef"));
        for i in 0..3 {
            assert_eq!(th.check(&a, t0), None, "attempt {i}");
            assert_eq!(th.failed(a.clone(), t0), i == 2);
        }
        assert_eq!(th.check(&a, t0), Some(Duration::from_secs(10)));
        assert_eq!(
            th.check(&a, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(th.check(&a, t0 + Duration::from_secs(10)), None);
        // One more failure after the refill spends that one token again.
        assert!(th.failed(a.clone(), t0 + Duration::from_secs(10)));
        assert!(th.check(&a, t0 + Duration::from_secs(11)).is_some());
        // Full again after burst × interval.
        let later = t0 + Duration::from_secs(40);
        for _ in 0..2 {
            assert!(!th.failed(a.clone(), later));
        }
    }

    #[test]
    fn guessing_one_token_locks_out_neither_its_owner_nor_the_address() {
        let t0 = Instant::now();
        let th = AuthThrottle::new(2, 1);
        let id = Some("0123456789abcdef");
        let guessed = key("192.0.2.1", id);
        th.failed(guessed.clone(), t0);
        th.failed(guessed.clone(), t0);
        assert!(th.check(&guessed, t0).is_some());
        // The owner elsewhere never failed: not throttled, not even tracked.
        assert_eq!(th.check(&key("198.51.100.7", id), t0), None);
        assert_eq!(th.tracked(), 1);
        // Another token from the guessing address is unaffected too.
        assert_eq!(
            th.check(&key("192.0.2.1", Some("fedcba9876543210")), t0),
            None
        );
        // Made-up ids share one bucket per address.
        th.failed(key("192.0.2.1", None), t0);
        th.failed(key("192.0.2.1", None), t0);
        assert!(th.check(&key("192.0.2.1", None), t0).is_some());
        // IPv6 neighbours in one /64 share their buckets (after source_of).
        let v6a = (source_of(ip("2001:db8::1")), None);
        let v6b = (source_of(ip("2001:db8::2")), None);
        th.failed(v6a.clone(), t0);
        th.failed(v6a, t0);
        assert!(th.check(&v6b, t0).is_some());
    }

    #[test]
    fn throttle_off_with_zero_burst() {
        let th = AuthThrottle::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(!th.failed(key("192.0.2.1", None), t0));
        }
        assert_eq!(th.check(&key("192.0.2.1", None), t0), None);
    }

    #[test]
    fn per_source_limit_evicts_that_sources_oldest_waiting_connection() {
        let now = Instant::now();
        let lim = ConnLimiter::new(ConnLimits {
            global: 100,
            per_source: 2,
        });
        let a = ip("192.0.2.1");
        let c1 = lim.admit(a, now).unwrap();
        let c2 = lim.admit(a, now).unwrap();
        assert!(!c2.evicted_another);
        let (w1, w2) = (&c1.watch, &c2.watch);
        // The first is busy with a request: the second gives way.
        w1.request_started();
        let c3 = lim.admit(a, now).unwrap();
        assert!(c3.evicted_another);
        let w3 = &c3.watch;
        assert!(w2.evicted.load(Ordering::Relaxed));
        assert!(!w1.evicted.load(Ordering::Relaxed));
        // Nobody left to evict from this source: refused. Others are fine.
        w3.request_started();
        assert_eq!(lim.admit(a, now).err(), Some(Refusal::PerSource));
        assert!(lim.admit(ip("192.0.2.2"), now).is_ok());
    }

    #[test]
    fn global_limit_evicts_the_oldest_waiting_then_refuses() {
        let now = Instant::now();
        let lim = ConnLimiter::new(ConnLimits {
            global: 2,
            per_source: 10,
        });
        let c1 = lim.admit(ip("192.0.2.1"), now).unwrap();
        let c2 = lim.admit(ip("192.0.2.2"), now).unwrap();
        c2.watch.request_started();
        let c3 = lim.admit(ip("192.0.2.3"), now).unwrap();
        assert_eq!(
            c1.watch.deadline(now, Duration::ZERO, Duration::ZERO),
            Err(Expiry::Evicted)
        );
        // The evicted connection closes: its descriptor slot is given back.
        drop(c1);
        assert_eq!(lim.counts(), (2, 2));
        // A WebSocket leaves the HTTP phase but keeps its descriptor.
        let Admitted { fd: _fd2, http, .. } = c2;
        drop(http);
        c3.watch.request_started();
        assert_eq!(lim.counts(), (2, 1));
        assert_eq!(lim.admit(ip("192.0.2.4"), now).err(), Some(Refusal::Global));
    }

    #[test]
    fn eviction_slack_bounds_the_overshoot() {
        let now = Instant::now();
        let lim = ConnLimiter::new(ConnLimits {
            global: 1,
            per_source: 1000,
        });
        let mut held = Vec::new();
        for i in 0..200 {
            match lim.admit(ip("192.0.2.1"), now) {
                Ok(s) => held.push(s),
                Err(r) => {
                    assert_eq!(r, Refusal::Global);
                    assert_eq!(i, EVICTION_SLACK + 1);
                    break;
                }
            }
        }
        assert_eq!(lim.counts().0, EVICTION_SLACK + 1);
    }

    #[test]
    fn timers_close_idle_and_half_sent_connections() {
        let t0 = Instant::now();
        let w = ConnWatch::new(0, ip("192.0.2.1"), t0);
        let (idle, header) = (Duration::from_secs(3), Duration::from_secs(8));
        assert_eq!(w.deadline(t0, idle, header), Ok(t0 + idle));
        assert_eq!(w.deadline(t0 + idle, idle, header), Err(Expiry::Idle));
        // A first byte at 1 s: the head has until 9 s, however it trickles.
        w.on_read(t0 + Duration::from_secs(1));
        w.on_read(t0 + Duration::from_secs(6));
        assert_eq!(
            w.deadline(t0 + Duration::from_secs(6), idle, header),
            Ok(t0 + Duration::from_secs(9))
        );
        assert_eq!(
            w.deadline(t0 + Duration::from_secs(9), idle, header),
            Err(Expiry::Header)
        );
        // Served requests don't time out; after the response the idle timer
        // starts again.
        w.request_started();
        assert!(w
            .deadline(t0 + Duration::from_secs(60), idle, header)
            .is_ok());
        w.request_done(t0 + Duration::from_secs(60));
        assert_eq!(
            w.deadline(t0 + Duration::from_secs(62), idle, header),
            Ok(t0 + Duration::from_secs(63))
        );
    }

    #[test]
    fn log_lines_are_rate_limited_and_count_what_they_skipped() {
        let t0 = Instant::now();
        let l = LogEvery::new(Duration::from_secs(10));
        assert_eq!(l.tick(t0), Some(1));
        for _ in 0..999 {
            assert_eq!(l.tick(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(l.tick(t0 + Duration::from_secs(10)), Some(1000));
    }
}
