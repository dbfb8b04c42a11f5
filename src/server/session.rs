//! What a command sees of its connection: a [`Session`] — who is asking, and
//! the one way to answer (inline replies, each counted in the stats).
//!
//! The reader thread ([`super::reader`]) owns the session and the loop;
//! the commands ([`super::cmd`]) only answer through it. Keeping the two
//! apart means a command cannot read frames, and the loop holds no
//! command's logic.

use std::net::IpAddr;
use std::time::Instant;

use super::Farm;
use crate::protocol::{
    encode_error_in, encode_result, encode_rpc, ClientId, CommandKind, Dialect, ReplyError, ReplyExtras,
    Request,
};
use crate::server::jobs::registry::ConnId;
use crate::server::replies::InlineReplies;
use crate::server::stats::ReplyOutcome;

/// Whether the connection goes on after a request.
#[derive(PartialEq, Eq)]
pub(crate) enum Continue {
    Yes,
    Close,
}

/// One connection's state.
pub(crate) struct Session<'a> {
    pub(crate) farm: &'a Farm,
    pub(crate) conn_id: ConnId,
    /// The client's socket, to see whether it is still there while this
    /// reader waits on its behalf (a blocked `mutex_acquire`).
    pub(crate) peer: std::sync::Arc<crate::transport::Transport>,
    pub(crate) client: Option<IpAddr>,
    pub(crate) authenticated: bool,
    /// Replies produced here, written in batches (see [`InlineReplies`]).
    pub(crate) inline: InlineReplies,
    /// When the frame being served was read: its latency starts here.
    pub(crate) received: Instant,
    /// Its command, once known (`None`: not parsed, or not a known command).
    pub(crate) command: Option<CommandKind>,
}

impl Session<'_> {
    /// Who this connection is to the accelerator mutex when it calls itself
    /// `client`: IdentyFire's clients by name alone (a new connection for
    /// every call, as in the original), native clients by name and
    /// connection.
    pub(crate) fn claimant(&self, dialect: Dialect, client: &str) -> crate::server::lock::Claimant {
        let connection = match dialect {
            Dialect::IdentyFire => None,
            Dialect::ThreadCenter => Some(self.conn_id),
        };
        crate::server::lock::Claimant { client: client.to_owned(), connection }
    }

    /// A successful answer: `{"id","result": body}`, or for IdentyFire the
    /// body itself with `"success": true`.
    pub(crate) fn reply_ok(&mut self, request: &Request<'_>, mut body: serde_json::Value) {
        match request.dialect {
            Dialect::ThreadCenter => {
                self.answer_ok(&encode_result(&request.id, &body, ReplyExtras::default()))
            }
            Dialect::IdentyFire => {
                if body.get("success").is_none() {
                    body["success"] = true.into();
                }
                self.answer_ok(&encode_rpc(&body))
            }
        }
    }

    /// Sends a successful reply produced here (not by a worker).
    pub(crate) fn answer_ok(&mut self, frame: &[u8]) {
        self.answer(frame, ReplyOutcome::Ok);
    }

    /// Sends a reply produced here, and counts it: every frame read is
    /// answered through this (or, for jobs, by the completer), so the
    /// `replies` counters and the request-latency histogram see them all.
    pub(crate) fn answer(&mut self, frame: &[u8], outcome: ReplyOutcome) {
        self.farm.stats.replied(self.command, outcome, self.received.elapsed());
        self.inline.push(frame);
    }

    /// Answers `request` with an error, in its dialect.
    pub(crate) fn refuse(&mut self, request: &Request<'_>, error: ReplyError) {
        self.reply_error(request.dialect, Some(&request.id), &error);
    }

    /// Answers with an error, inline, in the given dialect (the id may be
    /// unknown when the request could not be read).
    pub(crate) fn reply_error(&mut self, dialect: Dialect, id: Option<&ClientId>, error: &ReplyError) {
        self.answer(&encode_error_in(dialect, id, error, None), ReplyOutcome::Error(error.code));
    }
}
