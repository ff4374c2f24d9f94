//! Cron slots for periodic enqueue and `Result.reschedule(cron=...)`, by croner.
//!
//! Specs have six fields, seconds first (`"0 */5 * * * *"`), or five (seconds 0), evaluated in
//! UTC. A periodic enqueue
//! tries every slot in every process; the backend's `enqueue_slot` lets exactly one win.

use crate::errors::{Error, Result};
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// Parse a six-field spec (seconds first) or a five-field one; a bad one is a ValueError naming
/// it.
pub(crate) fn parse(spec: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(spec)
        .map_err(|e| {
            Error::Invalid(format!(
                "invalid cron spec {spec:?} (six fields, seconds first, or five): {e}"
            ))
        })
}

/// The first slot strictly after `after` (epoch seconds), as epoch seconds.
pub(crate) fn next_after(cron: &Cron, after: f64) -> Result<f64> {
    let secs = after.floor() as i64;
    let nanos = ((after - after.floor()) * 1e9) as u32;
    let start: DateTime<Utc> = DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| Error::Invalid(format!("time {after} is out of range")))?;
    let next = cron
        .find_next_occurrence(&start, false)
        .map_err(|e| Error::Invalid(format!("cron spec has no slot after {after}: {e}")))?;
    Ok(next.timestamp() as f64 + f64::from(next.timestamp_subsec_nanos()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_five_seconds_lands_on_the_next_multiple() {
        let cron = parse("*/5 * * * * *").unwrap();
        assert_eq!(next_after(&cron, 1_000_000_001.5).unwrap(), 1_000_000_005.0);
        assert_eq!(next_after(&cron, 1_000_000_005.0).unwrap(), 1_000_000_010.0);
    }

    #[test]
    fn five_fields_mean_second_zero_and_garbage_is_refused() {
        let cron = parse("*/5 * * * *").unwrap();
        assert_eq!(next_after(&cron, 1_000_000_001.5).unwrap() % 300.0, 0.0);
        assert!(parse("banana").is_err());
        assert!(parse("* * * * * * * *").is_err());
    }
}
