//! How `tc-client`'s one-shot subcommands print what they got: `call`'s
//! reply (as it came in a pipe, indented on a terminal) and the `kernel`
//! and `model` measurements as a sentence (their `--json` is the JSON
//! itself). Pure text in, text out, so the exact output is unit-tested here.

use crate::work::compute::KernelRate;
use crate::work::model::ForwardRate;

/// `tc-client kernel --json`: one JSON object (what `scripts/bench.py` reads).
pub(crate) fn kernel_rate_json(size: u64, measured: &KernelRate) -> String {
    format!(
        "{{\"size\":{size},\"computations\":{},\"seconds\":{:.6},\"per_second\":{:.3}}}",
        measured.computations,
        measured.elapsed.as_secs_f64(),
        measured.per_second()
    )
}

/// `tc-client kernel`'s measurement in words.
pub(crate) fn kernel_rate_sentence(size: u64, measured: &KernelRate) -> String {
    format!(
        "compute n={size} on one thread: {} computations in {:.3} s = {:.1} per second \
         (the ideal farm throughput is workers × this)",
        measured.computations,
        measured.elapsed.as_secs_f64(),
        measured.per_second()
    )
}

/// `tc-client model`'s measurement in words.
pub(crate) fn forward_rate_sentence(rate: &ForwardRate) -> String {
    let threads =
        if rate.threads == 1 { "1 thread".to_string() } else { format!("{} threads", rate.threads) };
    let why = rate.engine_reason.as_deref().map(|why| format!("\n(the engine: {why})")).unwrap_or_default();
    format!(
        "{} on {}, batches of {} on {threads}: {} images in {:.3} s = {:.1} images/s (forward pass only, no decoding){why}",
        rate.model, rate.engine, rate.batch, rate.images, rate.seconds, rate.images_per_second
    )
}

/// A reply as `call` prints it: as it came (one line, for scripts and
/// pipes), or indented when stdout is a terminal and the result is an
/// object or a list (`stats`, `health`, `models`...), so a person can read it.
pub(crate) fn reply_for_display(reply: &str, terminal: bool) -> String {
    let structured = serde_json::from_str::<serde_json::Value>(reply)
        .is_ok_and(|value| value["result"].is_object() || value["result"].is_array());
    if terminal && structured {
        indented(reply)
    } else {
        reply.to_string()
    }
}

/// Valid JSON text, indented by two spaces per level. Works on the text
/// rather than on a parsed value so the keys keep the server's order (which
/// groups related fields: mode, then workers, then connections...).
fn indented(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // `{}` and `[]` stay as they are.
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_model_measurements_read_as_sentences() {
        let measured = KernelRate { computations: 900, elapsed: std::time::Duration::from_secs(2) };
        assert_eq!(
            kernel_rate_sentence(500_000, &measured),
            "compute n=500000 on one thread: 900 computations in 2.000 s = 450.0 per second \
             (the ideal farm throughput is workers × this)"
        );
        let json: serde_json::Value = serde_json::from_str(&kernel_rate_json(500_000, &measured)).unwrap();
        assert_eq!(json["per_second"], 450.0);
        let rate = ForwardRate {
            model: "fire-cnn".into(),
            engine: "tract".into(),
            engine_reason: None,
            batch: 16,
            threads: 2,
            images: 320,
            seconds: 1.0,
            images_per_second: 320.0,
        };
        assert_eq!(
            forward_rate_sentence(&rate),
            "fire-cnn on tract, batches of 16 on 2 threads: 320 images in 1.000 s = 320.0 images/s \
             (forward pass only, no decoding)"
        );
    }

    #[test]
    fn call_indents_an_object_result_on_a_terminal_only() {
        let stats = r#"{"id":1,"result":{"mode":"threads","workers":{"alive":1}}}"#;
        assert_eq!(reply_for_display(stats, false), stats, "a pipe gets the reply as it came");
        let shown = reply_for_display(stats, true);
        assert!(shown.lines().count() > 3 && shown.contains("\n  \"result\": {"), "{shown}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap()["result"]["mode"], "threads");
        assert!(shown.find("mode").unwrap() < shown.find("workers").unwrap(), "the server's order: {shown}");
        let compute = r#"{"id":1,"result":8360}"#;
        assert_eq!(reply_for_display(compute, true), compute, "a number stays on one line");
    }

    #[test]
    fn indenting_leaves_strings_and_empty_brackets_alone() {
        let text = r#"{"a":"x, {y}: \"z\"","b":[],"c":{},"d":[1,{"e":null}]}"#;
        let expected = "{\n  \"a\": \"x, {y}: \\\"z\\\"\",\n  \"b\": [],\n  \"c\": {},\n  \"d\": [\n    1,\n    {\n      \"e\": null\n    }\n  ]\n}";
        assert_eq!(indented(text), expected);
        let back: serde_json::Value = serde_json::from_str(&indented(text)).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(text).unwrap());
    }
}
