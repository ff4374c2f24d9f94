//! The process-wide tokio runtime and the monotonic clock shared with Python.
//!
//! One runtime per process, started lazily. A child created by `fork` inherits the parent's memory
//! but none of its threads, so the runtime is keyed by pid: the child builds a fresh one and leaks
//! the parent's (dropping it would try to join threads that do not exist in the child).

use crate::errors::{Error, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// The runtime of this process, built on first use (and again after a fork).
pub(crate) fn handle() -> Arc<Runtime> {
    let mut slot = RUNTIME.lock();
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid() {
            return rt.clone();
        }
        // Inherited across fork: its worker threads are gone; never drop it here.
        if let Some((_, stale)) = slot.take() {
            std::mem::forget(stale);
        }
    }
    let rt = Arc::new(
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("workhorse-core")
            .enable_all()
            .build()
            .expect("building the tokio runtime"),
    );
    *slot = Some((pid(), rt.clone()));
    rt
}

/// Stop the runtime's tasks and threads (interpreter exit); a later call to `handle` starts anew.
pub(crate) fn shutdown() {
    let taken = RUNTIME.lock().take();
    if let Some((owner, rt)) = taken {
        if owner != pid() {
            std::mem::forget(rt);
            return;
        }
        if let Ok(rt) = Arc::try_unwrap(rt) {
            rt.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

/// The clock behind Python's `time.monotonic()`, in nanoseconds: CLOCK_MONOTONIC on Linux and
/// the other Unixes, CLOCK_UPTIME_RAW (`mach_absolute_time`) on macOS, where CLOCK_MONOTONIC also
/// counts the time asleep and so drifts from Python's clock, and QueryPerformanceCounter on
/// Windows, as Python >= 3.13 does (older versions read GetTickCount64, a coarser clock that
/// need not agree with it to the millisecond).
#[cfg(unix)]
pub(crate) fn now_ns() -> u64 {
    #[cfg(target_vendor = "apple")]
    const CLOCK: libc::clockid_t = libc::CLOCK_UPTIME_RAW;
    #[cfg(not(target_vendor = "apple"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock exists on every Unix we
    // build for.
    unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(windows)]
pub(crate) fn now_ns() -> u64 {
    use std::sync::OnceLock;
    use windows_sys::Win32::System::Performance::{
        QueryPerformanceCounter, QueryPerformanceFrequency,
    };
    static FREQUENCY: OnceLock<u64> = OnceLock::new();
    let frequency = *FREQUENCY.get_or_init(|| {
        let mut f = 0i64;
        // SAFETY: writes into the i64 we own; never fails on Windows XP and later.
        unsafe { QueryPerformanceFrequency(&mut f) };
        f.max(1) as u64
    });
    let mut counter = 0i64;
    // SAFETY: as above.
    unsafe { QueryPerformanceCounter(&mut counter) };
    // Split so that counter * 1e9 cannot overflow u64 within the machine's uptime.
    let counter = counter as u64;
    (counter / frequency) * 1_000_000_000 + (counter % frequency) * 1_000_000_000 / frequency
}

/// Seconds to nanoseconds, saturating: a time centuries away becomes `u64::MAX` (never), which
/// callers add to only with saturating arithmetic. NaN is refused before it gets here.
pub(crate) fn secs_to_ns(secs: f64) -> u64 {
    if secs.is_nan() || secs <= 0.0 {
        0
    } else {
        // `as` saturates at u64::MAX for values (and infinity) beyond it.
        (secs * 1e9) as u64
    }
}

/// A time or timeout argument from Python: NaN is a ValueError naming the argument.
pub(crate) fn not_nan(name: &str, secs: f64) -> Result<f64> {
    if secs.is_nan() {
        return Err(Error::Invalid(format!(
            "{name} must be a number of seconds, got nan"
        )));
    }
    Ok(secs)
}

/// A timeout argument from Python: NaN or a negative value is a ValueError; infinity waits
/// forever.
pub(crate) fn timeout_arg(name: &str, secs: f64) -> Result<f64> {
    if secs.is_nan() || secs < 0.0 {
        return Err(Error::Invalid(format!(
            "{name} must be >= 0 seconds, got {secs}"
        )));
    }
    Ok(secs)
}

/// A `Duration` of up to `secs` seconds that never overflows an `Instant` (capped at a year).
pub(crate) fn capped_duration(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.clamp(0.0, 365.0 * 86_400.0))
}

pub(crate) fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_in_seconds() {
        let a = now_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = now_ns();
        assert!(b - a >= 2_000_000);
        assert!((ns_to_secs(secs_to_ns(1.5)) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn far_and_odd_seconds_saturate_instead_of_wrapping() {
        assert_eq!(secs_to_ns(1e11), u64::MAX);
        assert_eq!(secs_to_ns(f64::INFINITY), u64::MAX);
        assert_eq!(secs_to_ns(f64::NAN), 0);
        assert!(not_nan("t", f64::NAN).is_err());
        assert!(timeout_arg("t", -1.0).is_err());
        assert_eq!(capped_duration(f64::INFINITY).as_secs(), 365 * 86_400);
    }

    #[test]
    fn runtime_is_shared_until_shutdown() {
        let a = handle();
        let b = handle();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.block_on(async { 7 }), 7);
    }
}
