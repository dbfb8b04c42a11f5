//! Fuzzes request parsing with arbitrary payloads: it must never panic, and
//! whatever it accepts must be a well-formed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use threadcenter::protocol::{parse_request, Command, Limits};

fuzz_target!(|payload: &[u8]| {
    for allow_chaos in [false, true] {
        let limits = Limits { max_n: 1_000_000, allow_chaos };
        match parse_request(payload, &limits) {
            Ok(request) => {
                let id = request.id.as_json();
                assert!(id.starts_with('"') || id.starts_with('-') || id.as_bytes()[0].is_ascii_digit());
                if let Command::Compute { n } = request.command {
                    assert!(n <= limits.max_n);
                }
            }
            Err(refused) => assert!(!refused.error.message.is_empty()),
        }
    }
});
