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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use switchboard_core::module::{CallEvent, CallObserver, Stamped};
use switchboard_media::DtmfMethod;
use tracing::{error, warn};

use crate::storage::{CdrOp, Store};

/// Events an observer may lag behind by before its events are dropped.
pub const QUEUE: usize = 16_384;

struct Sink {
    name: &'static str,
    tx: Option<SyncSender<Stamped>>,
    dropped: u64,
    warned: Option<Instant>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The observers of a running switch.
pub struct Observers {
    sinks: Vec<Sink>,
}

impl Observers {
    /// Starts a thread and a queue of `capacity` events per observer.
    pub fn start(list: Vec<Box<dyn CallObserver>>, capacity: usize) -> Observers {
        let sinks = list
            .into_iter()
            .map(|mut obs| {
                let name = obs.name();
                let (tx, rx): (SyncSender<Stamped>, Receiver<Stamped>) = sync_channel(capacity);
                let thread = std::thread::Builder::new()
                    .name(format!("observer-{name}"))
                    .spawn(move || {
                        while let Ok(ev) = rx.recv() {
                            obs.on_event(&ev);
                        }
                    })
                    .map_err(
                        |e| error!(observer = name, error = %e, "cannot start observer thread"),
                    )
                    .ok();
                Sink {
                    name,
                    tx: thread.as_ref().map(|_| tx),
                    dropped: 0,
                    warned: None,
                    thread,
                }
            })
            .collect();
        Observers { sinks }
    }

    /// Hands an event to every observer (never blocks).
    pub fn dispatch(&mut self, event: CallEvent) {
        let stamped = Stamped {
            at_ms: jiff::Timestamp::now().as_millisecond(),
            event,
        };
        for s in &mut self.sinks {
            let Some(tx) = &s.tx else {
                continue;
            };
            match tx.try_send(stamped.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    s.dropped += 1;
                    let now = Instant::now();
                    if s.warned
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                    {
                        s.warned = Some(now);
                        warn!(
                            observer = s.name,
                            dropped = s.dropped,
                            "observer queue full: events dropped"
                        );
                    }
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

/// Call records: each event becomes a store operation.
pub struct Records(pub Store);

impl CallObserver for Records {
    fn name(&self) -> &'static str {
        "records"
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
                summary: Box::new((**summary).clone()),
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
