//! Parsing a frame's payload into a typed [`Request`].
//!
//! Parsing happens in two steps so that every error can still echo the
//! client's `id`:
//! 1. the payload is split into its top-level fields, each kept as raw JSON
//!    text ([`serde_json::value::RawValue`]) borrowed from the frame — no tree of
//!    `serde_json::Value`s is built;
//! 2. each field we use is checked and converted on its own, so a bad `n`
//!    gives a `BAD_REQUEST` that names `n` *and* carries the request's id.
//!
//! Both dialects share step 2 ([`super::request::args`]): an IdentyFire call is
//! recognised here and handed to [`super::identyfire`] for its envelope.

use serde_json::value::RawValue;

use super::request::args::{as_string, Fields};
use super::request::{
    json_type_name, ClientId, Command, CommandKind, Dialect, Limits, Request, RequestError,
};
use super::{ErrorCode, ReplyError};

/// Decodes and validates one request payload, in either dialect: a frame
/// with `"method"` and no `"cmd"` is an IdentyFire call.
///
/// # Errors
/// `BAD_JSON` when the payload is not UTF-8 JSON; `BAD_REQUEST` when it is
/// not an object or a field is missing, mistyped or out of range;
/// `UNKNOWN_COMMAND` when `cmd` (or `method`) names no command.
pub fn parse_request<'a>(payload: &'a [u8], limits: &Limits) -> Result<Request<'a>, RequestError> {
    // Step 1: the top-level fields, as raw JSON text.
    let envelope = envelope_of(payload)?;
    if let (None, Some(method)) = (envelope.cmd, envelope.method) {
        return super::identyfire::parse_call(method, envelope.params, limits);
    }

    // Step 2: each field on its own, the id first so every error echoes it.
    let id = match envelope.id {
        None => {
            return Err(refusal(
                None,
                ErrorCode::BadRequest,
                "the request has no \"id\"; add a string or number id to match the reply".into(),
            ))
        }
        Some(raw) => ClientId::from_json(raw).map_err(|msg| refusal(None, ErrorCode::BadRequest, msg))?,
    };
    let bad = |code, message: String| refusal(Some(id.clone()), code, message);
    let kind = command_kind(envelope.cmd, limits).map_err(|(code, message)| bad(code, message))?;
    let with_kind = |mut e: RequestError| {
        e.command = Some(kind);
        e
    };

    let timing = match envelope.timing {
        None => false,
        Some(raw) => serde_json::from_str::<bool>(raw.get()).map_err(|_| {
            with_kind(bad(
                ErrorCode::BadRequest,
                format!("\"timing\" must be true or false, not {}", raw.get()),
            ))
        })?,
    };

    let command = Command::read(kind, &envelope, limits)
        .map_err(|message| with_kind(bad(ErrorCode::BadRequest, message)))?;
    Ok(Request { id, command, timing, dialect: Dialect::ThreadCenter })
}

/// A refusal in the ThreadCenter dialect, echoing `id` when it is known.
fn refusal(id: Option<ClientId>, code: ErrorCode, message: String) -> RequestError {
    RequestError { id, error: ReplyError::new(code, message), command: None, dialect: Dialect::ThreadCenter }
}

/// Step 1: the payload as UTF-8 text, a JSON object, split into its
/// top-level fields.
fn envelope_of(payload: &[u8]) -> Result<Fields<'_>, RequestError> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        refusal(
            None,
            ErrorCode::BadJson,
            format!("the frame is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;

    // serde would happily read a struct from a JSON array (field by position),
    // so insist on an object before decoding the envelope.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => refusal(
                None,
                ErrorCode::BadRequest,
                format!("a request must be a JSON object, not {}", json_type_name(text.trim_start())),
            ),
            Err(e) => refusal(None, ErrorCode::BadJson, format!("the frame is not valid JSON: {e}")),
        });
    }

    serde_json::from_str(text).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::BadRequest,
            _ => ErrorCode::BadJson,
        };
        let what = if code == ErrorCode::BadJson { "not valid JSON" } else { "not a valid request" };
        refusal(None, code, format!("the frame is {what}: {e}"))
    })
}

/// The command `"cmd"` names, among those this server offers: chaos
/// commands do not exist unless the server was started with
/// --allow-chaos, so without it they are unknown like any other word.
fn command_kind(cmd: Option<&RawValue>, limits: &Limits) -> Result<CommandKind, (ErrorCode, String)> {
    let name = match cmd {
        None => {
            return Err((
                ErrorCode::BadRequest,
                "the request has no \"cmd\" (e.g. \"cmd\": \"compute\")".into(),
            ))
        }
        Some(raw) => as_string(raw).ok_or_else(|| {
            (ErrorCode::BadRequest, format!("\"cmd\" must be a string, not {}", json_type_name(raw.get())))
        })?,
    };
    let offered = |k: &CommandKind| limits.allow_chaos || !k.is_chaos();
    CommandKind::from_name(&name).filter(offered).ok_or_else(|| {
        let known: Vec<&str> = CommandKind::ALL.iter().filter(|k| offered(k)).map(|k| k.as_str()).collect();
        (
            ErrorCode::UnknownCommand,
            format!("unknown command {:?}; this server knows {}", name, known.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, DEFAULT_N};

    const LIMITS: Limits = Limits { max_n: 1_000_000, allow_chaos: false };
    const CHAOS: Limits = Limits { max_n: 1_000_000, allow_chaos: true };

    fn parse(text: &str) -> Result<Request<'_>, RequestError> {
        parse_request(text.as_bytes(), &LIMITS)
    }

    fn error_code(text: &str) -> ErrorCode {
        parse(text).expect_err(text).error.code
    }

    #[test]
    fn parses_the_original_compute_request() {
        let req = parse(r#"{"id": 7, "cmd": "compute", "n": 500000}"#).unwrap();
        assert_eq!(req.id.as_json(), "7");
        assert_eq!(req.command, Command::Compute { n: 500_000 });
        assert!(!req.timing);
    }

    #[test]
    fn a_missing_n_means_the_original_default() {
        let req = parse(r#"{"id":"a","cmd":"compute"}"#).unwrap();
        assert_eq!(req.command, Command::Compute { n: DEFAULT_N });
    }

    #[test]
    fn ids_are_kept_byte_for_byte() {
        for id in [r#""abc""#, "1.50", "123456789012345678901234567890", "-3", r#""\u00e9""#] {
            let text = format!(r#"{{"id":{id},"cmd":"ping"}}"#);
            let req = parse(&text).unwrap();
            assert_eq!(req.id.as_json(), id);
        }
    }

    #[test]
    fn other_commands_and_timing_are_recognised() {
        assert_eq!(parse(r#"{"id":1,"cmd":"ping"}"#).unwrap().command, Command::Ping);
        assert_eq!(parse(r#"{"id":1,"cmd":"stats"}"#).unwrap().command, Command::Stats);
        assert_eq!(parse(r#"{"id":1,"cmd":"health"}"#).unwrap().command, Command::Health);
        assert_eq!(parse(r#"{"id":1,"cmd":"p\u0069ng"}"#).unwrap().command, Command::Ping);
        assert!(parse(r#"{"id":1,"cmd":"ping","timing":true}"#).unwrap().timing);
        assert!(parse(r#"{"id":1,"cmd":"ping","extra":[1,{"x":2}]}"#).is_ok());
    }

    #[test]
    fn malformed_payloads_get_the_documented_codes() {
        let cases = [
            ("not json", ErrorCode::BadJson),
            (r#"{"id":1,"cmd":"ping""#, ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadRequest),
            ("42", ErrorCode::BadRequest),
            ("\"text\"", ErrorCode::BadRequest),
            (r#"{"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":null,"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":[1],"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":{},"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":1}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":5}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"launch"}"#, ErrorCode::UnknownCommand),
            (r#"{"id":1,"cmd":"compute","n":-1}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":1.5}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":"10"}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":null}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":null}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":1000001}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":99999999999999999999999}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"ping","timing":"yes"}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"id":2,"cmd":"ping"}"#, ErrorCode::BadRequest),
        ];
        for (text, code) in cases {
            assert_eq!(error_code(text), code, "{text}");
        }
    }

    #[test]
    fn chaos_commands_exist_only_with_allow_chaos() {
        for text in [
            r#"{"id":1,"cmd":"crash"}"#,
            r#"{"id":1,"cmd":"hang"}"#,
            r#"{"id":1,"cmd":"panic"}"#,
            r#"{"id":1,"cmd":"sleep","ms":5}"#,
        ] {
            let refused = parse_request(text.as_bytes(), &LIMITS).unwrap_err();
            assert_eq!(refused.error.code, ErrorCode::UnknownCommand, "{text}");
            let advertised = refused.error.message.split("knows").nth(1).unwrap_or_default();
            assert!(!advertised.contains("crash"), "chaos is not advertised: {}", refused.error.message);
            assert!(parse_request(text.as_bytes(), &CHAOS).is_ok(), "{text}");
        }
        let sleep = parse_request(br#"{"id":1,"cmd":"sleep","ms":250}"#, &CHAOS).unwrap();
        assert_eq!(sleep.command, Command::Sleep { ms: 250 });
        for bad in [
            r#"{"id":1,"cmd":"sleep"}"#,
            r#"{"id":1,"cmd":"sleep","ms":-1}"#,
            r#"{"id":1,"cmd":"sleep","ms":3600001}"#,
        ] {
            assert_eq!(
                parse_request(bad.as_bytes(), &CHAOS).unwrap_err().error.code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_carries_a_string_token() {
        let auth = parse(r#"{"id":1,"cmd":"auth","token":"s3cret"}"#).unwrap();
        assert_eq!(auth.command, Command::Auth { token: "s3cret".into() });
        assert_eq!(error_code(r#"{"id":1,"cmd":"auth"}"#), ErrorCode::BadRequest);
        assert_eq!(error_code(r#"{"id":1,"cmd":"auth","token":5}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn invalid_utf8_is_bad_json() {
        let err = parse_request(b"{\"id\":1,\"cmd\":\"\xff\"}", &LIMITS).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadJson);
    }

    #[test]
    fn deeply_nested_json_never_overflows_the_stack() {
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        // In a field the server ignores, it is skipped without recursion.
        let ignored = format!(r#"{{"id":1,"cmd":"ping","x":{nested}}}"#);
        assert!(parse(&ignored).is_ok(), "nesting in an ignored field is harmless");
        // As a value the server reads, it is a clear error.
        let as_n = format!(r#"{{"id":1,"cmd":"compute","n":{nested}}}"#);
        assert_eq!(parse(&as_n).map_err(|e| e.error.code).unwrap_err(), ErrorCode::BadRequest);
        // As the whole request, it is valid JSON but not an object.
        assert_eq!(parse(&nested).map_err(|e| e.error.code).unwrap_err(), ErrorCode::BadRequest);
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parsing answers (Ok or a clear error) and
        /// never panics; whatever it accepts is within the limits.
        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            match parse_request(&payload, &CHAOS) {
                Ok(request) => {
                    if let Command::Compute { n } = request.command {
                        proptest::prop_assert!(n <= CHAOS.max_n);
                    }
                }
                Err(e) => proptest::prop_assert!(!e.error.message.is_empty()),
            }
        }

        /// Valid-looking requests with random fields also never panic.
        #[test]
        fn arbitrary_json_requests_never_panic(id in "[0-9]{1,30}|\"[a-z]{0,8}\"|null|\\[\\]",
                                               cmd in "[a-z]{0,8}|ping|compute|sleep",
                                               n in "-?[0-9]{1,25}(\\.[0-9])?|\"x\"|null") {
            let text = format!(r#"{{"id":{id},"cmd":"{cmd}","n":{n},"ms":{n}}}"#);
            let _ = parse_request(text.as_bytes(), &CHAOS);
        }
    }

    #[test]
    fn errors_after_the_id_was_read_echo_the_id() {
        let err = parse(r#"{"id":"req-9","cmd":"compute","n":-5}"#).unwrap_err();
        assert_eq!(err.id.unwrap().as_json(), r#""req-9""#);
        assert_eq!(err.command, Some(CommandKind::Compute));
        assert!(err.error.message.contains("\"n\""), "{}", err.error.message);
    }
}
