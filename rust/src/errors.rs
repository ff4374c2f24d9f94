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

#[derive(Debug)]
pub(crate) enum Error {
    /// A caller passed a value outside what the call accepts; the string names the argument.
    Invalid(String),
    ChannelClosed,
    Timeout(&'static str),
    /// The dispatcher was closed by Worker.stop().
    Stopped,
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Invalid(msg) => PyValueError::new_err(msg),
            Error::ChannelClosed => ChannelClosed::new_err("channel is closed"),
            Error::Timeout(what) => PyTimeoutError::new_err(format!("{what} timed out")),
            Error::Stopped => CoreError::new_err("the dispatcher is stopped"),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;
