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

use crate::storage::{CallStart, CdrOp, Store};

/// Events an observer may lag behind by before its events are dropped.
pub const QUEUE: usize = 16_384;

/// Batches (one per round of the SIP loop) an observer may lag behind by.
const BATCHES: usize = 1024;

struct Sink {
    name: &'static str,
    interest: fn(&CallEvent) -> bool,
    /// For an observer of some calls only: the calls it follows (a fast hash: call ids are
    /// ours, not an attacker's).
    follows:
        Option<std::collections::HashSet<switchboard_core::CallRef, foldhash::fast::RandomState>>,
    delivery: Delivery,
    dropped: u64,
    warned: Option<Instant>,
}

/// How a sink's observer gets its events.
enum Delivery {
    /// On the SIP thread, at once (it only queues: see `CallObserver::inline`).
    Inline(Box<dyn CallObserver>),
    /// On a thread of its own, a batch per round of the SIP loop.
    Queued(Queue),
    /// Its thread is gone (it could not start, or it panicked).
    Stopped,
}

struct Queue {
    tx: SyncSender<Vec<Stamped>>,
    /// Events handed over and not yet handled by the observer.
    queued: Arc<AtomicUsize>,
    /// Events of this flush, sent together (one wake-up per flush, not per event).
    batch: Vec<Stamped>,
    thread: std::thread::JoinHandle<()>,
}

/// The observers of a running switch.
pub struct Observers {
    sinks: Vec<Sink>,
    capacity: usize,
}

impl Observers {
    /// Starts a thread and a queue of `capacity` events per observer (but the inline ones).
    pub fn start(list: Vec<Box<dyn CallObserver>>, capacity: usize) -> Observers {
        let sinks = list
            .into_iter()
            .map(|obs| Sink {
                name: obs.name(),
                interest: obs.interest(),
                follows: obs.per_call().then(Default::default),
                delivery: if obs.inline() {
                    Delivery::Inline(obs)
                } else {
                    spawn(obs)
                },
                dropped: 0,
                warned: None,
            })
            .collect();
        Observers { sinks, capacity }
    }

    /// Queues an event for every observer that wants it (sent at the next [`flush`]; an
    /// inline observer has it at once).
    ///
    /// [`flush`]: Observers::flush
    pub fn dispatch(&mut self, event: CallEvent) {
        // Stamped (and moved, not copied) for the first observer that wants it.
        let mut pending = Some(event);
        let mut stamped: Option<Stamped> = None;
        for s in &mut self.sinks {
            let Some(event) = stamped.as_ref().map(|st| &st.event).or(pending.as_ref()) else {
                break;
            };
            if matches!(s.delivery, Delivery::Stopped) || !s.wants(event) {
                continue;
            }
            if let Some(event) = pending.take() {
                stamped = Some(Stamped {
                    at_ms: jiff::Timestamp::now().as_millisecond(),
                    event,
                });
            }
            let Some(ev) = stamped.as_ref() else {
                break;
            };
            match &mut s.delivery {
                // It only queues: at once, no copy, no batch.
                Delivery::Inline(obs) => obs.on_event(ev),
                Delivery::Queued(q) => q.batch.push(ev.clone()),
                Delivery::Stopped => {}
            }
        }
    }

    /// Hands each observer what this round of the SIP loop queued for it (never blocks).
    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            let Delivery::Queued(q) = &mut s.delivery else {
                continue;
            };
            if q.batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut q.batch);
            let n = batch.len();
            if q.queued.load(Ordering::Relaxed) + n > self.capacity {
                s.drop_events(n);
                continue;
            }
            q.queued.fetch_add(n, Ordering::Relaxed);
            match q.tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    q.queued.fetch_sub(n, Ordering::Relaxed);
                    s.drop_events(n);
                }
                Err(TrySendError::Disconnected(_)) => {
                    error!(
                        observer = s.name,
                        "observer stopped (it panicked?): its events are dropped"
                    );
                    s.delivery = Delivery::Stopped;
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
        let threads: Vec<(&'static str, std::thread::JoinHandle<()>)> = self
            .sinks
            .iter_mut()
            .filter_map(
                |s| match std::mem::replace(&mut s.delivery, Delivery::Stopped) {
                    // Dropping the sender ends the thread once its queue is done.
                    Delivery::Queued(q) => Some((s.name, q.thread)),
                    Delivery::Inline(_) | Delivery::Stopped => None,
                },
            )
            .collect();
        for (name, t) in threads {
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                warn!(observer = name, "observer still busy at exit");
            }
        }
    }
}

/// An observer on a thread of its own, fed batches through a bounded channel.
fn spawn(mut obs: Box<dyn CallObserver>) -> Delivery {
    let name = obs.name();
    let queued = Arc::new(AtomicUsize::new(0));
    // Batches, each holding at least one event: the event bound is `queued`'s (a
    // sync_channel allocates its whole capacity up front).
    let (tx, rx): (SyncSender<Vec<Stamped>>, Receiver<Vec<Stamped>>) = sync_channel(BATCHES);
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
        });
    match thread {
        Ok(thread) => Delivery::Queued(Queue {
            tx,
            queued,
            batch: Vec::new(),
            thread,
        }),
        Err(e) => {
            error!(observer = name, error = %e, "cannot start observer thread");
            Delivery::Stopped
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
        |ev| !matches!(ev, CallEvent::Bridged { .. } | CallEvent::Digit { .. })
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
                source,
                ..
            } => CdrOp::Start(CallStart {
                call: call.0,
                call_id: call_id.clone(),
                caller: caller.clone(),
                destination: destination.clone(),
                context: context.clone(),
                source: source.clone(),
                at,
            }),
            CallEvent::Ringing { call } => CdrOp::Ring { call: call.0, at },
            CallEvent::Answered {
                call,
                target,
                b_call_id,
                codecs,
            } => CdrOp::Answer {
                call: call.0,
                target: target.clone(),
                b_call_id: b_call_id.clone(),
                codecs: codecs.clone(),
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
            CallEvent::Action {
                call,
                name,
                result,
                ok,
                code,
                detail,
            } => CdrOp::Action {
                call: call.0,
                at,
                action: Box::new(crate::storage::ActionRecord {
                    name: name.clone(),
                    code: code.clone(),
                    detail: detail.clone(),
                    ok: *ok,
                    result: result.clone(),
                }),
            },
            CallEvent::Chat {
                call,
                from,
                agent,
                text,
            } => CdrOp::Chat {
                call: call.0,
                at,
                line: Box::new(crate::storage::ChatLine {
                    from: (*from).into(),
                    agent: agent.clone(),
                    text: text.clone(),
                }),
            },
            CallEvent::Bridged { .. } | CallEvent::Digit { .. } => return,
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
