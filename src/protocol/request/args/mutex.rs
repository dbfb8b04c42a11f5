//! `mutex_acquire`, `mutex_release`.

use super::{client_id, holder, Fields};
use crate::protocol::request::{Command, Limits};

/// `mutex_acquire`: `client_id`, the renewed grant's `token`, `wait_ms`.
pub(crate) fn acquire<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::MutexAcquire {
        client_id: client_id(fields.client_id)?,
        token: holder(fields)?.token,
        wait_ms: match fields.wait_ms {
            None => 0,
            Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                format!("\"wait_ms\" must be a whole number of milliseconds, not {}", raw.get())
            })?,
        },
    })
}

/// `mutex_release`: who gives it back, under which grant.
pub(crate) fn release<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::MutexRelease { holder: holder(fields)? })
}
