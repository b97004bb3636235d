//! The writer thread: the only connection that writes, so the SIP thread never waits on a
//! disk and SQLite never sees two writers.
//!
//! Changes are batched: what arrives within [`BATCH`] of the first change goes into one
//! transaction (at thousands of calls a second, one commit per change would not keep up).
//! A call's start, ring and answer are held in [`Pending`]: a call that ends within [`HOLD`]
//! is one INSERT of its whole record; a longer one is inserted at [`HOLD`] with what is known
//! (so a crash still leaves it, its answer time, its billing) and completed by one UPDATE at
//! its end. Anything that needs the row (an action, a chat line, a leased ANI) writes it
//! first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, params};
use switchboard_core::{CallSummary, Side};
use tracing::error;

use crate::{CallStart, CdrOp, WebRecord};

/// How long ring and answer times may wait for the call's end before they are written.
const HOLD: Duration = Duration::from_millis(500);

/// How long changes gather before a commit (what a crash may lose at most).
const BATCH: Duration = Duration::from_millis(20);

/// Changes in one transaction at most.
const BATCH_MAX: usize = 5000;

/// How often the writer records that the process is alive: a record a crash interrupts
/// ends at the last heartbeat (at most this much before the crash), not at the restart.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long an ended call's row is remembered for its media quality (calls without media
/// never send one).
const QUALITY_WAIT: Duration = Duration::from_secs(10);

/// How often ended calls past [`QUALITY_WAIT`] are forgotten.
const SWEEP: Duration = Duration::from_secs(1);

/// Ring and answer times not written yet: most calls of a busy switch end within a second,
/// and their times then go out with the end in one statement. Older ones are flushed after
/// [`HOLD`] so a record interrupted by a crash still has its answer time (its billing).
#[derive(Default)]
struct Pending {
    /// The start, while the row is not written.
    start: Option<CallStart>,
    ring: Option<i64>,
    answer: Option<Answered>,
    since: Option<Instant>,
}

/// What the answer tells the record: written with the end, or on its own after [`HOLD`]
/// (a crash then still leaves the billing, leg B's Call-ID and the codecs).
struct Answered {
    at: i64,
    target: Option<String>,
    b_call_id: Option<String>,
    codecs: [Option<String>; 2],
}

/// What the writer knows between batches.
#[derive(Default)]
pub(crate) struct Writer {
    /// Switch-local call id -> row id, for the calls in progress.
    rows: HashMap<u64, i64>,
    /// Times not written yet, by call.
    pending: HashMap<u64, Pending>,
    /// Ended calls whose media quality may still come: call -> (row id, when it ended).
    ended: HashMap<u64, (i64, Instant)>,
    /// When `ended` was last swept of calls past [`QUALITY_WAIT`].
    swept: Option<Instant>,
}

/// Runs the writer until every [`SqliteStore`](crate::SqliteStore) handle is gone.
pub(crate) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<CdrOp>,
    queued: &AtomicUsize,
    path: &Path,
    retention: crate::Retention,
) {
    let mut w = Writer::default();
    let mut beat: Option<Instant> = None;
    // The first pass right away; a full batch asks for the next at once.
    let mut prune_at = (!retention.forever()).then(Instant::now);
    while let Ok(first) = first(&rx, w.idle()) {
        let tx = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                error!(path = %path.display(), error = %e, "call records: cannot write");
                queued.fetch_sub(usize::from(first.is_some()), Ordering::Relaxed);
                continue;
            }
        };
        let taken = w.batch(&tx, first, &rx);
        queued.fetch_sub(taken, Ordering::Relaxed);
        if beat.is_none_or(|b| b.elapsed() >= HEARTBEAT) {
            match heartbeat(&tx, crate::time::now_ms()) {
                Ok(()) => beat = Some(Instant::now()),
                Err(e) => error!(error = %e, "call records: heartbeat not written"),
            }
        }
        if prune_at.is_some_and(|at| at <= Instant::now()) {
            prune_at = match crate::retention::prune(&tx, &retention, crate::time::now_ms()) {
                Ok(n) if n >= crate::retention::BATCH => Some(Instant::now()),
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(records = n, "call records past their retention deleted");
                    }
                    Some(Instant::now() + crate::retention::EVERY)
                }
                Err(e) => {
                    error!(error = %e, "call records: retention pass failed");
                    Some(Instant::now() + crate::retention::EVERY)
                }
            };
        }
        if let Err(e) = tx.commit() {
            error!(path = %path.display(), error = %e, "call records: commit failed");
        }
    }
}

/// The first change of a batch. With nothing held it waits for one up to the next
/// [`HEARTBEAT`]; with times held or qualities awaited, at most `HOLD / 2` (`None`: a batch
/// of flushing, or of the heartbeat, only). `Err`: the store is gone.
fn first(rx: &mpsc::Receiver<CdrOp>, idle: bool) -> Result<Option<CdrOp>, mpsc::RecvError> {
    match rx.recv_timeout(if idle { HEARTBEAT } else { HOLD / 2 }) {
        Ok(op) => Ok(Some(op)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(mpsc::RecvError),
    }
}

impl Writer {
    /// Nothing held: the writer may sleep until the next change.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.ended.is_empty()
    }

    /// One transaction's work: `first` and what follows within [`BATCH`] (up to
    /// [`BATCH_MAX`]), then the times held too long. How many changes it took.
    fn batch(
        &mut self,
        tx: &Transaction<'_>,
        first: Option<CdrOp>,
        rx: &mpsc::Receiver<CdrOp>,
    ) -> usize {
        let deadline = Instant::now() + BATCH;
        let mut op = first;
        let (mut n, mut slept) = (0, false);
        while let Some(o) = op.take() {
            if let Err(e) = self.apply(tx, o) {
                error!(error = %e, "call record not written");
            }
            n += 1;
            if n >= BATCH_MAX {
                break;
            }
            op = match rx.try_recv() {
                Ok(o) => Some(o),
                // Caught up: sleep (not wait on the channel) until the batch closes, then
                // take what queued meanwhile. Nobody waits on the channel then, so a change
                // sent during the batch wakes no thread: the SIP thread's sends stay out of
                // the kernel (a wake-up per change cost both threads at thousands of calls a
                // second).
                Err(mpsc::TryRecvError::Empty) if !slept => {
                    slept = true;
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    rx.try_recv().ok()
                }
                Err(_) => None,
            };
        }
        let now = Instant::now();
        if let Err(e) = self.flush_old(tx, now) {
            error!(error = %e, "call record times not written");
        }
        // Forgetting ended calls walks every one of them (tens of thousands at a few thousand
        // calls a second): once a second is enough, with one clock reading.
        if self.swept.is_none_or(|s| now.duration_since(s) >= SWEEP) {
            self.ended
                .retain(|_, (_, at)| now.duration_since(*at) < QUALITY_WAIT);
            self.swept = Some(now);
        }
        n
    }

    /// Writes (or holds) one change.
    pub(crate) fn apply(&mut self, tx: &Transaction<'_>, op: CdrOp) -> rusqlite::Result<()> {
        match op {
            CdrOp::Start(start) => {
                let call = start.call;
                self.hold(call).start = Some(start);
            }
            CdrOp::Web(w) => web(tx, &w)?,
            CdrOp::Ring { call, at } => {
                let p = self.hold(call);
                p.ring.get_or_insert(at);
            }
            CdrOp::Answer {
                call,
                target,
                b_call_id,
                codecs,
                at,
            } => {
                self.hold(call).answer = Some(Answered {
                    at,
                    target,
                    b_call_id,
                    codecs,
                })
            }
            CdrOp::End { call, at, summary } => self.end(tx, call, at, &summary)?,
            CdrOp::AniLeased {
                call,
                gateway,
                number,
                at,
            } => self.ani_leased(tx, call, &gateway, &number, at)?,
            CdrOp::AniReleased {
                gateway,
                number,
                at,
            } => {
                tx.prepare_cached(
                    "UPDATE ani_lease SET released_ms = ?1 WHERE gateway = ?2 AND number = ?3",
                )?
                .execute(params![at, gateway, number])?;
            }
            CdrOp::Quality { call, json } => self.quality(tx, call, &json)?,
            CdrOp::Chat { call, at, line } => {
                if let Some(id) = self.row(tx, call)? {
                    tx.prepare_cached(
                        "INSERT INTO chat_message (cdr_id, at_ms, sender, agent, text) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, at, line.from, line.agent, line.text])?;
                }
            }
            CdrOp::Action { call, at, action } => {
                // The call's row (its start is written first); an action of a call whose
                // record is gone (after a restart) has nothing to join.
                if let Some(id) = self.row(tx, call)? {
                    let a = &*action;
                    tx.prepare_cached(
                        "INSERT INTO call_action (cdr_id, at_ms, name, code, detail, ok, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![id, at, a.name, a.code, a.detail, a.ok, a.result])?;
                }
            }
        }
        Ok(())
    }

    /// The call's row, written now if its start was held. `None`: no such call (its record
    /// went with a restart).
    fn row(&mut self, tx: &Transaction<'_>, call: u64) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.rows.get(&call) {
            return Ok(Some(*id));
        }
        let Some(p) = self.pending.get_mut(&call).filter(|p| p.start.is_some()) else {
            return Ok(None);
        };
        let id = insert(tx, p, None)?;
        // The times went with it; an answer still to come is held from now.
        self.pending.remove(&call);
        self.rows.insert(call, id);
        Ok(Some(id))
    }

    /// The call's held times, held from now if they were not yet.
    fn hold(&mut self, call: u64) -> &mut Pending {
        let p = self.pending.entry(call).or_default();
        p.since.get_or_insert_with(Instant::now);
        p
    }

    /// Completes the call's record, with its held times.
    fn end(
        &mut self,
        tx: &Transaction<'_>,
        call: u64,
        at: i64,
        s: &CallSummary,
    ) -> rusqlite::Result<()> {
        let times = self.pending.remove(&call).unwrap_or_default();
        if times.start.is_some() {
            // Ended within the hold: the whole record in one statement.
            let id = insert(tx, &times, Some((at, s)))?;
            self.ended.insert(call, (id, Instant::now()));
            return Ok(());
        }
        let Some(id) = self.rows.remove(&call) else {
            return Ok(());
        };
        let (answered, answer_target) = match times.answer {
            Some(a) => (Some(a.at), a.target),
            None => (None, None),
        };
        tx.prepare_cached(
            "UPDATE cdr SET ended_ms = ?1, b_call_id = COALESCE(?2, b_call_id), target = COALESCE(?3, ?4, target), billable_secs = ?5,
               cause = ?6, b_cause = ?7, hangup_side = ?8, codec_a = COALESCE(?9, codec_a), codec_b = COALESCE(?10, codec_b),
               ringing_ms = COALESCE(ringing_ms, ?11), answered_ms = COALESCE(answered_ms, ?12)
             WHERE id = ?13",
        )?
        .execute(params![
            at,
            s.b_call_id,
            answer_target,
            s.target,
            s.billable_secs,
            s.cause.name(),
            s.b_cause.map(|c| c.name()),
            side_name(s),
            s.codecs[0],
            s.codecs[1],
            times.ring,
            answered,
            id
        ])?;
        self.ended.insert(call, (id, Instant::now()));
        Ok(())
    }

    /// The number goes into the call's record and the lease table (one row per number).
    fn ani_leased(
        &mut self,
        tx: &Transaction<'_>,
        call: u64,
        gateway: &str,
        number: &str,
        at: i64,
    ) -> rusqlite::Result<()> {
        let call_id: Option<String> = match self.row(tx, call)? {
            Some(id) => {
                tx.prepare_cached("UPDATE cdr SET ani = ?1 WHERE id = ?2")?
                    .execute(params![number, id])?;
                tx.query_row("SELECT call_id FROM cdr WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .ok()
            }
            None => None,
        };
        tx.prepare_cached(
            "INSERT INTO ani_lease (gateway, number, call_id, leased_ms, released_ms) VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (gateway, number) DO UPDATE SET call_id = ?3, leased_ms = ?4, released_ms = NULL",
        )?
        .execute(params![gateway, number, call_id, at])?;
        Ok(())
    }

    /// The media session closes just after the call ends: its quality goes to the ended
    /// call's row (or, early, to the call in progress).
    fn quality(&mut self, tx: &Transaction<'_>, call: u64, json: &str) -> rusqlite::Result<()> {
        let row = match self.ended.remove(&call) {
            Some((id, _)) => Some(id),
            None => self.row(tx, call)?,
        };
        if let Some(id) = row {
            tx.prepare_cached("UPDATE cdr SET quality = ?1 WHERE id = ?2")?
                .execute(params![json, id])?;
        }
        Ok(())
    }

    /// Writes the times held longer than [`HOLD`].
    fn flush_old(&mut self, tx: &Transaction<'_>, now: Instant) -> rusqlite::Result<()> {
        let old: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since.is_some_and(|s| now.duration_since(s) >= HOLD))
            .map(|(c, _)| *c)
            .collect();
        for call in old {
            let Some(p) = self.pending.remove(&call) else {
                continue;
            };
            if p.start.is_some() {
                let id = insert(tx, &p, None)?;
                self.rows.insert(call, id);
            } else if let Some(id) = self.rows.get(&call) {
                write_times(tx, *id, &p)?;
            }
        }
        Ok(())
    }
}

/// The process is alive at `now_ms` (one row).
pub(crate) fn heartbeat(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO heartbeat (id, alive_ms) VALUES (1, ?1)")?
        .execute(params![now_ms])?;
    Ok(())
}

/// A browser call's facts and context, keyed by leg A's Call-ID.
fn web(tx: &Transaction<'_>, w: &WebRecord) -> rusqlite::Result<()> {
    let f = &w.facts;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO web_context (call_id, merchant, link, session, page_url, referrer, caller_ip, context, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        w.call_id, f.merchant, f.link, f.session, f.page_url, f.referrer, f.caller_ip, w.context, w.at
    ])?;
    Ok(())
}

/// Who hung up, as the record says it.
fn side_name(s: &CallSummary) -> &'static str {
    match s.hangup_side {
        Some(Side::A) => "caller",
        Some(Side::B) => "callee",
        None => "switch",
    }
}

/// A held call's row with all that is known: its start, ring and answer, and its end when
/// it ended within the hold. The row id.
fn insert(
    tx: &Transaction<'_>,
    p: &Pending,
    end: Option<(i64, &CallSummary)>,
) -> rusqlite::Result<i64> {
    let Some(st) = &p.start else {
        return Err(rusqlite::Error::InvalidQuery);
    };
    let answer = p.answer.as_ref();
    let summary = end.map(|(_, s)| s);
    let codec = |i: usize| {
        summary
            .and_then(|s| s.codecs[i].as_deref())
            .or_else(|| answer.and_then(|a| a.codecs[i].as_deref()))
    };
    tx.prepare_cached(
        "INSERT INTO cdr (call_id, caller, destination, context, started_ms, source, ringing_ms, answered_ms,
           target, b_call_id, codec_a, codec_b, ended_ms, billable_secs, cause, b_cause, hangup_side)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        &*st.call_id,
        &*st.caller,
        &*st.destination,
        &*st.context,
        st.at,
        &*st.source,
        p.ring,
        answer.map(|a| a.at),
        answer
            .and_then(|a| a.target.as_deref())
            .or_else(|| summary.and_then(|s| s.target.as_deref())),
        summary
            .and_then(|s| s.b_call_id.as_deref())
            .or_else(|| answer.and_then(|a| a.b_call_id.as_deref())),
        codec(0),
        codec(1),
        end.map(|(at, _)| at),
        summary.map(|s| s.billable_secs),
        summary.map(|s| s.cause.name()),
        summary.and_then(|s| s.b_cause.map(|c| c.name())),
        summary.map(side_name),
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Held ring and answer times, written before the call's end.
fn write_times(tx: &Transaction<'_>, id: i64, p: &Pending) -> rusqlite::Result<()> {
    let none = [None, None];
    let (answered, target, b_call_id, codecs) = match &p.answer {
        Some(a) => (
            Some(a.at),
            a.target.as_deref(),
            a.b_call_id.as_deref(),
            &a.codecs,
        ),
        None => (None, None, None, &none),
    };
    tx.prepare_cached(
        "UPDATE cdr SET ringing_ms = COALESCE(ringing_ms, ?1), answered_ms = COALESCE(?2, answered_ms),
           target = COALESCE(?3, target), b_call_id = COALESCE(?4, b_call_id),
           codec_a = COALESCE(?5, codec_a), codec_b = COALESCE(?6, codec_b) WHERE id = ?7",
    )?
    .execute(params![p.ring, answered, target, b_call_id, codecs[0], codecs[1], id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use switchboard_core::{CallRef, Cause};

    use super::*;
    use crate::testing::TempDb;
    use crate::{CdrFilter, WebCaller};

    fn summary(call: u64) -> std::sync::Arc<CallSummary> {
        std::sync::Arc::new(CallSummary {
            id: CallRef(call),
            a_call_id: format!("a{call}@h"),
            b_call_id: Some(format!("b{call}@h")),
            destination: "1000".into(),
            caller: "0301234".into(),
            cause: Cause::NormalClearing,
            b_cause: Some(Cause::NormalClearing),
            hangup_side: Some(Side::A),
            target: Some("gateway/gw1/1000".into()),
            codecs: [Some("PCMA".into()), Some("PCMU".into())],
            billable_secs: 2.5,
        })
    }

    fn start(call: u64, at: i64) -> CdrOp {
        CdrOp::Start(CallStart {
            call,
            call_id: format!("a{call}@h").into(),
            caller: "0301234".into(),
            destination: "1000".into(),
            context: "default".into(),
            source: "udp:127.0.0.1:5070".into(),
            at,
        })
    }

    /// Applies the changes in one transaction, as a batch of the writer thread does.
    fn write(db: &TempDb, w: &mut Writer, ops: Vec<CdrOp>) {
        let mut conn = crate::sqlite::connect(db.path()).unwrap();
        crate::migrate::apply(&conn, db.path()).unwrap();
        let tx = conn.transaction().unwrap();
        for op in ops {
            w.apply(&tx, op).unwrap();
        }
        tx.commit().unwrap();
    }

    fn one(db: &TempDb, f: &CdrFilter) -> crate::Cdr {
        let mut rows = crate::query(db.path(), f).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.remove(0)
    }

    #[test]
    fn a_call_that_rang_was_answered_and_ended_is_one_complete_record() {
        let db = TempDb::new("call");
        let mut w = Writer::default();
        let answer = CdrOp::Answer {
            call: 7,
            target: Some("gateway/gw1/1000".into()),
            b_call_id: Some("b7@h".into()),
            codecs: [Some("PCMU".into()), Some("PCMU".into())],
            at: 3_000,
        };
        let end = CdrOp::End {
            call: 7,
            at: 5_500,
            summary: summary(7),
        };
        let quality = CdrOp::Quality {
            call: 7,
            json: r#"{"loss":0}"#.into(),
        };
        let ring = CdrOp::Ring { call: 7, at: 2_000 };
        write(
            &db,
            &mut w,
            vec![start(7, 1_000), ring, answer, end, quality],
        );
        let r = one(&db, &CdrFilter::default());
        assert_eq!(r.call_id, "a7@h");
        assert_eq!(r.b_call_id.as_deref(), Some("b7@h"));
        assert_eq!(r.started, "1970-01-01T00:00:01Z");
        assert_eq!(r.ringing.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert_eq!(r.answered.as_deref(), Some("1970-01-01T00:00:03Z"));
        assert_eq!(r.ended.as_deref(), Some("1970-01-01T00:00:05.5Z"));
        assert_eq!(r.billable_secs, Some(2.5));
        assert_eq!(r.cause.as_deref(), Some("NORMAL_CLEARING"));
        assert_eq!(r.hangup_side.as_deref(), Some("caller"));
        assert_eq!(
            (r.codec_a.as_deref(), r.codec_b.as_deref()),
            (Some("PCMA"), Some("PCMU"))
        );
        assert_eq!(r.quality, Some(serde_json::json!({"loss": 0})));
        assert!(
            w.rows.is_empty() && w.pending.is_empty(),
            "nothing left of the call"
        );
    }

    #[test]
    fn actions_are_kept_with_their_call_in_order() {
        let db = TempDb::new("actions");
        let mut w = Writer::default();
        let action = |at, name: &str, ok| CdrOp::Action {
            call: 3,
            at,
            action: Box::new(crate::ActionRecord {
                name: name.into(),
                code: Some("*76".into()),
                detail: Some("https://shop.example/checkout".into()),
                ok,
                result: if ok { "ok".into() } else { "no answer".into() },
            }),
        };
        write(
            &db,
            &mut w,
            vec![
                start(3, 1_000),
                action(2_000, "push_page", true),
                action(3_000, "volume", false),
                // A call the writer does not know (its start was before a restart).
                CdrOp::Action {
                    call: 99,
                    at: 1,
                    action: Box::default(),
                },
            ],
        );
        let r = one(&db, &CdrFilter::default());
        let got: Vec<(&str, &str, bool)> = r
            .actions
            .iter()
            .map(|a| (a.at.as_str(), a.action.name.as_str(), a.action.ok))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1970-01-01T00:00:02Z", "push_page", true),
                ("1970-01-01T00:00:03Z", "volume", false)
            ]
        );
        assert_eq!(r.actions[0].action.code.as_deref(), Some("*76"));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["actions"][0]["detail"], "https://shop.example/checkout");
        assert_eq!(j["actions"][1]["result"], "no answer");
    }

    #[test]
    fn a_browser_call_is_found_by_its_session_and_its_leased_number() {
        let db = TempDb::new("web");
        let mut w = Writer::default();
        let web = CdrOp::Web(Box::new(WebRecord {
            call_id: "a3@h".into(),
            facts: WebCaller {
                merchant: "shop".into(),
                link: "sales".into(),
                session: "shopper-9".into(),
                ..Default::default()
            },
            context: r#"{"cart":"2 items"}"#.into(),
            at: 1_000,
        }));
        let lease = CdrOp::AniLeased {
            call: 3,
            gateway: "gw1".into(),
            number: "0309999".into(),
            at: 1_100,
        };
        write(&db, &mut w, vec![start(3, 1_000), web, lease]);
        let by_session = CdrFilter {
            session: Some("shopper-9".into()),
            ..Default::default()
        };
        let r = one(&db, &by_session);
        assert_eq!(r.merchant.as_deref(), Some("shop"));
        assert_eq!(r.web_context, Some(serde_json::json!({"cart": "2 items"})));
        let by_ani = CdrFilter {
            ani: Some("0309999".into()),
            merchant: Some("shop".into()),
            active: true,
            ..Default::default()
        };
        assert_eq!(one(&db, &by_ani).call_id, "a3@h");
    }

    /// A call started at 1 s and ringing at `ring`, held: no row yet (a call ending now would
    /// be one INSERT).
    fn held(name: &str, call: u64, ring: i64) -> (TempDb, Writer) {
        let db = TempDb::new(name);
        let mut w = Writer::default();
        write(
            &db,
            &mut w,
            vec![start(call, 1_000), CdrOp::Ring { call, at: ring }],
        );
        assert!(
            crate::query(db.path(), &CdrFilter::default())
                .unwrap()
                .is_empty()
        );
        (db, w)
    }

    #[test]
    fn a_call_longer_than_the_hold_is_written_at_the_hold_then_its_answer_then_its_end() {
        let (db, mut w) = held("hold", 1, 2_000);
        let flush = |w: &mut Writer| {
            w.pending.get_mut(&1).unwrap().since = Some(Instant::now() - HOLD);
            let mut conn = crate::sqlite::connect(db.path()).unwrap();
            let tx = conn.transaction().unwrap();
            w.flush_old(&tx, Instant::now()).unwrap();
            tx.commit().unwrap();
            one(&db, &CdrFilter::default())
        };
        // Past the hold: the row, with its start and ring, open (a crash closes it).
        let r = flush(&mut w);
        assert_eq!(r.started, "1970-01-01T00:00:01Z");
        assert_eq!(r.ringing.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert!(r.answered.is_none() && r.ended.is_none());
        // The answer, held in its turn, then written: the billing survives a crash.
        let answer = CdrOp::Answer {
            call: 1,
            target: Some("gateway/gw1/1000".into()),
            b_call_id: Some("b1@h".into()),
            codecs: [Some("PCMU".into()), Some("PCMU".into())],
            at: 3_000,
        };
        write(&db, &mut w, vec![answer]);
        assert!(one(&db, &CdrFilter::default()).answered.is_none(), "held");
        let r = flush(&mut w);
        assert_eq!(r.answered.as_deref(), Some("1970-01-01T00:00:03Z"));
        assert_eq!(r.b_call_id.as_deref(), Some("b1@h"));
        assert!(r.ended.is_none());
        // An action needs the row: it is there. The end completes the same row.
        let end = CdrOp::End {
            call: 1,
            at: 5_500,
            summary: summary(1),
        };
        write(&db, &mut w, vec![end]);
        let r = one(&db, &CdrFilter::default());
        assert_eq!(r.ringing.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert_eq!(r.answered.as_deref(), Some("1970-01-01T00:00:03Z"));
        assert_eq!(r.ended.as_deref(), Some("1970-01-01T00:00:05.5Z"));
        assert_eq!(r.cause.as_deref(), Some("NORMAL_CLEARING"));
        assert!(w.pending.is_empty() && w.rows.is_empty());
    }

    #[test]
    fn an_action_during_the_hold_writes_the_row_first() {
        let (db, mut w) = held("hold-action", 2, 1_500);
        let chat = CdrOp::Chat {
            call: 2,
            at: 1_700,
            line: Box::new(crate::ChatLine {
                from: "agent".into(),
                agent: Some("a1".into()),
                text: "hello".into(),
            }),
        };
        write(&db, &mut w, vec![chat]);
        let r = one(&db, &CdrFilter::default());
        assert_eq!(r.ringing.as_deref(), Some("1970-01-01T00:00:01.5Z"));
        assert!(w.rows.contains_key(&2) && !w.pending.contains_key(&2));
    }
}
