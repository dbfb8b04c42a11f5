//! `ping`, `stats`, `health`: no arguments.

use super::Fields;
use crate::protocol::request::{Command, Limits};

/// `ping`.
pub(crate) fn ping<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Ping)
}

/// `stats`.
pub(crate) fn stats<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Stats)
}

/// `health` (IdentyFire: `health_check`).
pub(crate) fn health<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Health)
}
