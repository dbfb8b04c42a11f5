//! The fire detector: a small convolutional network, its weights file, and
//! its forward pass in ndarray.
//!
//! A model file is [safetensors]: a JSON header naming each tensor's dtype,
//! shape and byte range, then the raw little-endian floats. Its metadata
//! holds the layer list (`architecture`) and the input size, so this loader
//! follows the file instead of hard-coding one network; `scripts/train_model.py`
//! writes both. Loading checks every shape against the layer before it, so a
//! wrong file is refused with a sentence, never a panic in the middle of a
//! prediction.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

mod image_input;
mod layers;
mod onnx;
mod onnxruntime;
mod slot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[cfg(test)]
use ndarray::Array4;
use ndarray::{Array1, Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use image_input::{decode_image, ImageLimits};
pub(crate) use layers::Layer;
pub use onnxruntime::{choose_engine, EngineChoice};
pub(crate) use onnxruntime::{
    choose_engine_as_told, engine_reason, loaded_library as onnxruntime_library, ENGINE_ENV, ONNXRUNTIME_ENV,
};
pub(crate) use slot::ModelSlot;

/// File name of the model that ships with ThreadCenter, inside `models/`:
/// the ONNX file, or — where no ONNX engine can run it (no onnxruntime
/// found, tract not built in) — its twin in ThreadCenter's own format, the
/// same network on the ndarray engine, so predictions work on any machine.
/// Chooses the process's ONNX engine if nothing has yet: call it after
/// [`choose_engine`].
pub(crate) fn default_model_file() -> &'static str {
    if onnx::engine_available() {
        "fire-cnn.onnx"
    } else {
        "fire-cnn.safetensors"
    }
}

/// Where the shipped model lives: `models/` in the source tree.
pub(crate) fn default_models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelError {
    /// The file could not be read.
    #[error("cannot read model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a model this loader understands.
    #[error("model {path} is not usable: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in a sentence.
        reason: String,
    },
    /// The engine failed on a batch (the sentence is the job's reply).
    #[error("{0}")]
    Run(String),
    /// The file changed on disk since the served model was loaded from it.
    #[error("model file {} changed on disk since the server loaded it; load it again", path.display())]
    ChangedOnDisk {
        /// The file.
        path: PathBuf,
    },
}

impl From<ModelError> for crate::error::Error {
    fn from(error: ModelError) -> Self {
        crate::error::Error::Model(error.to_string())
    }
}

/// What a model is, for the `model` command and IdentyFire's
/// `get_current_model`: everything but the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ModelInfo {
    /// From the file's metadata (`name`), else the file name.
    pub(crate) name: String,
    /// The file it was loaded from.
    pub(crate) path: PathBuf,
    /// SHA-256 of the file, hex.
    pub(crate) sha256: String,
    /// File size in bytes.
    pub(crate) bytes: u64,
    /// `[height, width, channels]` of the network's input.
    pub(crate) input_shape: [usize; 3],
    /// One line per layer.
    pub(crate) layers: Vec<String>,
    /// Number of weights and biases.
    pub(crate) parameters: usize,
    /// Floating-point operations for one image (a multiply-add counts 2);
    /// counted for ThreadCenter's own format, absent for ONNX models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flops_per_image: Option<u64>,
    /// The rest of the file's metadata (training set, accuracy, ...).
    pub(crate) metadata: HashMap<String, String>,
    /// What runs it: `tract` or `onnxruntime (LIBRARY)` for ONNX models,
    /// `ndarray` for ThreadCenter's own format.
    #[serde(default)]
    pub(crate) engine: String,
    /// Why that engine: how onnxruntime was found, or why tract runs
    /// (ONNX models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) engine_reason: Option<String>,
}

/// Which model a job wants: the file and the checksum the server saw when it
/// chose it, so a worker never runs a different file that happens to have
/// the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ModelRef {
    /// The model file.
    pub(crate) path: PathBuf,
    /// Its SHA-256, hex.
    pub(crate) sha256: String,
}

/// A loaded network, ready to predict.
#[derive(Debug)]
pub(crate) struct Model {
    network: Network,
    input_scale: f32,
    info: ModelInfo,
}

/// The two model formats: an ONNX graph run by tract, or ThreadCenter's own
/// layer list in safetensors run by the ndarray code in `layers.rs`.
#[derive(Debug)]
enum Network {
    Onnx(onnx::OnnxNet),
    Layers(Vec<Layer>),
}

/// The `input` metadata entry.
#[derive(Deserialize)]
struct InputSpec {
    height: usize,
    width: usize,
    channels: usize,
    scale: f32,
}

/// One entry of the `architecture` metadata list.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LayerSpec {
    Conv2d { weight: String, bias: String },
    Relu,
    Maxpool2d { size: usize },
    Flatten,
    Dense { weight: String, bias: String },
    Sigmoid,
}

impl Model {
    /// Reads and checks a model file.
    ///
    /// # Errors
    /// When the file cannot be read, is not safetensors, or its tensors do
    /// not fit its architecture.
    pub(crate) fn load(path: &Path) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let is_onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        if is_onnx {
            Model::from_onnx(&bytes, path)
        } else {
            Model::from_bytes(&bytes, path)
        }
    }

    /// Builds a model from an ONNX file's contents (see [`onnx`]).
    fn from_onnx(bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let net = onnx::OnnxNet::load(bytes, path)?;
        let facts = &net.facts;
        let [height, width, _] = facts.input_shape;
        if height > 4096 || width > 4096 {
            return Err(ModelError::Invalid {
                path: path.into(),
                reason: format!("unreasonable input size {height}x{width}"),
            });
        }
        let name = facts.name.clone().unwrap_or_else(|| file_stem(path));
        let info = ModelInfo {
            name,
            path: path.into(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
            input_shape: facts.input_shape,
            layers: facts.layers.clone(),
            parameters: facts.parameters,
            flops_per_image: None,
            metadata: facts.metadata.clone(),
            engine: net.engine_name(),
            engine_reason: Some(engine_reason().to_string()),
        };
        Ok(Model { input_scale: facts.scale, info, network: Network::Onnx(net) })
    }

    /// Builds a model from a safetensors file's contents (`path` is only
    /// recorded).
    ///
    /// # Errors
    /// As [`Model::load`].
    pub(crate) fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let invalid = |reason: String| ModelError::Invalid { path: path.into(), reason };
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| invalid(format!("not safetensors: {e}")))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| invalid(format!("not safetensors: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let meta =
            |key: &str| metadata.get(key).ok_or_else(|| invalid(format!("no \"{key}\" in the metadata")));
        let input: InputSpec = serde_json::from_str(meta("input")?)
            .map_err(|e| invalid(format!("bad \"input\" metadata: {e}")))?;
        let specs: Vec<LayerSpec> = serde_json::from_str(meta("architecture")?)
            .map_err(|e| invalid(format!("bad \"architecture\" metadata: {e}")))?;
        if input.height == 0
            || input.width == 0
            || input.channels == 0
            || input.height > 4096
            || input.width > 4096
        {
            return Err(invalid(format!("unreasonable input size {}x{}", input.height, input.width)));
        }

        // Walk the layers with the activation shape, checking each tensor
        // against what arrives and counting work and parameters.
        let mut shape = Shape::Image(input.height, input.width, input.channels);
        let mut layers = Vec::with_capacity(specs.len());
        let mut parameters = 0usize;
        let mut flops = 0u64;
        for (index, spec) in specs.into_iter().enumerate() {
            let at = |reason: String| invalid(format!("layer {index}: {reason}"));
            let layer = match spec {
                LayerSpec::Conv2d { weight, bias } => {
                    let Shape::Image(h, w, c) = shape else {
                        return Err(at("conv2d after flatten".into()));
                    };
                    let t = read_f32(&tensors, &weight).map_err(|problem| at(problem.0))?;
                    let [out, k, k2, cin] = t.shape[..] else {
                        return Err(at(format!("{weight} must have 4 dimensions [out, k, k, in]")));
                    };
                    if k != k2 || k == 0 || cin != c || k > h || k > w {
                        return Err(at(format!("{weight} is {:?}, but the input is {h}x{w}x{c}", t.shape)));
                    }
                    let b = read_vector(&tensors, &bias, out).map_err(|problem| at(problem.0))?;
                    // [out, k·k·in] → transposed to [k·k·in, out] for im2col.
                    let matrix = Array2::from_shape_vec((out, k * k * cin), t.data)
                        .map_err(|e| at(e.to_string()))?
                        .reversed_axes()
                        .as_standard_layout()
                        .into_owned();
                    parameters += matrix.len() + b.len();
                    let (oh, ow) = (h + 1 - k, w + 1 - k);
                    flops += 2 * (oh * ow * k * k * cin * out) as u64;
                    shape = Shape::Image(oh, ow, out);
                    Layer::Conv2d { weight: matrix, bias: b, k }
                }
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::Maxpool2d { size } => {
                    let Shape::Image(h, w, c) = shape else {
                        return Err(at("maxpool2d after flatten".into()));
                    };
                    if size == 0 || size > h || size > w {
                        return Err(at(format!("pool size {size} does not fit {h}x{w}")));
                    }
                    shape = Shape::Image(h / size, w / size, c);
                    Layer::MaxPool2d { size }
                }
                LayerSpec::Flatten => {
                    let Shape::Image(h, w, c) = shape else {
                        return Err(at("flatten twice".into()));
                    };
                    shape = Shape::Rows(h * w * c);
                    Layer::Flatten
                }
                LayerSpec::Dense { weight, bias } => {
                    let Shape::Rows(features) = shape else {
                        return Err(at("dense before flatten".into()));
                    };
                    let t = read_f32(&tensors, &weight).map_err(|problem| at(problem.0))?;
                    let [fan_in, out] = t.shape[..] else {
                        return Err(at(format!("{weight} must have 2 dimensions [in, out]")));
                    };
                    if fan_in != features {
                        return Err(at(format!("{weight} takes {fan_in} inputs but receives {features}")));
                    }
                    let b = read_vector(&tensors, &bias, out).map_err(|problem| at(problem.0))?;
                    let matrix =
                        Array2::from_shape_vec((fan_in, out), t.data).map_err(|e| at(e.to_string()))?;
                    parameters += matrix.len() + b.len();
                    flops += 2 * (fan_in * out) as u64;
                    shape = Shape::Rows(out);
                    Layer::Dense { weight: matrix, bias: b }
                }
                LayerSpec::Sigmoid => Layer::Sigmoid,
            };
            layers.push(layer);
        }
        if shape != Shape::Rows(1) {
            return Err(invalid("the network must end with a single output (one score per image)".into()));
        }
        if !matches!(layers.last(), Some(Layer::Sigmoid)) {
            return Err(invalid("the network must end with a sigmoid, so scores lie in [0, 1]".into()));
        }

        let name = metadata.get("name").cloned().unwrap_or_else(|| file_stem(path));
        let mut rest = metadata.clone();
        for used in ["name", "input", "architecture"] {
            rest.remove(used);
        }
        let info = ModelInfo {
            name,
            path: path.into(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
            input_shape: [input.height, input.width, input.channels],
            layers: layers.iter().map(Layer::describe).collect(),
            parameters,
            flops_per_image: Some(flops),
            metadata: rest,
            engine: "ndarray".into(),
            engine_reason: None,
        };
        Ok(Model { network: Network::Layers(layers), input_scale: input.scale, info })
    }

    /// The model's description.
    pub(crate) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The factor raw pixel values (0..=255) are multiplied by.
    pub(crate) fn input_scale(&self) -> f32 {
        self.input_scale
    }

    /// Scores a batch of `[H, W, C]` images (already resized and scaled).
    /// The convolutional part runs on the images in parallel (rayon); the
    /// dense part runs on the whole batch as one matrix product, so each
    /// weight is read once per batch instead of once per image.
    ///
    /// # Errors
    /// The engine failed on the batch (a sentence for the job's reply).
    ///
    /// # Panics
    /// If an image does not have the model's input shape (callers resize
    /// with [`decode_image`] first).
    pub(crate) fn predict_batch(&self, images: &[Array3<f32>]) -> Result<Vec<f32>, ModelError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let [h, w, c] = self.info.input_shape;
        let layers = match &self.network {
            Network::Onnx(net) => {
                assert!(
                    images.iter().all(|i| i.dim() == (h, w, c)),
                    "images must be resized to the model's input"
                );
                return net.scores(images);
            }
            Network::Layers(layers) => layers,
        };
        let split = layers.iter().position(|l| matches!(l, Layer::Flatten)).unwrap_or(layers.len());
        let (spatial, rows) = layers.split_at(split);
        let flattened: Vec<Array1<f32>> = images
            .par_iter()
            .map(|image| {
                assert_eq!(image.dim(), (h, w, c), "images must be resized to the model's input");
                let mut x = image.clone();
                for layer in spatial {
                    x = apply_spatial(layer, x.view());
                }
                let len = x.len();
                x.into_shape_with_order(len).expect("contiguous")
            })
            .collect();
        let mut batch = layers::stack_rows(&flattened);
        for layer in rows {
            batch = apply_rows(layer, batch);
        }
        Ok(batch.index_axis(Axis(1), 0).to_vec())
    }

    /// Scores one image: the same code as a batch of one.
    #[cfg(test)]
    pub(crate) fn predict(&self, image: &Array3<f32>) -> f32 {
        self.predict_batch(std::slice::from_ref(image)).expect("the engine runs")[0]
    }

    /// Scores a `[N, H, W, C]` tensor of raw 0..=255 pixels (the layout of
    /// the reference file written by the training script).
    #[cfg(test)]
    pub(crate) fn predict_pixels(&self, pixels: &Array4<f32>) -> Vec<f32> {
        let images: Vec<Array3<f32>> =
            pixels.outer_iter().map(|img| img.mapv(|v| v * self.input_scale)).collect();
        self.predict_batch(&images).expect("the engine runs")
    }
}

/// The shape of the activations between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Image(usize, usize, usize),
    Rows(usize),
}

fn apply_spatial(layer: &Layer, x: ArrayView3<f32>) -> Array3<f32> {
    match layer {
        Layer::Conv2d { weight, bias, k } => layers::conv2d(x, weight, bias, *k),
        Layer::MaxPool2d { size } => layers::max_pool(x, *size),
        Layer::Relu => x.mapv(|v| v.max(0.0)),
        Layer::Sigmoid => x.mapv(sigmoid),
        Layer::Flatten | Layer::Dense { .. } => unreachable!("split at flatten"),
    }
}

fn apply_rows(layer: &Layer, mut x: Array2<f32>) -> Array2<f32> {
    match layer {
        Layer::Dense { weight, bias } => layers::dense(&x, weight, bias),
        Layer::Relu => {
            x.mapv_inplace(|v| v.max(0.0));
            x
        }
        Layer::Sigmoid => {
            x.mapv_inplace(sigmoid);
            x
        }
        Layer::Flatten => x,
        Layer::Conv2d { .. } | Layer::MaxPool2d { .. } => unreachable!("checked at load"),
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// A tensor read from the file as f32.
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// What is wrong with one tensor of the weights file, in words; the loader
/// names the layer and the file around it.
struct TensorProblem(String);

fn read_f32(tensors: &SafeTensors<'_>, name: &str) -> Result<Tensor, TensorProblem> {
    let view = tensors.tensor(name).map_err(|_| TensorProblem(format!("tensor {name:?} is missing")))?;
    if view.dtype() != Dtype::F32 {
        return Err(TensorProblem(format!("tensor {name:?} is {:?}, expected F32", view.dtype())));
    }
    // The data is little-endian and not necessarily 4-byte aligned in the
    // file, so convert instead of casting the slice.
    let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Tensor { shape: view.shape().to_vec(), data })
}

fn read_vector(tensors: &SafeTensors<'_>, name: &str, len: usize) -> Result<Array1<f32>, TensorProblem> {
    let t = read_f32(tensors, name)?;
    if t.shape != [len] {
        return Err(TensorProblem(format!("{name} is {:?}, expected [{len}]", t.shape)));
    }
    Ok(Array1::from(t.data))
}

/// SHA-256 of some bytes, as lowercase hex.
/// What `tc-client model` measured.
#[derive(Debug, Serialize)]
pub(crate) struct ForwardRate {
    pub(crate) model: String,
    pub(crate) engine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) engine_reason: Option<String>,
    pub(crate) batch: usize,
    pub(crate) threads: usize,
    pub(crate) images: usize,
    pub(crate) seconds: f64,
    pub(crate) images_per_second: f64,
}

/// Times the forward pass of the model in `path`: batches of `batch`
/// images (a fixed pattern, already at the input size: no decoding), split
/// across `threads` threads of a rayon pool of their own, one warm-up pass,
/// then as many passes as fit in `duration`.
///
/// # Errors
/// The model does not load or the engine fails.
pub(crate) fn measure_forward(
    path: &Path,
    batch: usize,
    threads: usize,
    duration: std::time::Duration,
) -> Result<ForwardRate, crate::error::Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::error::Error::Model(format!("cannot start {threads} threads: {e}")))?;
    // Loaded inside the pool: onnxruntime makes one session per pool thread.
    pool.install(|| {
        let model = Model::load(path)?;
        let [h, w, c] = model.info().input_shape;
        let image = Array3::from_shape_fn((h, w, c), |(y, x, k)| ((y * 7 + x * 3 + k) % 256) as f32 / 255.0);
        let images = vec![image; batch];
        let run = || model.predict_batch(&images).map_err(crate::error::Error::from);
        run()?;
        let started = std::time::Instant::now();
        let mut done = 0;
        while started.elapsed() < duration {
            run()?;
            done += batch;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(ForwardRate {
            model: model.info().name.clone(),
            engine: model.info().engine.clone(),
            engine_reason: model.info().engine_reason.clone(),
            batch,
            threads,
            images: done,
            seconds,
            images_per_second: done as f64 / seconds,
        })
    })
}

/// A model's name when its file does not give one.
fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped weights in ThreadCenter's own format (the ndarray engine
    /// these tests cover; the ONNX twin is tested in `onnx.rs`).
    const OWN_FORMAT_FILE: &str = "fire-cnn.safetensors";

    fn shipped() -> Model {
        Model::load(&default_models_dir().join(OWN_FORMAT_FILE)).expect("the shipped model loads")
    }

    #[test]
    fn the_shipped_model_is_a_real_network() {
        let model = shipped();
        let info = model.info();
        assert_eq!(info.input_shape, [150, 150, 3]);
        let flops = info.flops_per_image.expect("counted for the own format");
        assert!(flops > 20_000_000, "tens of MFLOP: {flops}");
        assert!(info.layers.iter().any(|l| l.starts_with("conv2d")));
        assert!(info.layers.iter().any(|l| l.starts_with("dense")));
        assert_eq!(info.sha256.len(), 64);
    }

    /// The training script's float64 scores for a few inputs: our f32
    /// forward pass must agree within 1e-4.
    #[test]
    fn forward_pass_matches_the_reference_pairs() {
        let model = shipped();
        let bytes = std::fs::read(default_models_dir().join("reference/fire-cnn-pairs.safetensors")).unwrap();
        let refs = SafeTensors::deserialize(&bytes).unwrap();
        let inputs = refs.tensor("inputs").unwrap();
        assert_eq!(inputs.dtype(), Dtype::U8);
        let shape: [usize; 4] = inputs.shape().try_into().unwrap();
        let pixels =
            Array4::from_shape_vec(shape, inputs.data().iter().map(|&b| f32::from(b)).collect()).unwrap();
        let outputs = refs.tensor("outputs").unwrap();
        assert_eq!(outputs.dtype(), Dtype::F64);
        let expected: Vec<f64> =
            outputs.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(expected.len(), shape[0]);
        assert!(expected.len() >= 4);
        let got = model.predict_pixels(&pixels);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((f64::from(*g) - e).abs() < 1e-4, "pair {i}: ours {g}, reference {e}");
        }
        // And one at a time gives the same as the batch.
        let first = model.predict(&pixels.index_axis(Axis(0), 0).mapv(|v| v * model.input_scale()));
        assert!((first - got[0]).abs() < 1e-6);
    }

    #[test]
    fn a_file_that_is_not_a_model_is_refused_with_a_reason() {
        let err = Model::from_bytes(b"not a model at all", Path::new("x.safetensors")).unwrap_err();
        assert!(err.to_string().contains("not safetensors"), "{err}");
    }

    #[test]
    fn a_model_whose_shapes_do_not_chain_is_refused() {
        let bytes = std::fs::read(default_models_dir().join(OWN_FORMAT_FILE)).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut metadata = header.metadata().clone().unwrap();
        // Drop the first pooling layer: the dense layer no longer fits.
        let mut arch: Vec<serde_json::Value> = serde_json::from_str(&metadata["architecture"]).unwrap();
        arch.remove(2);
        metadata.insert("architecture".into(), serde_json::to_string(&arch).unwrap());
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
        let rewritten = safetensors::serialize(views, Some(metadata)).unwrap();
        let err = Model::from_bytes(&rewritten, Path::new("bad.safetensors")).unwrap_err();
        assert!(err.to_string().contains("layer"), "{err}");
    }
}
