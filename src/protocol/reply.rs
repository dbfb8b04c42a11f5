//! Building reply frames.
//!
//! Every function here returns a complete frame (length prefix included),
//! serialized straight into one buffer, ready for the connection's writer.

use serde::Serialize;

use super::{ClientId, CommandKind, Dialect, ErrorCode, ImageOutcome, JobOutput, ReplyError};
use crate::frame;

/// Where a job's time went, added to a reply when the request asked for
/// `"timing": true`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Timing {
    /// The worker that ran the job.
    pub(crate) worker: usize,
    /// Microseconds between the job entering the queue and a worker taking it.
    pub(crate) queue_us: u64,
    /// Microseconds the worker spent running the job.
    pub(crate) service_us: u64,
}

/// Optional fields a reply may carry besides its result or error.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ReplyExtras {
    /// Where the job's time went (`"timing": true`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) timing: Option<Timing>,
    /// How many workers tried the job, when more than one did (a retry
    /// after a worker crash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<u32>,
    /// `true` when the result came from the result cache, not a worker.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) cached: bool,
}

#[derive(Serialize)]
struct ResultReply<'a, T: Serialize> {
    id: &'a ClientId,
    result: &'a T,
    #[serde(flatten)]
    extras: ReplyExtras,
}

#[derive(Serialize)]
struct PongReply<'a> {
    id: &'a ClientId,
    ok: bool,
    pong: bool,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    id: Option<&'a ClientId>,
    error: ErrorBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
}

/// Serializes `reply` as one frame. Writing our own plain structs into a
/// `Vec` cannot fail (no I/O, no maps with non-string keys), so a failure
/// here is a bug in this module.
fn to_frame(reply: &impl Serialize) -> Vec<u8> {
    frame::encode_with(|out| serde_json::to_writer(out, reply))
        .expect("replies are plain structs that always serialize")
}

/// `{"id", "ok": true, "pong": true}`
pub(crate) fn encode_pong(id: &ClientId) -> Vec<u8> {
    to_frame(&PongReply { id, ok: true, pong: true })
}

/// `{"id", "result": ...}`, plus the extras that are set (`worker`,
/// `queue_us`, `service_us`, `attempts`, `cached`).
pub(crate) fn encode_result<T: Serialize>(id: &ClientId, result: &T, extras: ReplyExtras) -> Vec<u8> {
    to_frame(&ResultReply { id, result, extras })
}

/// `{"id": <id or null>, "error": {"code", "message"}}`
pub(crate) fn encode_error(id: Option<&ClientId>, code: ErrorCode, message: &str) -> Vec<u8> {
    encode_job_error(id, code, message, None)
}

/// An error reply for a job, with `"attempts"` when several workers tried it.
pub(crate) fn encode_job_error(
    id: Option<&ClientId>,
    code: ErrorCode,
    message: &str,
    attempts: Option<u32>,
) -> Vec<u8> {
    to_frame(&ErrorReply { id, error: ErrorBody { code, message }, attempts })
}

/// An IdentyFire reply: the body itself, no id, no envelope.
pub(crate) fn encode_rpc(body: &impl Serialize) -> Vec<u8> {
    to_frame(body)
}

/// An IdentyFire error: `{"success": false, "error": message}`. The shape
/// has no code, so the message is all its clients see.
pub(crate) fn encode_rpc_error(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Failure<'a> {
        success: bool,
        error: &'a str,
    }
    to_frame(&Failure { success: false, error: message })
}

/// An error reply in the request's dialect. IdentyFire's shape has no code,
/// so the message is all its clients see.
pub(crate) fn encode_error_in(
    dialect: Dialect,
    id: Option<&ClientId>,
    error: &ReplyError,
    attempts: Option<u32>,
) -> Vec<u8> {
    match dialect {
        Dialect::ThreadCenter => encode_job_error(id, error.code, &error.message, attempts),
        Dialect::IdentyFire => encode_rpc_error(&error.message),
    }
}

/// The reply frame of a successful job, shaped for its command and dialect.
pub(crate) fn encode_job_reply(
    id: &ClientId,
    output: &JobOutput,
    extras: ReplyExtras,
    command: CommandKind,
    dialect: Dialect,
) -> Vec<u8> {
    match output {
        JobOutput::Compute(value) => encode_result(id, value, extras),
        JobOutput::Slept(ms) => encode_result(id, &serde_json::json!({ "slept_ms": ms }), extras),
        JobOutput::Predictions(outcomes) => {
            encode_predictions(id, outcomes, command == CommandKind::Predict, dialect, extras)
        }
    }
}

/// The reply to `predict` (`single`) or `predict_batch`, in either dialect:
///
/// | | ThreadCenter (`result`) | IdentyFire (body) |
/// |---|---|---|
/// | predict | `{fire_detected, confidence, raw_score}` | `{success, fire_detected, confidence, raw_score}` |
/// | batch | `{results, errors, fires_detected}` | `{success, results, errors, fires_detected}` |
///
/// Batch results carry `filename` and, as IdentyFire named it,
/// `raw_prediction` (ThreadCenter: `raw_score` and the `index` in the request).
pub(crate) fn encode_predictions(
    id: &ClientId,
    outcomes: &[ImageOutcome],
    single: bool,
    dialect: Dialect,
    extras: ReplyExtras,
) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let identyfire = dialect == Dialect::IdentyFire;
    let mut body = if single {
        match outcomes.first().map(|o| &o.result) {
            Some(Ok(p)) => {
                json!({"fire_detected": p.fire_detected, "confidence": p.confidence, "raw_score": p.raw_score})
            }
            Some(Err(message)) => {
                return encode_error_in(
                    dialect,
                    Some(id),
                    &ReplyError::new(ErrorCode::BadImage, message),
                    None,
                )
            }
            None => {
                let error = ReplyError::new(ErrorCode::Internal, "no prediction");
                return encode_error_in(dialect, Some(id), &error, None);
            }
        }
    } else {
        let (mut results, mut errors) = (Vec::new(), Vec::new());
        for (index, outcome) in outcomes.iter().enumerate() {
            let mut entry = Map::new();
            if !identyfire {
                entry.insert("index".into(), json!(index));
            }
            entry.insert("filename".into(), json!(outcome.filename));
            match &outcome.result {
                Ok(p) => {
                    entry.insert("fire_detected".into(), json!(p.fire_detected));
                    entry.insert("confidence".into(), json!(p.confidence));
                    entry.insert(
                        if identyfire { "raw_prediction" } else { "raw_score" }.into(),
                        json!(p.raw_score),
                    );
                    results.push(Value::Object(entry));
                }
                Err(message) => {
                    entry.insert("error".into(), json!(message));
                    errors.push(Value::Object(entry));
                }
            }
        }
        let fires = outcomes.iter().filter(|o| o.result.as_ref().is_ok_and(|p| p.fire_detected)).count();
        json!({"results": results, "errors": errors, "fires_detected": fires})
    };
    if identyfire {
        body["success"] = json!(true);
        encode_rpc(&body)
    } else {
        encode_result(id, &body, extras)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn id(text: &str) -> ClientId {
        ClientId::from_json(&RawValue::from_string(text.to_string()).unwrap()).unwrap()
    }

    fn payload(frame: &[u8]) -> &str {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix must cover the payload");
        std::str::from_utf8(&frame[4..]).unwrap()
    }

    #[test]
    fn replies_have_the_documented_shapes() {
        assert_eq!(payload(&encode_pong(&id("1"))), r#"{"id":1,"ok":true,"pong":true}"#);
        assert_eq!(
            payload(&encode_result(&id("\"a\""), &48u64, ReplyExtras::default())),
            r#"{"id":"a","result":48}"#
        );
        let timing = Timing { worker: 2, queue_us: 10, service_us: 250 };
        let extras = ReplyExtras { timing: Some(timing), attempts: Some(2), cached: false };
        assert_eq!(
            payload(&encode_result(&id("1.50"), &113u64, extras)),
            r#"{"id":1.50,"result":113,"worker":2,"queue_us":10,"service_us":250,"attempts":2}"#
        );
        let cached = ReplyExtras { cached: true, ..ReplyExtras::default() };
        assert_eq!(payload(&encode_result(&id("3"), &8u64, cached)), r#"{"id":3,"result":8,"cached":true}"#);
        assert_eq!(
            payload(&encode_job_error(Some(&id("4")), ErrorCode::WorkerCrashed, "died", Some(2))),
            r#"{"id":4,"error":{"code":"WORKER_CRASHED","message":"died"},"attempts":2}"#
        );
        assert_eq!(
            payload(&encode_error(None, ErrorCode::BadJson, "the frame is not valid JSON")),
            r#"{"id":null,"error":{"code":"BAD_JSON","message":"the frame is not valid JSON"}}"#
        );
        assert_eq!(
            payload(&encode_error_in(
                Dialect::IdentyFire,
                None,
                &ReplyError::new(ErrorCode::BadImage, "bad"),
                None
            )),
            r#"{"success":false,"error":"bad"}"#
        );
    }
}
