//! `compute` and the chaos commands (`crash`, `hang`, `sleep`, `panic`).

use serde_json::value::RawValue;

use super::Fields;
use crate::protocol::request::{Command, Limits, DEFAULT_N, MAX_SLEEP_MS};

/// `compute`: `n`, or the original's default.
pub(crate) fn compute<'a>(fields: &Fields<'a>, limits: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Compute { n: parse_n(fields.n, limits)? })
}

/// `crash`: no arguments.
pub(crate) fn crash<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Crash)
}

/// `hang`: no arguments.
pub(crate) fn hang<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Hang)
}

/// `panic`: no arguments.
pub(crate) fn panic<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Panic)
}

/// `sleep`: `ms`, at most [`MAX_SLEEP_MS`].
pub(crate) fn sleep<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    let ms = fields
        .ms
        .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
        .filter(|ms| *ms <= MAX_SLEEP_MS)
        .ok_or_else(|| format!("\"sleep\" needs \"ms\": an integer from 0 to {MAX_SLEEP_MS}"))?;
    Ok(Command::Sleep { ms })
}

/// `n` must be an integer in 0..=max_n; a missing `n` means the original's default.
fn parse_n(raw: Option<&RawValue>, limits: &Limits) -> Result<u64, String> {
    let out_of_range = |shown: &str| {
        format!("\"n\" must be an integer from 0 to {} (the server's --max-n), not {shown}", limits.max_n)
    };
    let n = match raw {
        None => DEFAULT_N,
        Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| out_of_range(raw.get()))?,
    };
    if n > limits.max_n {
        return Err(out_of_range(&n.to_string()));
    }
    Ok(n)
}
