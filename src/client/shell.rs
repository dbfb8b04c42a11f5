//! `tc-client shell`: an interactive prompt, handy in class.
//!
//! Type `ping`, `compute 500000`, `stats`, `health`, or any raw JSON request;
//! each reply is printed with its round-trip time. Line editing and history
//! come from rustyline; when stdin is not a terminal, lines are read as they
//! come, so the shell can also be scripted (`printf 'ping\n' | tc-client shell`).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;

use super::connection::ServerConnection;
use crate::error::{Error, Result};

/// What one input line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum ShellAction {
    /// Send this JSON request (an id is filled in).
    Send(serde_json::Value),
    /// Print the help text.
    Help,
    /// Leave the shell.
    Quit,
    /// Nothing (an empty line).
    Nothing,
}

/// The help text shown by `help`.
pub(crate) const HELP: &str = "\
commands:
  ping                 round trip without a worker
  compute [N]          run the original job with n = N (default 1000000)
  stats                the server's counters, workers and latencies
  health               workers alive vs configured
  {\"cmd\": ...}         any request as raw JSON (an id is added if missing)
  help                 this text
  quit                 leave (or Ctrl-D)";

/// Turns one input line into an action.
///
/// # Errors
/// A message for a line that is neither a command nor a JSON object.
pub(crate) fn parse_line(line: &str) -> std::result::Result<ShellAction, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(ShellAction::Nothing);
    }
    if line.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("that is not valid JSON: {e}"))?;
        return if value.is_object() {
            Ok(ShellAction::Send(value))
        } else {
            Err("a request must be a JSON object".into())
        };
    }
    // `[1,2]`, `"ping"` or `42` are JSON too, just not a request: say so
    // rather than calling them an unknown command.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            _ => "a constant",
        };
        return Err(format!(
            "that is JSON, but {kind}, not an object; a request is an object such as {{\"cmd\":\"ping\"}}"
        ));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let command = words[0].to_ascii_lowercase();
    let arguments = &words[1..];
    let no_argument =
        |command: &str| format!("{command} takes no argument (got {:?}); type help", arguments.join(" "));
    match (command.as_str(), arguments) {
        ("quit" | "exit", []) => Ok(ShellAction::Quit),
        ("help" | "?", []) => Ok(ShellAction::Help),
        ("ping" | "stats" | "health", []) => Ok(ShellAction::Send(serde_json::json!({ "cmd": command }))),
        ("quit" | "exit" | "help" | "?" | "ping" | "stats" | "health", _) => Err(no_argument(&command)),
        ("compute", []) => Ok(ShellAction::Send(serde_json::json!({"cmd": "compute"}))),
        ("compute", [n]) => {
            let n: u64 = crate::units::parse_whole_number(n).map_err(|why| format!("{n:?} {why}"))?;
            Ok(ShellAction::Send(serde_json::json!({"cmd": "compute", "n": n, "timing": true})))
        }
        ("compute", _) => {
            Err(format!("compute takes one number, the n (got {:?}); type help", arguments.join(" ")))
        }
        (other, _) => Err(format!("unknown command {other:?}; type help")),
    }
}

/// The request `tc-client call WORDS...` sends: the shell's shorthand
/// (`call ping`, `call compute 1000`), a JSON object, or either of them read
/// from a file (`call @request.json`) or from standard input (`call -`) — a
/// request with an image in it is too long for a command line.
///
/// # Errors
/// A sentence showing the accepted forms; an unreadable file, named.
pub(crate) fn request_from_words(words: &[String]) -> Result<serde_json::Value> {
    let forms = "give a command (ping, stats, health, compute N), a JSON object in single quotes, \
                 @FILE or - (standard input), e.g. tc-client call ping or tc-client call '{\"cmd\":\"ping\"}'";
    let (line, source) = match words {
        [only] if only == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::io("reading the request from standard input (call -)", e))?;
            (text, Some("standard input".to_string()))
        }
        [only] if only.starts_with('@') => {
            let path = &only[1..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::input(path, format!("cannot read the request file (call @FILE): {e}")))?;
            (text, Some(path.to_string()))
        }
        _ => (words.join(" "), None),
    };
    // A request read from a file may be long: name the file, not its text.
    let what = source.map_or_else(|| format!("{line:?}"), |source| format!("the request in {source}"));
    match parse_line(&line) {
        // The shell asks for timings to show them; `call` prints the reply
        // as the server gives it to any client, so it sends the plain request.
        Ok(ShellAction::Send(mut value)) => {
            if !line.trim_start().starts_with('{') {
                if let Some(object) = value.as_object_mut() {
                    object.remove("timing");
                }
            }
            Ok(value)
        }
        Ok(_) => Err(Error::Usage(format!("nothing to send in {what}: {forms}"))),
        Err(why) => {
            let why = why.trim_end_matches("; type help");
            Err(Error::Usage(format!("cannot send {what} ({why}): {forms}")))
        }
    }
}

/// Runs the prompt until `quit` or end of input.
///
/// # Errors
/// Only when the terminal cannot be used at all; connection problems are
/// printed and the shell carries on (it reconnects on the next request).
pub(crate) fn run(
    host: &str,
    port: u16,
    timeout: Duration,
    token: Option<&str>,
    tls: Option<&crate::client::tls::ClientTls>,
) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Terminal(format!("cannot open it for the shell: {e}")))?;
    let mut connection: Option<ServerConnection> = None;
    let mut next_id: u64 = 1;
    println!("tc-client shell -> {host}:{port} (type help, quit to leave)");
    loop {
        let line = match editor.readline("tc> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Terminal(format!("cannot read input: {e}"))),
        };
        let _ = editor.add_history_entry(line.as_str());
        let mut request = match parse_line(&line) {
            Ok(ShellAction::Send(request)) => request,
            Ok(ShellAction::Help) => {
                println!("{HELP}");
                continue;
            }
            Ok(ShellAction::Quit) => break,
            Ok(ShellAction::Nothing) => continue,
            Err(message) => {
                println!("! {message}");
                continue;
            }
        };
        if let Some(object) = request.as_object_mut() {
            object.entry("id").or_insert_with(|| serde_json::Value::from(next_id));
        }
        next_id += 1;
        match round_trip(&mut connection, (host, port, token, tls), timeout, &request) {
            Ok((reply, elapsed)) => println!("{reply}  ({:.3} ms)", elapsed.as_secs_f64() * 1000.0),
            Err(e) => {
                println!("! {}", with_causes(&e));
                connection = None; // reconnect next time
            }
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

/// Sends one request on the shell's connection (opening it if needed).
fn round_trip(
    connection: &mut Option<ServerConnection>,
    (host, port, token, tls): (&str, u16, Option<&str>, Option<&crate::client::tls::ClientTls>),
    timeout: Duration,
    request: &serde_json::Value,
) -> Result<(String, Duration)> {
    // Between two lines the server may have closed the connection (its
    // --idle-timeout, or a restart): start afresh rather than read its
    // goodbye as the reply to this request.
    if connection.as_ref().is_some_and(ServerConnection::closed_by_server) {
        println!("(the server closed the connection while the shell was idle; reconnecting)");
        *connection = None;
    }
    if connection.is_none() {
        let mut fresh = ServerConnection::connect(host, port, timeout, tls)?;
        if let Some(token) = token {
            fresh.authenticate(token)?;
        }
        *connection = Some(fresh);
    }
    let conn = connection.as_mut().expect("connected just above");
    let payload = serde_json::to_vec(request).map_err(|e| Error::Usage(e.to_string()))?;
    let started = Instant::now();
    conn.send(&payload)?;
    let reply = conn.receive()?;
    let elapsed = started.elapsed();
    Ok((String::from_utf8_lossy(reply).into_owned(), elapsed))
}

/// An error and its causes on one line ("connecting to 127.0.0.1:1:
/// Connection refused"): the shell prints it and goes on, so it cannot hand
/// the error to the binary's reporter.
fn with_causes(error: &Error) -> String {
    let mut line = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        line = format!("{line}: {inner}");
        cause = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_and_json_become_requests() {
        assert_eq!(parse_line("ping"), Ok(ShellAction::Send(json!({"cmd": "ping"}))));
        assert_eq!(parse_line("  STATS "), Ok(ShellAction::Send(json!({"cmd": "stats"}))));
        assert_eq!(
            parse_line("compute 500000"),
            Ok(ShellAction::Send(json!({"cmd": "compute", "n": 500000, "timing": true})))
        );
        assert_eq!(
            parse_line(r#"{"cmd":"compute","n":3}"#),
            Ok(ShellAction::Send(json!({"cmd": "compute", "n": 3})))
        );
        assert_eq!(parse_line(""), Ok(ShellAction::Nothing));
        assert_eq!(parse_line("quit"), Ok(ShellAction::Quit));
        assert_eq!(parse_line("help"), Ok(ShellAction::Help));
    }

    #[test]
    fn nonsense_gets_a_message_not_a_request() {
        for bad in ["fly", "compute lots", "ping now", "{not json", "[1,2]", "compute 1 2"] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_mistake_gets_its_own_sentence() {
        let message = |line: &str| parse_line(line).unwrap_err();
        assert!(
            message("ping extra").starts_with("ping takes no argument (got \"extra\")"),
            "{}",
            message("ping extra")
        );
        assert!(message("[1,2]").contains("JSON, but an array, not an object"), "{}", message("[1,2]"));
        assert!(message("42").contains("JSON, but a number"), "{}", message("42"));
        assert!(message("compute -5").contains("\"-5\" must not be negative"), "{}", message("compute -5"));
        assert!(message("compute 1 2").contains("compute takes one number"), "{}", message("compute 1 2"));
        assert!(message("fly").starts_with("unknown command \"fly\""), "{}", message("fly"));
    }
}
