//! The core's errors, mapped to Python exceptions in one place.

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::PyErr;

create_exception!(
    _core,
    CoreError,
    PyRuntimeError,
    "An internal error of the workhorse core (a bug: please report it)."
);
create_exception!(
    _core,
    ChannelClosed,
    PyRuntimeError,
    "The channel was closed: nothing more can be sent, and it is drained."
);

create_exception!(
    _core,
    QueueError,
    PyRuntimeError,
    "A durable queue's backend failed or could not be reached."
);

#[derive(Debug)]
pub(crate) enum Error {
    /// A caller passed a value outside what the call accepts; the string names the argument.
    Invalid(String),
    ChannelClosed,
    Timeout(&'static str),
    /// The dispatcher was closed by Worker.stop().
    Stopped,
    /// A queue backend failed (unreachable, refused a command); the string says what.
    Backend(String),
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Invalid(msg) => PyValueError::new_err(msg),
            Error::ChannelClosed => ChannelClosed::new_err("channel is closed"),
            Error::Timeout(what) => PyTimeoutError::new_err(format!("{what} timed out")),
            Error::Stopped => CoreError::new_err("the dispatcher is stopped"),
            Error::Backend(msg) => QueueError::new_err(msg),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A panic in a background thread or task of the core: counted and written to stderr (there is
/// no Python frame to raise it in).
pub(crate) fn report_panic(place: &str, panic: &(dyn std::any::Any + Send)) {
    PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let what = panic_message(panic);
    eprintln!("workhorse: internal error in the core's {place} (please report it): {what}");
}

/// What a panic said (its message, when it has one).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Panics of the core's background threads and tasks so far.
#[pyo3::pyfunction]
pub(crate) fn core_panics() -> u64 {
    PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reported_panic_is_counted() {
        let before = super::core_panics();
        let panic = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
        super::report_panic("test", panic.as_ref());
        assert_eq!(super::core_panics(), before + 1);
    }
}
