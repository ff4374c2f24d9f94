//! Failpoints: named places in the core where a test makes the process crash, panic or stall
//! (RELIABILITY.md section 4, rows 2, 3 and 20), set by the environment variable
//! `WORKHORSE_FAILPOINTS`, for tests only:
//!
//! ```text
//! WORKHORSE_FAILPOINTS="after_claim=exit;renew=panic@2;before_ack=1*sleep(500)"
//! ```
//!
//! Each entry is `name=[N*]action[@K]`: the action runs from the K-th time the place is reached
//! (default 1), at most N times (default: every time). Actions: `exit` or `exit(code)` (the
//! process ends at once, no cleanup, no unwinding: `_exit(2)`, code 137 by default), `abort`
//! (SIGABRT), `panic` (a Rust panic in the task that reached it), `sleep(ms)`, `off`. Each time an
//! action runs, a line `workhorse: failpoint NAME: ACTION at EPOCH` goes to stderr first (tests
//! read the wall time of the crash from it). The variable is read once, at the first failpoint
//! reached; unknown names and bad actions are reported on stderr and ignored.
//!
//! Why not the `fail` crate behind a cargo feature: the fault tests would then run a module built
//! differently from the wheels users install, `make build-dev` and the wheel build would need two
//! feature sets kept apart, and the tests need nothing the crate adds (its registry, callbacks,
//! probabilities). Here the module is the same everywhere, and a place with no failpoint set
//! costs one relaxed atomic load and a predictable branch (`failpoint!` inlines only that).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that arms failpoints.
pub(crate) const VAR: &str = "WORKHORSE_FAILPOINTS";

/// Every place a failpoint may be set (all in queue/consume.rs).
pub(crate) const PLACES: &[&str] = &[
    // A fetch returned claims; they are not yet held or handed to the dispatcher.
    "after_claim",
    // A batch of finished runs is about to be sent to the backend.
    "before_ack",
    // Each turn of a worker's queue consumer loop.
    "consume_loop",
    // Each round of the lease renewer (a task of its own), before it renews.
    "renew",
];

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ARMED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static TABLE: OnceLock<Vec<Point>> = OnceLock::new();

/// Run the failpoint `name` if one is set (see the module docs).
macro_rules! failpoint {
    ($name:literal) => {
        if $crate::failpoints::maybe_armed() {
            $crate::failpoints::hit($name);
        }
    };
}
pub(crate) use failpoint;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    Exit(i32),
    Abort,
    Panic,
    Sleep(u64),
    Off,
}

#[derive(Debug)]
pub(crate) struct Point {
    name: String,
    action: Action,
    /// The first hit (1-based) the action runs on.
    from: u64,
    /// How many times it runs at most (None: every time).
    times: Option<u64>,
    hits: AtomicU64,
}

impl Point {
    /// Count a hit; the action to run for it, if any.
    fn fire(&self) -> Option<&Action> {
        let n = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.from || self.times.is_some_and(|t| n - self.from >= t) {
            return None;
        }
        Some(&self.action)
    }
}

/// False only once the variable was read and set nothing: the cost of an unarmed failpoint.
#[inline(always)]
pub(crate) fn maybe_armed() -> bool {
    STATE.load(Ordering::Relaxed) != OFF
}

/// The slow path: read the variable on first use, then run `name`'s action if it fires.
#[cold]
#[inline(never)]
pub(crate) fn hit(name: &str) {
    let table = TABLE.get_or_init(|| {
        let spec = std::env::var(VAR).unwrap_or_default();
        let (points, errors) = parse(&spec);
        for err in errors {
            eprintln!("workhorse: {VAR}: {err} (ignored)");
        }
        if points.is_empty() {
            STATE.store(OFF, Ordering::Relaxed);
        } else {
            eprintln!("workhorse: failpoints armed ({VAR}, for tests only): {spec}");
            STATE.store(ARMED, Ordering::Relaxed);
        }
        points
    });
    for point in table.iter().filter(|p| p.name == name) {
        if let Some(action) = point.fire() {
            run(name, action);
        }
    }
}

fn run(name: &str, action: &Action) {
    if *action == Action::Off {
        return;
    }
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    eprintln!("workhorse: failpoint {name}: {action:?} at {at:.6}");
    match action {
        Action::Exit(code) => exit_now(*code),
        Action::Abort => std::process::abort(),
        Action::Panic => panic!("failpoint {name}"),
        Action::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        Action::Off => {}
    }
}

/// End the process at once: no atexit handlers, no destructors, no flushing (a crash).
#[cfg(unix)]
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

#[cfg(not(unix))]
fn exit_now(_code: i32) -> ! {
    std::process::abort()
}

/// Parse a `WORKHORSE_FAILPOINTS` value: the points set, and a message per bad entry.
pub(crate) fn parse(spec: &str) -> (Vec<Point>, Vec<String>) {
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        match parse_entry(entry) {
            Ok(point) => points.push(point),
            Err(err) => errors.push(format!("{entry:?}: {err}")),
        }
    }
    (points, errors)
}

fn parse_entry(entry: &str) -> Result<Point, String> {
    let (name, rest) = entry.split_once('=').ok_or("expected name=action")?;
    let name = name.trim();
    if !PLACES.contains(&name) {
        return Err(format!(
            "no failpoint named {name:?} (there are {})",
            PLACES.join(", ")
        ));
    }
    let mut rest = rest.trim();
    let mut times = None;
    if let Some((n, after)) = rest.split_once('*') {
        times = Some(count(n)?);
        rest = after;
    }
    let mut from = 1;
    if let Some((before, k)) = rest.rsplit_once('@') {
        from = count(k)?.max(1);
        rest = before;
    }
    let (kind, arg) = match rest.split_once('(') {
        Some((kind, arg)) => (
            kind,
            Some(arg.strip_suffix(')').ok_or("unclosed parenthesis")?),
        ),
        None => (rest, None),
    };
    let action = match (kind.trim(), arg) {
        ("exit", None) => Action::Exit(137),
        ("exit", Some(code)) => Action::Exit(
            code.trim()
                .parse()
                .map_err(|_| format!("exit code {code:?} is not an integer"))?,
        ),
        ("abort", None) => Action::Abort,
        ("panic", None) => Action::Panic,
        ("sleep", Some(ms)) => Action::Sleep(count(ms)?),
        ("off", None) => Action::Off,
        (other, _) => {
            return Err(format!(
                "unknown action {other:?} (exit, exit(code), abort, panic, sleep(ms), off)"
            ))
        }
    };
    Ok(Point {
        name: name.to_string(),
        action,
        from,
        times,
        hits: AtomicU64::new(0),
    })
}

fn count(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> Point {
        let (mut points, errors) = parse(spec);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(points.len(), 1);
        points.remove(0)
    }

    fn fired(point: &Point, hits: usize) -> Vec<bool> {
        (0..hits).map(|_| point.fire().is_some()).collect()
    }

    #[test]
    fn entries_parse_into_actions() {
        let (points, errors) =
            parse(" after_claim=exit ; before_ack=exit(3);renew=sleep(250);consume_loop=abort;");
        assert!(errors.is_empty(), "{errors:?}");
        let actions: Vec<(&str, Action)> = points
            .iter()
            .map(|p| (p.name.as_str(), p.action.clone()))
            .collect();
        assert_eq!(
            actions,
            [
                ("after_claim", Action::Exit(137)),
                ("before_ack", Action::Exit(3)),
                ("renew", Action::Sleep(250)),
                ("consume_loop", Action::Abort),
            ]
        );
        assert_eq!(one("renew=off").action, Action::Off);
        assert!(parse("").0.is_empty());
    }

    #[test]
    fn a_point_fires_from_its_kth_hit_at_most_n_times() {
        assert_eq!(fired(&one("renew=panic"), 3), [true, true, true]);
        assert_eq!(fired(&one("renew=panic@3"), 4), [false, false, true, true]);
        assert_eq!(fired(&one("renew=1*panic"), 3), [true, false, false]);
        assert_eq!(
            fired(&one("renew=2*sleep(1)@2"), 5),
            [false, true, true, false, false]
        );
    }

    #[test]
    fn bad_entries_are_reported_and_skipped() {
        let (points, errors) =
            parse("nowhere=exit;renew;renew=explode;renew=sleep(x);renew=exit(x;after_claim=panic");
        assert_eq!(points.len(), 1);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("no failpoint named \"nowhere\""));
        assert!(errors[2].contains("unknown action"));
    }

    #[test]
    fn a_panic_action_unwinds_the_caller_and_sleep_waits() {
        let panic = std::panic::catch_unwind(|| run("renew", &Action::Panic)).unwrap_err();
        assert_eq!(panic.downcast_ref::<String>().unwrap(), "failpoint renew");
        let t = std::time::Instant::now();
        run("renew", &Action::Sleep(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn unarmed_places_cost_one_load_after_the_first() {
        // The test binary's environment sets no failpoints: the first hit reads it and turns
        // the fast path off.
        if std::env::var_os(VAR).is_none() {
            hit("renew");
            assert!(!maybe_armed());
        }
    }
}
