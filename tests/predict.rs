//! Predictions against the real server: the shipped samples in both pool
//! modes, batches, the `model` command, bad images, and `load_model`'s
//! refusal to leave `--models-dir`.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::{error_code, TestServer};
use serde_json::{json, Value};

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples")
}

/// `(file name, whether it shows fire, base64)` for every shipped sample.
fn samples() -> Vec<(String, bool, String)> {
    let mut files: Vec<_> = std::fs::read_dir(samples_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4, "the repository ships sample images");
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let fire = name.starts_with("fire");
            let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&path).unwrap());
            (name, fire, b64)
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn the_samples_are_classified_correctly_in_both_modes() {
    let samples = samples();
    for mode in common::MODES {
        let server = TestServer::start(mode, 2, &[]);
        let mut client = server.connect();
        for (name, fire, image) in &samples {
            let reply =
                client.request(json!({"id": name, "cmd": "predict", "image_b64": image, "filename": name}));
            let result = &reply["result"];
            assert_eq!(result["fire_detected"], *fire, "{mode}: {name}: {reply}");
            let score = result["raw_score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score), "{reply}");
            let expected_confidence = if *fire { score } else { 1.0 - score } * 100.0;
            assert!((result["confidence"].as_f64().unwrap() - expected_confidence).abs() < 1e-3, "{reply}");
        }
    }
}

#[test]
fn a_batch_reports_bad_images_without_spoiling_the_others() {
    let samples = samples();
    for mode in common::MODES {
        let server = TestServer::start(mode, 1, &[]);
        let mut images: Vec<Value> =
            samples.iter().map(|(name, _, image)| json!({"filename": name, "image_b64": image})).collect();
        images.insert(1, json!({"filename": "broken.png", "image_b64": "%%% not base64 %%%"}));
        images.insert(3, json!({"filename": "notes.txt", "image_b64": b64(b"just some text, not an image")}));
        let reply = server.request(json!({"id": 1, "cmd": "predict_batch", "images": images}));
        let result = &reply["result"];
        let results = result["results"].as_array().unwrap();
        let errors = result["errors"].as_array().unwrap();
        assert_eq!(results.len(), samples.len(), "{mode}: {reply}");
        assert_eq!(errors.len(), 2, "{reply}");
        assert_eq!(errors[0]["filename"], "broken.png");
        assert!(errors[0]["error"].as_str().unwrap().contains("base64"), "{reply}");
        assert_eq!(errors[1]["filename"], "notes.txt");
        assert!(errors[1]["error"].as_str().unwrap().contains("not a PNG, JPEG, BMP or GIF"), "{reply}");
        let fires = samples.iter().filter(|(_, fire, _)| *fire).count();
        assert_eq!(result["fires_detected"], fires, "{reply}");
        for (entry, (name, fire, _)) in results.iter().zip(&samples) {
            assert_eq!(entry["filename"], *name.as_str());
            assert_eq!(entry["fire_detected"], *fire, "{entry}");
        }
    }
}

#[test]
fn bad_images_get_clear_errors() {
    let server = TestServer::start("processes", 1, &["--max-image-bytes", "1KiB"]);
    let mut client = server.connect();
    let cases = [
        (json!({"id": 1, "cmd": "predict", "image_b64": "@@@@"}), "BAD_IMAGE", "base64"),
        (
            json!({"id": 2, "cmd": "predict", "image_b64": b64(b"hello, I am a text file")}),
            "BAD_IMAGE",
            "not a PNG",
        ),
        (
            json!({"id": 3, "cmd": "predict", "image_b64": b64(&[7u8; 4096])}),
            "IMAGE_TOO_LARGE",
            "--max-image-bytes",
        ),
        (json!({"id": 4, "cmd": "predict", "image_b64": ""}), "BAD_IMAGE", "empty"),
        (json!({"id": 5, "cmd": "predict"}), "BAD_REQUEST", "image_b64"),
        (json!({"id": 6, "cmd": "predict_batch", "images": []}), "BAD_REQUEST", "empty"),
        (json!({"id": 7, "cmd": "predict_batch", "images": "x"}), "BAD_REQUEST", "list"),
    ];
    for (request, code, words) in cases {
        let reply = client.request(request.clone());
        assert_eq!(error_code(&reply), Some(code), "{request} -> {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{request} -> {message}");
    }
    // A PNG that ends half-way is refused by the decoder, on the worker.
    let png = std::fs::read(samples_dir().join("fire-1.png")).unwrap();
    let mut cut_server_side = TestServer::start("threads", 1, &[]);
    let reply = cut_server_side.request(json!({"id": 8, "cmd": "predict", "image_b64": b64(&png[..200])}));
    assert_eq!(error_code(&reply), Some("BAD_IMAGE"), "{reply}");
    // The connection and the workers are fine afterwards.
    assert_eq!(client.request(json!({"id": 9, "cmd": "ping"}))["pong"], true);
    assert_eq!(cut_server_side.stats()["workers"]["alive"], 1);
    cut_server_side.terminate();
}

#[test]
fn the_model_command_describes_the_network() {
    let server = TestServer::start("threads", 1, &["--threshold", "0.7"]);
    let reply = server.request(json!({"id": 1, "cmd": "model"}));
    let model = &reply["result"];
    assert_eq!(model["name"], "fire-cnn", "{reply}");
    assert_eq!(model["input_shape"], json!([150, 150, 3]));
    assert!(model["parameters"].as_u64().unwrap() > 100_000);
    // The shipped model is ONNX: its nodes, one line each.
    assert!(model["path"].as_str().unwrap().ends_with("fire-cnn.onnx"), "{reply}");
    assert!(model["layers"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().starts_with("Conv")));
    assert_eq!(model["sha256"].as_str().unwrap().len(), 64);
    assert!((model["threshold"].as_f64().unwrap() - 0.7).abs() < 1e-6);
}

#[test]
fn get_current_model_has_the_model_object_identyfires_gui_reads() {
    let server = TestServer::start("threads", 1, &[]);
    let reply = server.request(json!({"method": "get_current_model", "params": {}}));
    assert_eq!(reply["success"], true, "{reply}");
    // client_gui.py shows response["model"]["name"] as the model status.
    assert_eq!(reply["model"]["name"], "fire-cnn", "{reply}");
    assert_eq!(reply["model"]["loaded"], true, "{reply}");
    assert!(reply["model"]["info"].as_str().unwrap().contains("150x150x3"), "{reply}");
    // Today's flat fields stay beside it.
    assert_eq!(reply["model_name"], "fire-cnn", "{reply}");
    assert_eq!(reply["input_shape"], json!([150, 150, 3]), "{reply}");
}

#[test]
fn load_model_stays_inside_the_models_directory() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fire-cnn.safetensors");
    std::fs::copy(&shipped, models.join("copy.safetensors")).unwrap();
    std::fs::copy(&shipped, root.path().join("outside.safetensors")).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.safetensors"), models.join("escape.safetensors"))
        .unwrap();
    let dir = models.to_str().unwrap();
    let server = TestServer::start("processes", 1, &["--models-dir", dir]);
    let mut client = server.connect();
    let outside = root.path().join("outside.safetensors");
    for path in [outside.to_str().unwrap(), "../outside.safetensors", "escape.safetensors", "/etc/passwd"] {
        let reply = client.request(json!({"id": 1, "cmd": "load_model", "model_path": path}));
        assert_eq!(error_code(&reply), Some("FORBIDDEN"), "{path}: {reply}");
    }
    let reply = client.request(json!({"id": 2, "cmd": "load_model", "model_path": "missing.safetensors"}));
    assert_eq!(error_code(&reply), Some("MODEL_UNAVAILABLE"), "{reply}");
    let listed = client.request(json!({"id": 3, "cmd": "models"}));
    assert_eq!(listed["result"]["models"], json!(["copy.safetensors", "escape.safetensors"]), "{listed}");
    // A file inside is loaded, and predictions go on with it.
    let reply = client.request(json!({"id": 4, "cmd": "load_model", "model_path": "copy.safetensors"}));
    assert!(reply["result"]["path"].as_str().unwrap().ends_with("copy.safetensors"), "{reply}");
    let (name, fire, image) = samples().into_iter().next().unwrap();
    let reply = client.request(json!({"id": 5, "cmd": "predict", "image_b64": image, "filename": name}));
    assert_eq!(reply["result"]["fire_detected"], fire, "{reply}");
}

#[test]
fn models_switch_under_load_between_onnx_and_safetensors_and_a_refused_one_keeps_the_current() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (from, to) in [
        ("models/fire-cnn.onnx", "fire-cnn.onnx"),
        ("models/fire-cnn.safetensors", "fire-cnn.safetensors"),
        ("tests/models/nchw-two-class.onnx", "two-class.onnx"),
        ("tests/models/refused-unsupported-op.onnx", "leaky.onnx"),
    ] {
        std::fs::copy(repo.join(from), dir.path().join(to)).unwrap();
    }
    let models_dir = dir.path().to_str().unwrap();
    let model = dir.path().join("fire-cnn.onnx");
    let server =
        TestServer::start("processes", 2, &["--models-dir", models_dir, "--model", model.to_str().unwrap()]);
    let listed = server.request(json!({"id": 1, "cmd": "models"}));
    assert_eq!(
        listed["result"]["models"],
        json!(["fire-cnn.onnx", "fire-cnn.safetensors", "leaky.onnx", "two-class.onnx"]),
        "{listed}"
    );
    let samples = samples();
    std::thread::scope(|scope| {
        // Load: predictions on one connection while the model changes on another.
        let load = scope.spawn(|| {
            let mut client = server.connect();
            for round in 0..40u64 {
                let (name, _, image) = &samples[round as usize % samples.len()];
                let reply = client
                    .request(json!({"id": round, "cmd": "predict", "image_b64": image, "filename": name}));
                // One ok reply per request, whichever model answered it.
                assert_eq!(reply["id"], round, "{reply}");
                let score = reply["result"]["raw_score"].as_f64();
                assert!(score.is_some_and(|s| (0.0..=1.0).contains(&s)), "round {round}: {reply}");
            }
        });
        let mut admin = server.connect();
        for (round, file) in
            ["fire-cnn.safetensors", "two-class.onnx", "fire-cnn.onnx", "two-class.onnx"].iter().enumerate()
        {
            let reply = admin.request(json!({"id": round, "cmd": "load_model", "model_path": file}));
            assert!(reply["result"]["path"].as_str().unwrap().ends_with(file), "{reply}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let refused = admin.request(json!({"id": 9, "cmd": "load_model", "model_path": "leaky.onnx"}));
        assert_eq!(error_code(&refused), Some("MODEL_UNAVAILABLE"), "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("LeakyRelu"), "{refused}");
        let current = admin.request(json!({"id": 10, "cmd": "model"}));
        assert_eq!(
            current["result"]["name"], "nchw-two-class",
            "the refused file changed nothing: {current}"
        );
        assert_eq!(current["result"]["input_shape"], json!([32, 40, 3]), "{current}");
        load.join().unwrap();
    });
    // The two-class model answers with its own scores (fire = class 1).
    let (name, _, image) = &samples[0];
    let reply = server.request(json!({"id": 11, "cmd": "predict", "image_b64": image, "filename": name}));
    assert!(reply["result"]["raw_score"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{reply}");
}

#[test]
fn onnxruntime_and_tract_give_the_same_scores_in_both_modes() {
    if !common::tract_built_in("onnxruntime_and_tract_give_the_same_scores_in_both_modes") {
        return;
    }
    let Some(library) = common::pip_onnxruntime() else { return };
    let library = library.to_str().unwrap();
    let samples = samples();
    let scores = |server: &TestServer| -> Vec<f64> {
        samples
            .iter()
            .map(|(name, fire, image)| {
                let reply =
                    server.request(json!({"id": 1, "cmd": "predict", "image_b64": image, "filename": name}));
                assert_eq!(reply["result"]["fire_detected"], *fire, "{reply}");
                reply["result"]["raw_score"].as_f64().unwrap()
            })
            .collect()
    };
    let tract = TestServer::start("threads", 1, &["--engine", "tract"]);
    let model = tract.request(json!({"id": 1, "cmd": "model"}));
    assert_eq!(model["result"]["engine"], "tract", "{model}");
    let reference = scores(&tract);
    for mode in ["threads", "processes"] {
        let server = TestServer::start(mode, 2, &["--onnxruntime", library]);
        let model = server.request(json!({"id": 1, "cmd": "model"}));
        assert!(model["result"]["engine"].as_str().unwrap().starts_with("onnxruntime ("), "{model}");
        assert_eq!(model["result"]["engine_reason"], "--onnxruntime", "{model}");
        let stats = server.stats();
        assert_eq!(
            (&stats["engine"], &stats["engine_reason"]),
            (&model["result"]["engine"], &json!("--onnxruntime"))
        );
        for (ours, theirs) in scores(&server).iter().zip(&reference) {
            assert!((ours - theirs).abs() < 1e-4, "{mode}: onnxruntime {ours} vs tract {theirs}");
        }
    }
}

/// `tc-client model --json` of the shipped model with `args` and `env`: its
/// engine and why.
fn engine_of(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(["model", "--batch", "1", "-d", "50ms", "--json"])
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("THREADCENTER_ONNXRUNTIME")
        .env_remove("THREADCENTER_ENGINE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let rate: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (rate["engine"].as_str().unwrap().to_string(), rate["engine_reason"].as_str().unwrap().to_string())
}

#[test]
fn the_engine_is_onnxruntime_when_one_is_found_and_says_why_else_tract() {
    if !common::tract_built_in("the_engine_is_onnxruntime_when_one_is_found_and_says_why_else_tract") {
        return;
    }
    // No python3 on PATH and no ORT_DYLIB_PATH: nothing to find.
    let empty = tempfile::tempdir().unwrap();
    let no_python = [("PATH", empty.path().to_str().unwrap())];
    let (engine, why) = engine_of(&[], &no_python);
    assert_eq!(engine, "tract");
    assert!(why.starts_with("no onnxruntime found") && why.contains("pip install onnxruntime"), "{why}");
    // A path that is not onnxruntime: said, and tract runs.
    let (engine, why) = engine_of(&[], &[no_python[0], ("ORT_DYLIB_PATH", "/etc/hostname")]);
    assert_eq!(engine, "tract");
    assert!(why.contains("ORT_DYLIB_PATH /etc/hostname: cannot load it as onnxruntime"), "{why}");
    assert!(why.ends_with("running on tract instead"), "{why}");
    // --engine onnxruntime refuses to run without one.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--engine", "onnxruntime"])
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("THREADCENTER_ONNXRUNTIME")
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--engine onnxruntime: no onnxruntime found"), "{stderr}");

    let Some(library) = common::pip_onnxruntime() else { return };
    let library = library.to_str().unwrap();
    // What `pip install onnxruntime` put there is found by itself...
    let (engine, why) = engine_of(&[], &[]);
    assert_eq!(engine, format!("onnxruntime ({library})"));
    assert_eq!(why, "found by python3's onnxruntime package");
    // ... ORT_DYLIB_PATH comes before it, and --engine tract wins over both.
    let (engine, why) =
        engine_of(&[], &[("ORT_DYLIB_PATH", library), ("PATH", empty.path().to_str().unwrap())]);
    assert_eq!((engine.starts_with("onnxruntime ("), why.as_str()), (true, "found by ORT_DYLIB_PATH"));
    assert_eq!(engine_of(&["--engine", "tract"], &[]), ("tract".to_string(), "--engine tract".to_string()));
}

#[test]
fn without_onnxruntime_or_tract_the_feature_is_named_and_the_shipped_network_still_serves() {
    // Nothing to find: no python3 on PATH, no ORT_DYLIB_PATH.
    let empty = tempfile::tempdir().unwrap();
    let nothing = [("PATH", empty.path().to_str().unwrap())];
    let cleared = |command: &mut std::process::Command| {
        command
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("THREADCENTER_ONNXRUNTIME")
            .env_remove("THREADCENTER_ENGINE")
            .envs(nothing);
    };
    let mut model = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"));
    model.args(["model", "--engine", "tract", "-d", "50ms"]);
    cleared(&mut model);
    let out = model.output().unwrap();
    if cfg!(feature = "tract") {
        assert!(out.status.success(), "{out:?}");
        return;
    }
    // A build without the tract feature names it, for --engine tract...
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("this build has no tract engine") && stderr.contains("--features tract"),
        "{stderr}"
    );
    // ... and for an ONNX file with no engine to run it.
    let mut model = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"));
    model
        .args(["model", "--model", "models/fire-cnn.onnx", "-d", "50ms"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cleared(&mut model);
    let stderr = String::from_utf8_lossy(&model.output().unwrap().stderr).into_owned();
    assert!(stderr.contains("no ONNX engine") && stderr.contains("--features tract"), "{stderr}");
    // The server still predicts: the shipped network's twin, on ndarray.
    let server = TestServer::start_with(&["--port", "0", "--mode", "threads", "--workers", "1"], &nothing);
    let model = server.request(json!({"id": 1, "cmd": "model"}));
    assert_eq!(model["result"]["engine"], "ndarray", "{model}");
    let (name, fire, image) = &samples()[0];
    let reply = server.request(json!({"id": 2, "cmd": "predict", "image_b64": image, "filename": name}));
    assert_eq!(reply["result"]["fire_detected"], *fire, "{reply}");
}

#[test]
fn a_library_that_is_not_onnxruntime_is_refused_at_start_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--onnxruntime", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--onnxruntime /etc/hostname: cannot load it as onnxruntime"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--onnxruntime", "/nonexistent/libonnxruntime.so"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such file"), "{output:?}");
}

/// A scratch `--models-dir` holding copies of the given `tests/models/` files.
fn test_models_dir(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    for file in files {
        std::fs::copy(models.join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// Every shipped sample's score from one `predict_batch`, in order.
fn batch_scores(server: &TestServer) -> Vec<f64> {
    let images: Vec<Value> =
        samples().iter().map(|(name, _, image)| json!({"filename": name, "image_b64": image})).collect();
    let reply = server.request(json!({"id": 1, "cmd": "predict_batch", "images": images}));
    let results = reply["result"]["results"].as_array().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(results.len(), images.len(), "{reply}");
    results.iter().map(|r| r["raw_score"].as_f64().unwrap()).collect()
}

/// What a refused `load_model` or `--model` says after the file's path.
fn reason(message: &str) -> &str {
    message.split_once(" is not usable: ").map_or(message, |(_, reason)| reason)
}

/// docs/PREDICTIONS.md with its line breaks and indents made single spaces.
fn guide() -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PREDICTIONS.md")).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The same small network with its batch written in the other ways
/// exporters write it (see `scripts/onnx_models.py`).
const BATCH_TWINS: [&str; 5] = [
    "nchw-empty-name-batch.onnx",
    "nchw-unk-batch.onnx",
    "nchw-minus-one-batch.onnx",
    "nchw-fixed-batch-4.onnx",
    "nchw-unnamed-batch-named-inside.onnx",
];

#[test]
fn a_model_whose_batch_has_no_name_serves_in_both_modes_and_engines_as_its_twins_do() {
    let mut files = vec!["nchw-unnamed-batch.onnx"];
    files.extend(BATCH_TWINS);
    let dir = test_models_dir(&files);
    let models_dir = dir.path().to_str().unwrap();
    let unnamed = dir.path().join("nchw-unnamed-batch.onnx");
    let library = common::pip_onnxruntime();
    let test = "a_model_whose_batch_has_no_name_serves_in_both_modes_and_engines_as_its_twins_do";
    let mut engines = if common::tract_built_in(test) { vec![vec!["--engine", "tract"]] } else { vec![] };
    if let Some(library) = &library {
        engines.push(vec!["--onnxruntime", library.to_str().unwrap()]);
    }
    let mut first: Option<Vec<f64>> = None;
    for engine in &engines {
        for mode in common::MODES {
            let mut args = vec!["--models-dir", models_dir, "--model", unnamed.to_str().unwrap()];
            args.extend(engine);
            let server = TestServer::start(mode, 1, &args);
            let model = server.request(json!({"id": 1, "cmd": "model"}));
            assert_eq!(model["result"]["name"], "nchw-unnamed-batch", "{model}");
            assert_eq!(model["result"]["input_shape"], json!([20, 24, 3]), "{model}");
            let engine_name = model["result"]["engine"].as_str().unwrap();
            assert_eq!(engine_name.starts_with("onnxruntime"), engine[0] == "--onnxruntime", "{model}");
            let scores = batch_scores(&server);
            assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
            let first = first.get_or_insert_with(|| scores.clone());
            for (ours, reference) in scores.iter().zip(first.iter()) {
                assert!(
                    (ours - reference).abs() < 1e-4,
                    "{mode} {engine:?}: {ours} vs tract threads {reference}"
                );
            }
            // The same weights, the batch written otherwise. With it fixed at
            // 4, six images run as a group of four and one of two padded to four.
            for twin in BATCH_TWINS {
                let loaded = server.request(json!({"id": 2, "cmd": "load_model", "model_path": twin}));
                assert!(loaded["result"]["path"].as_str().is_some(), "{mode} {engine:?}: {loaded}");
                for (ours, theirs) in scores.iter().zip(batch_scores(&server)) {
                    assert!(
                        (ours - theirs).abs() < 1e-4,
                        "{mode} {engine:?}: unnamed {ours} vs {twin} {theirs}"
                    );
                }
            }
        }
    }
}

#[test]
fn load_model_takes_an_unnamed_batch_and_refuses_unusable_inputs_in_the_guides_words() {
    if !common::tract_built_in(
        "load_model_takes_an_unnamed_batch_and_refuses_unusable_inputs_in_the_guides_words",
    ) {
        return;
    }
    let refused =
        ["refused-no-input-shape.onnx", "refused-free-height-width.onnx", "refused-shapes-do-not-chain.onnx"];
    let mut files = vec!["nchw-unnamed-batch.onnx"];
    files.extend(refused);
    let dir = test_models_dir(&files);
    // Tract's refusals: the guide's sentences (onnxruntime's are its own).
    let server = TestServer::start(
        "processes",
        1,
        &["--engine", "tract", "--models-dir", dir.path().to_str().unwrap()],
    );
    let mut client = server.connect();
    let reply =
        client.request(json!({"id": 1, "cmd": "load_model", "model_path": "nchw-unnamed-batch.onnx"}));
    assert!(reply["result"]["path"].as_str().unwrap().ends_with("nchw-unnamed-batch.onnx"), "{reply}");
    let (name, _, image) = samples().into_iter().next().unwrap();
    let reply = client.request(json!({"id": 2, "cmd": "predict", "image_b64": image, "filename": name}));
    assert!(reply["result"]["raw_score"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{reply}");
    let guide = guide();
    for file in refused {
        let reply = client.request(json!({"id": 3, "cmd": "load_model", "model_path": file}));
        assert_eq!(error_code(&reply), Some("MODEL_UNAVAILABLE"), "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(guide.contains(reason(message)), "{file}: docs/PREDICTIONS.md does not say: {message}");
    }
    let current = client.request(json!({"id": 4, "cmd": "model"}));
    assert_eq!(current["result"]["name"], "nchw-unnamed-batch", "the refusals changed nothing: {current}");
}

#[test]
fn a_refused_model_stops_the_server_at_start_with_the_guides_sentence() {
    let dir = test_models_dir(&["refused-free-height-width.onnx"]);
    let model = dir.path().join("refused-free-height-width.onnx");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|l| l.contains("is not usable: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(guide().contains(reason(line).trim()), "docs/PREDICTIONS.md does not say: {line}");
}

#[test]
fn a_models_dir_without_the_shipped_model_says_so_at_start() {
    // --models-dir moves the default model too: a directory without
    // fire-cnn.onnx starts a server with no model, and it says so at once
    // rather than at the first prediction.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let models = dir.path().to_str().unwrap();
    let args = ["--port", "0", "--mode", "threads", "--workers", "1", "--models-dir", models];
    let mut server = TestServer::start_logging_to(&args, &[], std::process::Stdio::from(log));
    let reply = server.request(json!({"id": 1, "cmd": "predict", "image_b64": b64(b"not read")}));
    assert_eq!(error_code(&reply), Some("MODEL_UNAVAILABLE"), "{reply}");
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("serving no model"), "{text}");
    assert!(text.contains(&format!("{models}/fire-cnn.onnx is not there")), "{text}");
}
