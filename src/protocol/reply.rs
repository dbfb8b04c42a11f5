//! Building reply frames.
//!
//! Every function here returns a complete frame (length prefix included),
//! serialized straight into one buffer, ready for the connection's writer.

use serde::Serialize;

use super::{ClientId, ErrorCode};
use crate::frame;

/// Where a job's time went, added to a reply when the request asked for
/// `"timing": true`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    /// The worker that ran the job.
    pub worker: usize,
    /// Microseconds between the job entering the queue and a worker taking it.
    pub queue_us: u64,
    /// Microseconds the worker spent running the job.
    pub service_us: u64,
}

#[derive(Serialize)]
struct ResultReply<'a, T: Serialize> {
    id: &'a ClientId,
    result: &'a T,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    timing: Option<Timing>,
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
pub fn encode_pong(id: &ClientId) -> Vec<u8> {
    to_frame(&PongReply {
        id,
        ok: true,
        pong: true,
    })
}

/// `{"id", "result": ...}`, plus `worker`, `queue_us` and `service_us` when
/// `timing` is given.
pub fn encode_result<T: Serialize>(id: &ClientId, result: &T, timing: Option<Timing>) -> Vec<u8> {
    to_frame(&ResultReply { id, result, timing })
}

/// `{"id": <id or null>, "error": {"code", "message"}}`
pub fn encode_error(id: Option<&ClientId>, code: ErrorCode, message: &str) -> Vec<u8> {
    to_frame(&ErrorReply {
        id,
        error: ErrorBody { code, message },
    })
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
        assert_eq!(
            payload(&encode_pong(&id("1"))),
            r#"{"id":1,"ok":true,"pong":true}"#
        );
        assert_eq!(
            payload(&encode_result(&id("\"a\""), &48u64, None)),
            r#"{"id":"a","result":48}"#
        );
        let timing = Timing {
            worker: 2,
            queue_us: 10,
            service_us: 250,
        };
        assert_eq!(
            payload(&encode_result(&id("1.50"), &113u64, Some(timing))),
            r#"{"id":1.50,"result":113,"worker":2,"queue_us":10,"service_us":250}"#
        );
        assert_eq!(
            payload(&encode_error(
                None,
                ErrorCode::BadJson,
                "the frame is not valid JSON"
            )),
            r#"{"id":null,"error":{"code":"BAD_JSON","message":"the frame is not valid JSON"}}"#
        );
    }
}
