//! `auth`: the shared secret of `--auth-token`.

use std::borrow::Cow;

use super::{as_string, Fields};
use crate::protocol::request::{Command, Limits};

/// `auth`: a string `token`.
pub(crate) fn auth<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Auth {
        token: fields
            .token
            .and_then(as_string)
            .map(Cow::into_owned)
            .ok_or_else(|| "\"auth\" needs a string \"token\"".to_string())?,
    })
}
