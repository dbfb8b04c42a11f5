//! **Shared helpers** for quantities with units: parsing the durations and
//! byte sizes people type in flags, and turning durations into the whole
//! microseconds every report and log line counts in.

use std::time::Duration;

/// Whole microseconds in a duration, saturating at `u64::MAX` (585,000
/// years) instead of wrapping.
pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `n` and its noun in the right number: `1 worker`, `2 workers`, `0 workers`.
pub(crate) fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Parses a duration: plain seconds (`2`, `0.5`) or a number with a unit
/// suffix (`500ms`, `2s`, `1m`, `1h`, also combined as `1m30s`).
///
/// # Errors
/// A message naming the accepted forms.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // `-1s` is a negative duration; `-n` (a flag taken as the value) is not.
    if text.strip_prefix('-').is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')) {
        return Err("must not be negative; give a duration such as 2s, 500ms or plain seconds".to_string());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
        } else {
            Err(format!("{text:?} is not a duration: seconds must be zero or more"))
        };
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration; use seconds (2, 0.5) or a unit (500ms, 2s, 1m)"))
}

/// Parses a byte size: plain bytes (`1048576`) or with a binary suffix
/// (`64KiB`, `16MiB`, `1GiB`; `K`, `M`, `G` mean the same).
///
/// # Errors
/// A message naming the accepted forms.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size; use bytes (65536) or a unit (64KiB, 16MiB)")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size; use bytes (65536) or a unit (64KiB, 16MiB)"))
}

/// Parses a count flag (`--size`, `--workers`, `--port`...) as a whole
/// number, with a sentence for anything else: clap's own messages for
/// `-5` ("unexpected argument") and `x` ("invalid digit found in string")
/// do not say what is wrong.
///
/// # Errors
/// A negative, fractional, non-numeric or too-large value.
pub fn parse_whole_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    let trimmed = text.trim();
    if let Ok(value) = trimmed.parse::<T>() {
        return Ok(value);
    }
    Err(if trimmed.starts_with('-') {
        "must not be negative; give a whole number such as 4".to_string()
    } else if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        "is too large for this flag".to_string()
    } else {
        "is not a whole number; give one such as 4".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "worker", "workers"), "1 worker");
        assert_eq!(count(0, "worker", "workers"), "0 workers");
        assert_eq!(count(3, "request was", "requests were"), "3 requests were");
    }

    #[test]
    fn negative_durations_are_named_as_such() {
        for negative in ["-1", "-1s", "-0.5", "-.5s"] {
            assert!(parse_duration(negative).unwrap_err().starts_with("must not be negative"), "{negative}");
        }
        assert!(
            parse_duration("-n").unwrap_err().contains("is not a duration"),
            "a flag is not a negative value"
        );
    }

    #[test]
    fn durations_accept_plain_seconds_and_suffixes() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        for bad in ["", "-1", "soon", "NaN", "inf", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn sizes_accept_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 64 * 1024);
        assert_eq!(parse_size("16MiB").unwrap(), 16 * 1024 * 1024);
        assert_eq!(parse_size("16M").unwrap(), 16 * 1024 * 1024);
        for bad in ["", "MiB", "-5", "12 parsecs", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn whole_numbers_are_refused_with_a_reason() {
        assert_eq!(parse_whole_number::<u64>("42"), Ok(42));
        assert!(parse_whole_number::<u64>("-5").unwrap_err().contains("must not be negative"));
        assert!(parse_whole_number::<u16>("70000").unwrap_err().contains("too large"));
        assert!(parse_whole_number::<usize>("2.5").unwrap_err().contains("not a whole number"));
    }
}
