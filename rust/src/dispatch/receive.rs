//! Channel receive loops: a tokio task per `receive` entry turns a channel's items into due
//! executions, taking the next item only while the entry has room (back-pressure).

use super::{Inner, Ready, Source};
use crate::runtime::now_ns;
use pyo3::prelude::*;
use std::sync::Arc;
use tokio::sync::Notify;

impl Inner {
    /// Called by a receive loop for each item; false when the entry is gone.
    fn received(&self, key: u64, item: Py<PyAny>) -> std::result::Result<(), Py<PyAny>> {
        let mut st = self.state.lock();
        let closed = st.closed;
        let Some(entry) = st.entries.get_mut(&key) else {
            return Err(item);
        };
        if closed && !entry.drains() {
            return Err(item);
        }
        entry.outstanding += 1;
        let lane = entry.lane;
        st.figures.received += 1;
        st.due.push_back(Ready {
            key,
            record: None,
            payload: Some(item),
            claim: None,
            scheduled: now_ns(),
            lane,
            ended: false,
            interval: false,
        });
        self.admit(&mut st);
        Ok(())
    }

    /// Whether a receive loop may take another item now (None: the loop must end).
    fn receive_room(&self, key: u64) -> Option<bool> {
        let st = self.state.lock();
        let entry = st.entries.get(&key)?;
        if entry.ended || (st.closed && !entry.drains()) {
            return None;
        }
        match entry.source {
            Source::Receive {
                max_outstanding, ..
            } => Some(entry.outstanding < max_outstanding),
            _ => None,
        }
    }
}

/// Loop that turns a channel's items into executions of one entry, with back-pressure.
pub(super) async fn receive_loop(
    inner: Arc<Inner>,
    key: u64,
    rx: flume::Receiver<Py<PyAny>>,
    back: flume::WeakSender<Py<PyAny>>,
    wake: Arc<Notify>,
) {
    loop {
        match inner.receive_room(key) {
            None => return,
            Some(false) => {
                wake.notified().await;
                continue;
            }
            Some(true) => {}
        }
        tokio::select! {
            item = rx.recv_async() => match item {
                Ok(item) => {
                    if let Err(item) = inner.received(key, item) {
                        // Cancelled or stopped while the item was in flight: give it back to the
                        // channel for another receiver instead of dropping it.
                        let returned = back.upgrade().map(|tx| tx.try_send(item));
                        if !matches!(returned, Some(Ok(()))) {
                            eprintln!("workhorse: an item received after its schedule ended could not be returned to the channel");
                        }
                        return;
                    }
                }
                Err(_) => {
                    let mut st = inner.state.lock();
                    inner.end_source(&mut st, key);
                    return;
                }
            },
            _ = wake.notified() => {}
        }
    }
}
