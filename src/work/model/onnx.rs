//! ONNX image classifiers: any graph built from the documented operator set,
//! with one image input (NCHW or NHWC, fixed height and width, the batch
//! written any way exporters write it) and a one-value score or a two-class
//! output.
//!
//! The file is parsed with tract's ONNX protobuf types and checked by
//! [`fn@check`] against what is served *before* anything runs, then handed to
//! one of two engines: tract, a pure-Rust engine, which optimises the graph
//! once and runs it for every batch, or onnxruntime (see
//! [`super::onnxruntime`]). A graph with a free batch takes a batch in one
//! part per thread; one that fixes its batch at N takes groups of N, the last
//! one padded with blank images whose scores are dropped. Whatever tract or
//! protobuf says when a file cannot be used stays in a debug log; the user
//! gets a sentence of ours.
//!
//! The score is the output itself for a one-value output, and the
//! probability of the class labelled `fire` (else the second class) for a
//! two-class output; a two-class graph that does not end in `Softmax` gets
//! one applied.

use std::path::Path;

use ndarray::{Array3, Array4, Axis};

use super::onnxruntime::{loaded_library, OrtSessions};
use super::ModelError;

mod check;
mod proto;
#[cfg(feature = "tract")]
mod tract;

use check::{check, invalid, Layout, OnnxFacts};

/// A loaded ONNX network.
pub(crate) struct OnnxNet {
    engine: Engine,
    pub(crate) facts: OnnxFacts,
}

/// What runs the graph: onnxruntime when this process found or was given
/// its library, else tract when it is built in (the `tract` feature).
enum Engine {
    OnnxRuntime(OrtSessions),
    #[cfg(feature = "tract")]
    Tract(tract::TractPlan),
}

impl std::fmt::Debug for OnnxNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxNet").field("facts", &self.facts).finish_non_exhaustive()
    }
}

impl OnnxNet {
    /// Parses, checks and prepares a model.
    pub(crate) fn load(bytes: &[u8], path: &Path) -> Result<OnnxNet, ModelError> {
        let proto = proto::decode(bytes).map_err(|e| {
            tracing::debug!(path = %path.display(), error = %e, "protobuf refused the file");
            invalid(path, "not an ONNX model (the file is not an ONNX protobuf)")
        })?;
        let facts = check(&proto, path)?;
        if let Some(sessions) = OrtSessions::for_model(bytes, path) {
            let sessions = sessions?;
            return Ok(OnnxNet { engine: Engine::OnnxRuntime(sessions), facts });
        }
        #[cfg(feature = "tract")]
        {
            let plan = tract::TractPlan::prepare(bytes, &facts, path)?;
            Ok(OnnxNet { engine: Engine::Tract(plan), facts })
        }
        #[cfg(not(feature = "tract"))]
        Err(invalid(path, no_engine()))
    }

    /// Which engine runs this model, for `model`.
    pub(crate) fn engine_name(&self) -> String {
        match (&self.engine, loaded_library()) {
            (Engine::OnnxRuntime(_), Some(library)) => format!("onnxruntime ({})", library.display()),
            (Engine::OnnxRuntime(_), None) => "onnxruntime".into(),
            #[cfg(feature = "tract")]
            (Engine::Tract(_), _) => "tract".into(),
        }
    }

    /// Scores `[H, W, C]` images (resized and scaled). A batch is split
    /// into one part per thread of rayon's pool (one run each, in parallel;
    /// tract runs each part on one core), or into groups of N when the
    /// graph fixes its batch size at N.
    pub(crate) fn scores(&self, images: &[Array3<f32>]) -> Result<Vec<f32>, ModelError> {
        use rayon::prelude::*;
        let part = match self.facts.fixed_batch {
            Some(fixed) => fixed,
            None => images.len().div_ceil(rayon::current_num_threads()).max(1),
        };
        let parts: Vec<Result<Vec<f32>, ModelError>> = images.par_chunks(part).map(|p| self.run(p)).collect();
        parts.into_iter().try_fold(Vec::with_capacity(images.len()), |mut scores, part| {
            scores.extend(part?);
            Ok(scores)
        })
    }

    /// One run of the graph on a group of images. A group smaller than the
    /// graph's fixed batch (the last one) is padded with blank images, and
    /// their scores are dropped: each image's score depends on that image
    /// alone, so the padding changes no other score.
    fn run(&self, group: &[Array3<f32>]) -> Result<Vec<f32>, ModelError> {
        let padding = self.facts.fixed_batch.map_or(0, |n| n.saturating_sub(group.len()));
        let blank = Array3::zeros(group[0].dim());
        let views: Vec<_> =
            group.iter().map(|i| i.view()).chain(std::iter::repeat_n(blank.view(), padding)).collect();
        let mut batch: Array4<f32> =
            ndarray::stack(Axis(0), &views).map_err(|e| ModelError::Run(e.to_string()))?;
        if self.facts.layout == Layout::Nchw {
            batch = batch.permuted_axes([0, 3, 1, 2]).as_standard_layout().into_owned();
        }
        let values = match &self.engine {
            Engine::OnnxRuntime(sessions) => sessions.run(&batch)?,
            #[cfg(feature = "tract")]
            Engine::Tract(plan) => plan.run(batch)?,
        };
        if values.len() != views.len() * self.facts.outputs {
            return Err(ModelError::Run(format!(
                "the model gave {} values for {} images",
                values.len(),
                views.len()
            )));
        }
        let rows = values.chunks(self.facts.outputs).take(group.len());
        Ok(rows.map(|row| self.score(row)).collect())
    }

    /// One image's score from its output row.
    fn score(&self, row: &[f32]) -> f32 {
        if self.facts.outputs == 1 {
            return row[0];
        }
        if self.facts.ends_in_softmax {
            return row[self.facts.fire_class];
        }
        // Logits: a softmax over the two, stable for large values.
        let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - top).exp()).sum();
        (row[self.facts.fire_class] - top).exp() / sum
    }
}

/// Why an ONNX model cannot run in a build without tract, and what to do.
#[cfg(not(feature = "tract"))]
fn no_engine() -> String {
    format!(
        "no ONNX engine: {}; or name onnxruntime's library (--onnxruntime LIBRARY), or build the pure-Rust \
         engine in (cargo build --release --features tract)",
        super::onnxruntime::engine_reason()
    )
}

/// Whether this process can run ONNX models: onnxruntime is there, or
/// tract is built in.
pub(crate) fn engine_available() -> bool {
    cfg!(feature = "tract") || loaded_library().is_some()
}

// The engines' answers, tract's among them: built with the `tract` feature.
#[cfg(all(test, feature = "tract"))]
mod tests {
    use super::*;
    use crate::work::model::Model;

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// The input `scripts/onnx_models.py` also generates: a 32-bit
    /// multiplicative hash of each element's index, mapped to [0, 1).
    fn probe(count: usize) -> Vec<f32> {
        (0..count as u64)
            .map(|i| (((i * 2_654_435_761) % (1 << 32)) >> 8) as f32 / (1u64 << 24) as f32)
            .collect()
    }

    /// The probe, in the graph's layout, as the `[H, W, C]` images the
    /// engine takes.
    fn probe_images(shape: &[usize], layout: Layout) -> Vec<Array3<f32>> {
        let batch =
            Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), probe(shape.iter().product()))
                .unwrap();
        let nhwc = match layout {
            Layout::Nchw => batch.permuted_axes([0, 2, 3, 1]),
            Layout::Nhwc => batch,
        };
        nhwc.outer_iter().map(|image| image.to_owned()).collect()
    }

    fn reference() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(repo("tests/models/reference.json")).unwrap()).unwrap()
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{what}: {got:?} vs onnxruntime {want:?}");
        }
    }

    /// The score the engine gives for each image, the way onnxruntime's
    /// raw output row would give it.
    fn expected_scores(outputs: &[f64], facts: &OnnxFacts) -> Vec<f64> {
        outputs
            .chunks(facts.outputs)
            .map(|row| row[if facts.outputs == 1 { 0 } else { facts.fire_class }])
            .collect()
    }

    /// onnxruntime's answers computed now, when the pinned version is
    /// installed (`python3 scripts/onnx_models.py --live`); `None` (and a
    /// note) otherwise — the committed answers are checked either way.
    fn live_onnxruntime() -> Option<serde_json::Value> {
        let output = std::process::Command::new("python3")
            .arg(repo("scripts/onnx_models.py"))
            .arg("--live")
            .output()
            .ok()
            .filter(|o| o.status.success());
        let live: Option<serde_json::Value> = output.and_then(|o| serde_json::from_slice(&o.stdout).ok());
        let pinned = reference()["onnxruntime"].clone();
        match live {
            Some(table) if table["onnxruntime"] == pinned => Some(table),
            _ => {
                eprintln!(
                    "note: onnxruntime {pinned} (pip) is not installed: compared with its committed answers only"
                );
                None
            }
        }
    }

    #[test]
    fn every_test_model_answers_as_onnxruntime_does() {
        answers_as(&reference());
        if let Some(live) = live_onnxruntime() {
            answers_as(&live);
        }
    }

    fn answers_as(table: &serde_json::Value) {
        let models = table["models"].as_object().unwrap();
        assert!(models.len() >= 3, "{models:?}");
        for (file, entry) in models {
            let model = Model::load(&repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let super::super::Network::Onnx(net) = &model.network else { panic!("{file} is not ONNX") };
            assert_eq!(
                model.info().sha256,
                entry["sha256"].as_str().unwrap(),
                "{file} changed: rerun onnx_models.py"
            );
            let shape: Vec<usize> = serde_json::from_value(entry["probe_shape"].clone()).unwrap();
            let want: Vec<f64> = serde_json::from_value(entry["probe_outputs"].clone()).unwrap();
            let got = model.predict_batch(&probe_images(&shape, net.facts.layout)).unwrap();
            close(&got, &expected_scores(&want, &net.facts), file);
        }
    }

    #[test]
    fn the_shipped_onnx_model_matches_onnxruntime_and_the_ndarray_engine_on_the_reference_images() {
        let onnx = Model::load(&repo("models/fire-cnn.onnx")).unwrap();
        let own = Model::load(&repo("models/fire-cnn.safetensors")).unwrap();
        assert_eq!(onnx.info().input_shape, [150, 150, 3]);
        assert_eq!(onnx.info().name, "fire-cnn");
        assert!((onnx.input_scale() - 1.0 / 255.0).abs() < 1e-9);
        let pairs = std::fs::read(repo("models/reference/fire-cnn-pairs.safetensors")).unwrap();
        let pairs = safetensors::SafeTensors::deserialize(&pairs).unwrap();
        let pixels = pairs.tensor("inputs").unwrap();
        let shape = pixels.shape().to_vec();
        let images: Vec<Array3<f32>> = Array4::from_shape_vec(
            (shape[0], shape[1], shape[2], shape[3]),
            pixels.data().iter().map(|&p| f32::from(p) * onnx.input_scale()).collect(),
        )
        .unwrap()
        .outer_iter()
        .map(|i| i.to_owned())
        .collect();
        let table = reference();
        let want: Vec<f64> = serde_json::from_value(
            table["models"]["models/fire-cnn.onnx"]["reference_images_outputs"].clone(),
        )
        .unwrap();
        let got = onnx.predict_batch(&images).unwrap();
        close(&got, &want, "fire-cnn.onnx");
        let ours = own.predict_batch(&images).unwrap();
        close(&ours, &want, "fire-cnn.safetensors (ndarray engine)");
    }

    fn refusal(file: &str) -> String {
        Model::load(&repo(&format!("tests/models/{file}"))).expect_err(file).to_string()
    }

    #[test]
    fn models_outside_what_is_served_are_refused_naming_the_operator_or_tensor() {
        let unsupported = refusal("refused-unsupported-op.onnx");
        assert!(
            unsupported.contains("operator LeakyRelu") && unsupported.contains("supported: Conv"),
            "{unsupported}"
        );
        let two = refusal("refused-two-inputs.onnx");
        assert!(two.contains("2 inputs (image, mask)"), "{two}");
        let flat = refusal("refused-not-an-image.onnx");
        assert!(flat.contains("input \"features\" has 2 dimensions"), "{flat}");
        let five = refusal("refused-five-outputs.onnx");
        assert!(five.contains("has 5 values per image"), "{five}");
    }

    /// The test models that write the batch in each way exporters do, with
    /// the fixed batch each one should be read as. They share their weights.
    const BATCH_VARIANTS: &[(&str, Option<usize>)] = &[
        ("nchw-unnamed-batch.onnx", None),
        ("nchw-empty-name-batch.onnx", None),
        ("nchw-unk-batch.onnx", None),
        ("nchw-minus-one-batch.onnx", None),
        ("nchw-fixed-batch-4.onnx", Some(4)),
        ("nchw-unnamed-batch-named-inside.onnx", None),
    ];

    #[test]
    fn every_way_of_writing_the_batch_is_served_and_scores_as_onnxruntime() {
        // onnxruntime's rows for six probe images (run in groups of four);
        // the first k images of the probe are the k-image probe.
        let table = reference();
        let entry = &table["models"]["tests/models/nchw-fixed-batch-4.onnx"];
        assert_eq!(entry["probe_shape"], serde_json::json!([6, 3, 20, 24]));
        let rows: Vec<f64> = serde_json::from_value(entry["probe_outputs"].clone()).unwrap();
        let images = probe_images(&[6, 3, 20, 24], Layout::Nchw);
        for (file, fixed_batch) in BATCH_VARIANTS {
            let model = Model::load(&repo(&format!("tests/models/{file}"))).unwrap_or_else(|e| panic!("{e}"));
            let super::super::Network::Onnx(net) = &model.network else { panic!("{file} is not ONNX") };
            assert_eq!(net.facts.fixed_batch, *fixed_batch, "{file}");
            // 1 and 5 images leave a last group smaller than a fixed batch of 4.
            for count in [1, 4, 5, 6] {
                let got = model.predict_batch(&images[..count]).unwrap();
                let want = expected_scores(&rows[..count * 2], &net.facts);
                close(&got, &want, &format!("{file}, {count} images"));
            }
        }
    }

    #[test]
    fn inputs_that_cannot_be_served_are_refused_in_the_words_of_the_guide() {
        let no_shape = refusal("refused-no-input-shape.onnx");
        assert!(
            no_shape.ends_with(
                "input \"image\" has no shape in the graph; an image input has 4 dimensions \
                 (NCHW or NHWC) with a fixed height, width and channels"
            ),
            "{no_shape}"
        );
        let free = refusal("refused-free-height-width.onnx");
        assert!(
            free.ends_with(
                "input \"image\" does not fix its height (\"height\") and width (unnamed); \
                 images are resized to the input's size, so its height, width and channels must be numbers"
            ),
            "{free}"
        );
        // tract's own words stay in the debug log.
        let unchained = refusal("refused-shapes-do-not-chain.onnx");
        assert!(
            unchained.ends_with(
                "the tract engine cannot prepare the graph for its input [N, 3, 8, 8]: a layer's \
                 weights or attributes do not fit the tensor it gets, or are beyond what tract runs; \
                 onnxruntime names the node (--onnxruntime)"
            ),
            "{unchained}"
        );
    }

    #[test]
    fn a_file_that_is_not_onnx_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.onnx");
        std::fs::write(&path, b"definitely not protobuf \xff\xff\xff").unwrap();
        let error = Model::load(&path).expect_err("garbage").to_string();
        assert!(
            error
                .ends_with("broken.onnx is not usable: not an ONNX model (the file is not an ONNX protobuf)"),
            "{error}"
        );
    }

    #[test]
    fn layout_scale_labels_and_name_come_from_the_graph_and_metadata() {
        let two = Model::load(&repo("tests/models/nchw-two-class.onnx")).unwrap();
        let super::super::Network::Onnx(net) = &two.network else { panic!() };
        assert_eq!(net.facts.layout, Layout::Nchw);
        assert_eq!(two.info().input_shape, [32, 40, 3]);
        assert_eq!(net.facts.outputs, 2);
        assert_eq!(net.facts.fire_class, 1);
        assert_eq!(two.info().name, "nchw-two-class");
        assert_eq!(two.info().metadata["threadcenter.threshold"], "0.6");
        let one = Model::load(&repo("tests/models/nhwc-sigmoid.onnx")).unwrap();
        let super::super::Network::Onnx(net) = &one.network else { panic!() };
        assert_eq!(net.facts.layout, Layout::Nhwc);
        assert_eq!(net.facts.fixed_batch, Some(1));
        assert_eq!(one.info().name, "nhwc-sigmoid", "no name in the metadata: the file name");
        // A fixed batch of one still scores several images (one run each).
        let images = probe_images(&[3, 22, 22, 3], Layout::Nhwc);
        assert_eq!(one.predict_batch(&images).unwrap().len(), 3);
    }
}
