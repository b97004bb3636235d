//! Call observers, off the call path: the engine's [`CallEvent`]s are stamped with the wall
//! clock and handed to each observer's own bounded queue, drained by a thread of its own.
//! A full queue drops the event for that observer only (counted in
//! `switchboard_observer_dropped_total{observer}`, logged at most every 10 s): the SIP thread
//! never waits for a slow database or CRM.
//!
//! The switch's own observers live here: call records ([`Records`]) and digit metrics
//! ([`DigitMetrics`]); modules add theirs through the registry (the screenpop module's
//! webhooks to merchants' CRMs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use switchboard_core::module::{CallEvent, CallObserver, Stamped};
use switchboard_media::DtmfMethod;
use tracing::{error, warn};

use crate::storage::{CdrOp, Store};

/// Events an observer may lag behind by before its events are dropped.
pub const QUEUE: usize = 16_384;

/// Batches (one per round of the SIP loop) an observer may lag behind by.
const BATCHES: usize = 1024;

struct Sink {
    name: &'static str,
    /// Runs on the SIP thread (it only queues: see `CallObserver::inline`).
    inline: Option<Box<dyn CallObserver>>,
    interest: fn(&CallEvent) -> bool,
    /// For an observer of some calls only: the calls it follows.
    follows: Option<std::collections::HashSet<switchboard_core::CallRef>>,
    tx: Option<SyncSender<Vec<Stamped>>>,
    /// Events handed over and not yet handled by the observer.
    queued: Arc<AtomicUsize>,
    /// Events of this flush, sent together (one wake-up per flush, not per event).
    batch: Vec<Stamped>,
    dropped: u64,
    warned: Option<Instant>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The observers of a running switch.
pub struct Observers {
    sinks: Vec<Sink>,
    capacity: usize,
}

impl Observers {
    /// Starts a thread and a queue of `capacity` events per observer.
    pub fn start(list: Vec<Box<dyn CallObserver>>, capacity: usize) -> Observers {
        let sinks = list
            .into_iter()
            .map(|mut obs| {
                let name = obs.name();
                let interest = obs.interest();
                let follows = obs.per_call().then(Default::default);
                if obs.inline() {
                    return Sink {
                        name,
                        inline: Some(obs),
                        interest,
                        follows,
                        tx: None,
                        queued: Arc::default(),
                        batch: Vec::new(),
                        dropped: 0,
                        warned: None,
                        thread: None,
                    };
                }
                let queued = Arc::new(AtomicUsize::new(0));
                // Batches, each holding at least one event: the event bound is `queued`'s
                // (a sync_channel allocates its whole capacity up front).
                let (tx, rx): (SyncSender<Vec<Stamped>>, Receiver<Vec<Stamped>>) =
                    sync_channel(BATCHES);
                let left = queued.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("observer-{name}"))
                    .spawn(move || {
                        while let Ok(batch) = rx.recv() {
                            let n = batch.len();
                            for ev in &batch {
                                obs.on_event(ev);
                            }
                            left.fetch_sub(n, Ordering::Relaxed);
                        }
                    })
                    .map_err(
                        |e| error!(observer = name, error = %e, "cannot start observer thread"),
                    )
                    .ok();
                Sink {
                    name,
                    inline: None,
                    interest,
                    follows,
                    tx: thread.as_ref().map(|_| tx),
                    queued,
                    batch: Vec::new(),
                    dropped: 0,
                    warned: None,
                    thread,
                }
            })
            .collect();
        Observers { sinks, capacity }
    }

    /// Queues an event for every observer that wants it (sent at the next [`flush`]; an
    /// inline observer has it at once).
    ///
    /// [`flush`]: Observers::flush
    pub fn dispatch(&mut self, event: CallEvent) {
        let mut stamped: Option<Stamped> = None;
        for s in &mut self.sinks {
            if (s.tx.is_none() && s.inline.is_none()) || !s.wants(&event) {
                continue;
            }
            let ev = stamped.get_or_insert_with(|| Stamped {
                at_ms: jiff::Timestamp::now().as_millisecond(),
                event: event.clone(),
            });
            match s.inline.as_mut() {
                // It only queues: at once, no copy, no batch.
                Some(obs) => obs.on_event(ev),
                None => s.batch.push(ev.clone()),
            }
        }
    }

    /// Hands each observer what this round of the SIP loop queued for it (never blocks).
    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            if s.batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut s.batch);
            let Some(tx) = &s.tx else {
                continue;
            };
            let n = batch.len();
            if s.queued.load(Ordering::Relaxed) + n > self.capacity {
                s.drop_events(n);
                continue;
            }
            s.queued.fetch_add(n, Ordering::Relaxed);
            match tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    s.queued.fetch_sub(n, Ordering::Relaxed);
                    s.drop_events(n);
                }
                Err(TrySendError::Disconnected(_)) => {
                    error!(
                        observer = s.name,
                        "observer stopped (it panicked?): its events are dropped"
                    );
                    s.tx = None;
                }
            }
        }
    }

    /// `switchboard_observer_dropped_total`.
    pub fn metrics(&self, o: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            o,
            "# HELP switchboard_observer_dropped_total Call events an observer's full queue dropped.\n# TYPE switchboard_observer_dropped_total counter"
        );
        for s in &self.sinks {
            let _ = writeln!(
                o,
                "switchboard_observer_dropped_total{{observer=\"{}\"}} {}",
                s.name, s.dropped
            );
        }
    }

    /// Lets every observer finish its queue (at shutdown), waiting up to `limit` in all.
    pub fn close(&mut self, limit: Duration) {
        self.flush();
        let until = Instant::now() + limit;
        for s in &mut self.sinks {
            s.tx = None;
        }
        for s in &mut self.sinks {
            let Some(t) = s.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                warn!(observer = s.name, "observer still busy at exit");
            }
        }
    }
}

impl Sink {
    fn wants(&mut self, event: &CallEvent) -> bool {
        let wanted = (self.interest)(event);
        let Some(follows) = self.follows.as_mut() else {
            return wanted;
        };
        match event {
            CallEvent::Started { call, .. } => {
                if wanted {
                    follows.insert(*call);
                }
                wanted
            }
            CallEvent::Ended(summary) => follows.remove(&summary.id) && wanted,
            other => wanted && other.call().is_none_or(|c| follows.contains(&c)),
        }
    }

    fn drop_events(&mut self, n: usize) {
        self.dropped += n as u64;
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.warned = Some(now);
            warn!(
                observer = self.name,
                dropped = self.dropped,
                "observer queue full: events dropped"
            );
        }
    }
}

/// Call records: each event becomes a store operation.
pub struct Records(pub Store);

impl CallObserver for Records {
    fn name(&self) -> &'static str {
        "records"
    }

    fn inline(&self) -> bool {
        // `CallStore::record` queues for the store's writer thread and never blocks.
        true
    }

    fn interest(&self) -> fn(&CallEvent) -> bool {
        |ev| {
            !matches!(
                ev,
                CallEvent::Bridged { .. } | CallEvent::Digit { .. } | CallEvent::Action { .. }
            )
        }
    }

    fn on_event(&mut self, ev: &Stamped) {
        let at = ev.at_ms;
        let op = match &ev.event {
            CallEvent::Started {
                call,
                call_id,
                caller,
                destination,
                context,
                ..
            } => CdrOp::Start {
                call: call.0,
                call_id: call_id.to_string(),
                caller: caller.to_string(),
                destination: destination.to_string(),
                context: context.to_string(),
                at,
            },
            CallEvent::Ringing { call } => CdrOp::Ring { call: call.0, at },
            CallEvent::Answered { call, target } => CdrOp::Answer {
                call: call.0,
                target: target.clone(),
                at,
            },
            CallEvent::Ended(summary) => CdrOp::End {
                call: summary.id.0,
                at,
                summary: summary.clone(),
            },
            CallEvent::Leased { call, pool, item } => CdrOp::AniLeased {
                call: call.0,
                gateway: pool.clone(),
                number: item.clone(),
                at,
            },
            CallEvent::Released { pool, item } => CdrOp::AniReleased {
                gateway: pool.clone(),
                number: item.clone(),
                at,
            },
            CallEvent::Bridged { .. } | CallEvent::Digit { .. } | CallEvent::Action { .. } => {
                return;
            }
        };
        self.0.record(op);
    }
}

/// Digits seen, by how they came (rfc4733, info, inband), for `/metrics`.
#[derive(Debug, Default)]
pub struct DigitCounts(pub [AtomicU64; 3]);

/// Counts digits.
pub struct DigitMetrics(pub Arc<DigitCounts>);

impl CallObserver for DigitMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn interest(&self) -> fn(&CallEvent) -> bool {
        |ev| matches!(ev, CallEvent::Digit { .. })
    }

    fn on_event(&mut self, ev: &Stamped) {
        if let CallEvent::Digit { event, .. } = &ev.event {
            let i = match event.method {
                DtmfMethod::Rfc4733 => 0,
                DtmfMethod::Info => 1,
                DtmfMethod::Inband => 2,
            };
            self.0.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
