//! `Channel`: a bounded multi-producer, multi-consumer channel of Python objects.
//!
//! Threads send with the GIL released; receive loops of the dispatcher read it on the tokio
//! runtime, so several `perform_receive` calls on one channel compete for its items, as Go
//! receivers on one channel do. Closing drops the only strong sender: receivers drain what is left
//! and then see the end.

use crate::errors::Error;
use parking_lot::Mutex;
use pyo3::prelude::*;
use std::time::{Duration, Instant};

/// How long a blocking call waits before it looks for Ctrl-C / SIGTERM.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

#[pyclass(frozen, subclass, module = "workhorse._core")]
pub(crate) struct Channel {
    tx: Mutex<Option<flume::Sender<Py<PyAny>>>>,
    rx: flume::Receiver<Py<PyAny>>,
    capacity: usize,
}

impl Channel {
    fn sender(&self) -> PyResult<flume::Sender<Py<PyAny>>> {
        self.tx
            .lock()
            .clone()
            .ok_or_else(|| Error::ChannelClosed.into())
    }

    /// The receiving end and a weak sender (to give back an item), for a receive loop.
    pub(crate) fn endpoints(&self) -> (flume::Receiver<Py<PyAny>>, flume::WeakSender<Py<PyAny>>) {
        let weak = match self.tx.lock().as_ref() {
            Some(tx) => tx.downgrade(),
            // Closed already: a weak sender of a fresh, dead channel upgrades to nothing.
            None => flume::bounded::<Py<PyAny>>(1).0.downgrade(),
        };
        (self.rx.clone(), weak)
    }
}

fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= 0.0 && t.is_finite() => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t)))
        }
        Some(t) => {
            Err(Error::Invalid(format!("timeout must be >= 0 seconds or None, got {t}")).into())
        }
    }
}

fn slice_until(until: Option<Instant>) -> Option<Duration> {
    match until {
        None => Some(SIGNAL_SLICE),
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SIGNAL_SLICE))
        }
    }
}

#[pymethods]
impl Channel {
    #[new]
    fn new(capacity: i64) -> PyResult<Self> {
        if capacity < 1 {
            return Err(Error::Invalid(format!("capacity must be >= 1, got {capacity}")).into());
        }
        let (tx, rx) = flume::bounded(capacity as usize);
        Ok(Channel {
            tx: Mutex::new(Some(tx)),
            rx,
            capacity: capacity as usize,
        })
    }

    /// Send, waiting (GIL released) while the channel is full; TimeoutError after `timeout` s.
    #[pyo3(signature = (item, timeout=None))]
    fn send(&self, py: Python<'_>, item: Py<PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let until = deadline(timeout)?;
        let tx = self.sender()?;
        let mut item = match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(flume::TrySendError::Disconnected(_)) => return Err(Error::ChannelClosed.into()),
            Err(flume::TrySendError::Full(item)) => item,
        };
        loop {
            let Some(wait) = slice_until(until) else {
                return Err(Error::Timeout("channel send (the channel is full)").into());
            };
            let tx2 = tx.clone();
            match py.detach(move || tx2.send_timeout(item, wait)) {
                Ok(()) => return Ok(()),
                Err(flume::SendTimeoutError::Disconnected(_)) => {
                    return Err(Error::ChannelClosed.into())
                }
                Err(flume::SendTimeoutError::Timeout(back)) => item = back,
            }
            if self.tx.lock().is_none() {
                return Err(Error::ChannelClosed.into());
            }
            py.check_signals()?;
        }
    }

    /// Send without waiting: false when the channel is full.
    fn try_send(&self, item: Py<PyAny>) -> PyResult<bool> {
        match self.sender()?.try_send(item) {
            Ok(()) => Ok(true),
            Err(flume::TrySendError::Full(_)) => Ok(false),
            Err(flume::TrySendError::Disconnected(_)) => Err(Error::ChannelClosed.into()),
        }
    }

    /// Receive, waiting (GIL released); ChannelClosed once closed and drained.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let until = deadline(timeout)?;
        loop {
            match self.rx.try_recv() {
                Ok(item) => return Ok(item),
                // Closed and drained: that, not a timeout, even with timeout=0.
                Err(flume::TryRecvError::Disconnected) => return Err(Error::ChannelClosed.into()),
                Err(flume::TryRecvError::Empty) => {}
            }
            let Some(wait) = slice_until(until) else {
                return Err(Error::Timeout("channel recv").into());
            };
            let rx = self.rx.clone();
            match py.detach(move || rx.recv_timeout(wait)) {
                Ok(item) => return Ok(item),
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return Err(Error::ChannelClosed.into())
                }
                Err(flume::RecvTimeoutError::Timeout) => py.check_signals()?,
            }
        }
    }

    /// Close: later sends raise ChannelClosed; receivers get what is left, then the end.
    fn close(&self) {
        self.tx.lock().take();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.tx.lock().is_none()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn __len__(&self) -> usize {
        self.rx.len()
    }
}
