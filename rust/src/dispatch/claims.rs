//! What a durable queue's consumer loop (queue/consume.rs) calls: room to claim, claimed jobs
//! becoming due executions, outcomes handed back as acks, lost leases, a failed or finished
//! consumer; and claimed jobs that never started going back to their queue.

use super::{Inner, Ready, Source, State, ASYNC, SYNC};
use crate::queue::{Ack, Claim, Outcome};
use crate::runtime::now_ns;
use std::collections::VecDeque;

impl Inner {
    /// How many more jobs a queue consumer may claim now (None: the loop must end).
    pub(crate) fn queue_room(&self, key: u64) -> Option<usize> {
        let st = self.state.lock();
        let entry = st.entries.get(&key)?;
        if entry.ended || st.closed {
            return None;
        }
        match entry.source {
            Source::Queue {
                max_outstanding, ..
            } => Some(max_outstanding.saturating_sub(entry.outstanding) as usize),
            _ => None,
        }
    }

    /// A queue consumer claimed these jobs: each becomes a due execution. Given back when the
    /// entry ended meanwhile (the consumer releases them).
    pub(crate) fn claimed(
        &self,
        key: u64,
        claims: Vec<Claim>,
    ) -> std::result::Result<(), Vec<Claim>> {
        let mut st = self.state.lock();
        let closed = st.closed;
        let Some(entry) = st.entries.get_mut(&key) else {
            return Err(claims);
        };
        if closed || entry.ended {
            return Err(claims);
        }
        entry.outstanding += claims.len() as u32;
        let lane = entry.lane;
        let now = now_ns();
        st.figures.received += claims.len() as u64;
        for claim in claims {
            st.due.push_back(Ready {
                key,
                record: None,
                payload: None,
                claim: Some(Box::new(claim)),
                scheduled: now,
                lane,
                ended: false,
                interval: false,
            });
        }
        self.admit(&mut st);
        Ok(())
    }

    /// Hand a queued execution's outcome to its consumer (before `complete`, which may remove
    /// the entry and with it the consumer's ack channel).
    pub(super) fn ack(&self, st: &State, key: u64, ack: Ack) -> bool {
        match st.entries.get(&key).map(|e| &e.source) {
            Some(Source::Queue { acks, .. }) => acks.send(ack).is_ok(),
            _ => false,
        }
    }

    /// A consumer lost the lease of a run it held: its result will be refused, so Python
    /// cancels it.
    pub(crate) fn lease_lost(&self, id: String, token: u64) {
        self.lost.lock().push((id, token));
        self.lost_cv.notify_all();
    }

    /// A queue consumer loop ended (its last acks are with the backend).
    pub(crate) fn consumer_done(&self) {
        let mut st = self.state.lock();
        st.consumers = st.consumers.saturating_sub(1);
        self.idle.notify_all();
    }

    /// The queue consumer of entry `key` (or its lease renewer) died: nothing more is claimed
    /// (the entry ends), its claimed jobs that have not started go back to the queue through
    /// the ack channel, and Python learns why from `wait_lost`/`queue_failure` (it cancels the
    /// runs still going, whose leases nobody renews now).
    pub(crate) fn queue_failed(&self, key: u64, what: String) {
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            self.release_unstarted(st, Some(key));
            self.end_source(st, key);
            self.admit(st);
            if st.in_flight == 0 {
                self.idle.notify_all();
            }
        }
        let _lost = self.lost.lock();
        self.failure.lock().get_or_insert(what);
        self.lost_cv.notify_all();
    }

    /// Send claimed jobs that never started (due, or ready and not taken) back to their queue,
    /// unattempted: all of them, or only entry `only`'s.
    pub(super) fn release_unstarted(&self, st: &mut State, only: Option<u64>) {
        let ours = |r: &Ready| r.claim.is_some() && only.is_none_or(|k| r.key == k);
        let (claims, due): (VecDeque<Ready>, VecDeque<Ready>) = st.due.drain(..).partition(ours);
        st.due = due;
        let ready_claims: Vec<Ready> = [SYNC, ASYNC]
            .into_iter()
            .flat_map(|lane| {
                let (claims, rest): (VecDeque<Ready>, VecDeque<Ready>) =
                    st.ready[lane].drain(..).partition(ours);
                st.ready[lane] = rest;
                claims
            })
            .collect();
        st.in_flight = st.in_flight.saturating_sub(ready_claims.len());
        for r in claims.into_iter().chain(ready_claims) {
            let claim = r.claim.expect("partitioned on claim");
            let ack = Ack {
                id: claim.job.id,
                name: claim.job.name,
                token: claim.token,
                outcome: Outcome::Release,
            };
            self.ack(st, r.key, ack);
            if let Some(entry) = st.entries.get_mut(&r.key) {
                entry.outstanding = entry.outstanding.saturating_sub(1);
            }
        }
    }
}
