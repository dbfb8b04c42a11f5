//! What an ONNX graph must be to be served, and what the loader reads from
//! it: [`check`] goes through the parsed graph *before* anything runs, so an
//! unsupported model is refused with the operator's or the tensor's name
//! (and the server keeps the model it had), and returns the [`OnnxFacts`]
//! that [`super`] prepares images and runs the graph with.
//!
//! Exporters write the batch dimension (the input's first) in many ways: a
//! name (`N`, `batch_size`, tf2onnx's `unk__12`), nothing at all, an empty
//! name or `?`, `-1`, a fixed 1 or a fixed N. All are served; what matters
//! is only whether the batch is fixed, and at what size (1 to
//! [`MAX_BATCH_IMAGES`]). Height, width and channels must be numbers,
//! because images are resized to the input's size.
//!
//! How images are prepared comes from the graph and its `metadata_props`:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `threadcenter.name` | the model's name in `model` and `models` | the file name |
//! | `threadcenter.layout` | `NCHW` or `NHWC` | from the input shape: channels (1 or 3) second is NCHW, last is NHWC |
//! | `threadcenter.scale` | what each 0–255 pixel is multiplied by | `1/255` |
//! | `threadcenter.threshold` | score above which an image is "fire" (reported; `--threshold` decides) | none |
//! | `threadcenter.labels` | comma-separated class names, e.g. `no fire,fire` | `no fire,fire` for two classes |

use std::collections::HashMap;
use std::path::Path;

use super::proto as pb;

use crate::protocol::MAX_BATCH_IMAGES;
use crate::work::model::ModelError;

/// The operators a model may use (the ONNX default domain).
pub(crate) const SUPPORTED_OPERATORS: &[&str] = &[
    "Conv",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "Transpose",
    "Gemm",
    "MatMul",
    "Add",
    "Sigmoid",
    "Softmax",
];

/// Where the channels are in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Nchw,
    Nhwc,
}

/// What the loader learnt from the graph and its metadata.
#[derive(Debug, Clone)]
pub(crate) struct OnnxFacts {
    /// `[height, width, channels]` of one image.
    pub(crate) input_shape: [usize; 3],
    pub(crate) layout: Layout,
    pub(crate) scale: f32,
    /// The batch size the graph fixes (1 to [`MAX_BATCH_IMAGES`]), or
    /// `None` for a free batch.
    pub(crate) fixed_batch: Option<usize>,
    /// The input's `dim_param` for the batch, when it names one (what
    /// tract calls its batch symbol).
    #[cfg_attr(not(feature = "tract"), allow(dead_code))]
    pub(crate) batch_name: Option<String>,
    /// 1 (a score) or 2 (two classes).
    pub(crate) outputs: usize,
    /// For two classes: which one is "fire".
    pub(crate) fire_class: usize,
    /// Whether the graph's last node is a Softmax already.
    pub(crate) ends_in_softmax: bool,
    pub(crate) name: Option<String>,
    /// One line per node, for `model`.
    pub(crate) layers: Vec<String>,
    pub(crate) parameters: usize,
    /// Every metadata entry, as written.
    pub(crate) metadata: HashMap<String, String>,
}

/// A refusal of the file at `path`, for `reason`.
pub(super) fn invalid(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid { path: path.into(), reason: reason.into() }
}

/// How the graph writes one dimension of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dim {
    /// A `dim_value` of 0 or more.
    Fixed(usize),
    /// A `dim_param`: `N`, `batch_size`, `unk__12`, `height`.
    Named(String),
    /// Neither: no field set, an empty name, `?`, or a negative `dim_value`
    /// (onnxruntime reads `-1` as free).
    Free,
}

impl Dim {
    /// Reads one dimension of a tensor's declared shape.
    fn read(dim: &pb::tensor_shape_proto::Dimension) -> Dim {
        use pb::tensor_shape_proto::dimension::Value;
        match &dim.value {
            Some(Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
            Some(Value::DimParam(name)) if !name.is_empty() && name != "?" => Dim::Named(name.clone()),
            _ => Dim::Free,
        }
    }

    /// The size, when the graph fixes one.
    fn size(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

/// The tensor's dimensions, or `None` when the graph gives it no shape.
fn dims(info: &pb::ValueInfoProto) -> Option<Vec<Dim>> {
    let Some(pb::type_proto::Value::TensorType(tensor)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(tensor.shape.as_ref()?.dim.iter().map(Dim::read).collect())
}

/// The refusal for an input whose height, width or channels are not fixed
/// numbers: each missing one, with how the graph writes it.
fn not_fixed(input: &str, sizes: [(&str, &Dim); 3]) -> String {
    let missing: Vec<String> = sizes
        .iter()
        .filter_map(|(what, dim)| match dim {
            Dim::Fixed(n) if *n > 0 => None,
            Dim::Fixed(_) => Some(format!("{what} (0)")),
            Dim::Named(name) => Some(format!("{what} (\"{name}\")")),
            Dim::Free => Some(format!("{what} (unnamed)")),
        })
        .collect();
    let listed = match missing.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    format!(
        "input \"{input}\" does not fix its {listed}; images are resized to the input's size, \
         so its height, width and channels must be numbers"
    )
}

/// The node's integer-list attribute, if present.
fn ints_attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a [i64]> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.as_slice())
}

/// Checks a parsed model against what ThreadCenter serves, and reads its
/// facts; refuses with a sentence naming the operator or the tensor. One
/// step per thing checked: the operators, the one image input, its layout
/// and size, the one score output, then the facts read from the metadata.
pub(crate) fn check(proto: &pb::ModelProto, path: &Path) -> Result<OnnxFacts, ModelError> {
    let graph = proto.graph.as_ref().ok_or_else(|| invalid(path, "the ONNX file has no graph"))?;
    check_operators(graph, path)?;
    let input = the_one_input(graph, path)?;
    let metadata: HashMap<String, String> =
        proto.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    let image = image_input(input, &metadata, path)?;
    let outputs = score_output(graph, path)?;
    let scale = match metadata.get("threadcenter.scale") {
        Some(text) => text
            .parse::<f32>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or_else(|| invalid(path, format!("threadcenter.scale \"{text}\" is not a number")))?,
        None => 1.0 / 255.0,
    };
    let labels: Vec<String> = metadata
        .get("threadcenter.labels")
        .map(|l| l.split(',').map(|s| s.trim().to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let fire_class = labels.iter().position(|l| l == "fire").unwrap_or(1).min(outputs - 1);
    let layers = graph
        .node
        .iter()
        .map(|n| if n.name.is_empty() { n.op_type.clone() } else { format!("{} {}", n.op_type, n.name) })
        .collect();
    let parameters = graph.initializer.iter().map(|t| t.dims.iter().product::<i64>().max(0) as usize).sum();
    Ok(OnnxFacts {
        input_shape: image.shape,
        layout: image.layout,
        scale,
        fixed_batch: image.batch.size(),
        batch_name: match image.batch {
            Dim::Named(name) => Some(name),
            _ => None,
        },
        outputs,
        fire_class,
        ends_in_softmax: graph.node.last().is_some_and(|n| n.op_type == "Softmax"),
        name: metadata.get("threadcenter.name").cloned(),
        layers,
        parameters,
        metadata,
    })
}

/// Every operator is one the engines run, as this server configures them
/// (a plain convolution: no groups, no dilation).
fn check_operators(graph: &pb::GraphProto, path: &Path) -> Result<(), ModelError> {
    for node in &graph.node {
        let known = node.domain.is_empty() || node.domain == "ai.onnx";
        if !known || !SUPPORTED_OPERATORS.contains(&node.op_type.as_str()) {
            return Err(invalid(
                path,
                format!(
                    "operator {}{} (node \"{}\") is not supported; supported: {}",
                    if known { String::new() } else { format!("{}.", node.domain) },
                    node.op_type,
                    node.name,
                    SUPPORTED_OPERATORS.join(", ")
                ),
            ));
        }
        if node.op_type == "Conv" {
            let group = node.attribute.iter().find(|a| a.name == "group").map_or(1, |a| a.i);
            if group != 1 {
                return Err(invalid(
                    path,
                    format!("Conv node \"{}\" has group {group}; only 1 is supported", node.name),
                ));
            }
            if ints_attribute(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
                return Err(invalid(
                    path,
                    format!("Conv node \"{}\" is dilated; only dilation 1 is supported", node.name),
                ));
            }
        }
    }
    Ok(())
}

/// The graph's one input that is not a weight (an image classifier has one).
fn the_one_input<'g>(graph: &'g pb::GraphProto, path: &Path) -> Result<&'g pb::ValueInfoProto, ModelError> {
    let weights: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !weights.contains(i.name.as_str())).collect();
    match inputs.as_slice() {
        [input] => Ok(input),
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            Err(invalid(
                path,
                format!(
                    "the graph has {} inputs ({}); an image classifier has exactly one",
                    names.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// What the image input is: its batch dimension, layout and fixed size.
struct ImageInput {
    batch: Dim,
    layout: Layout,
    /// Height, width, channels.
    shape: [usize; 3],
}

/// The input is an image: 4 dimensions, a layout (said by the metadata or
/// told by where the channels are), a batch that is free or fits a
/// `predict_batch`, and a fixed height, width and 1 or 3 channels.
fn image_input(
    input: &pb::ValueInfoProto,
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<ImageInput, ModelError> {
    let Some(shape) = dims(input) else {
        return Err(invalid(
            path,
            format!(
                "input \"{}\" has no shape in the graph; an image input has 4 dimensions \
                 (NCHW or NHWC) with a fixed height, width and channels",
                input.name
            ),
        ));
    };
    let [batch, a, b, c] = shape.as_slice() else {
        return Err(invalid(
            path,
            format!(
                "input \"{}\" has {} dimensions; an image input has 4 (NCHW or NHWC)",
                input.name,
                shape.len()
            ),
        ));
    };
    let layout = match metadata.get("threadcenter.layout").map(|l| l.to_ascii_uppercase()) {
        Some(l) if l == "NCHW" => Layout::Nchw,
        Some(l) if l == "NHWC" => Layout::Nhwc,
        Some(other) => {
            return Err(invalid(path, format!("threadcenter.layout is \"{other}\"; use NCHW or NHWC")))
        }
        None if matches!(a, Dim::Fixed(1 | 3)) => Layout::Nchw,
        None if matches!(c, Dim::Fixed(1 | 3)) => Layout::Nhwc,
        None => {
            return Err(invalid(
                path,
                format!("input \"{}\" has no channel dimension of 1 or 3 second or last", input.name),
            ))
        }
    };
    // A fixed batch above the largest predict_batch would only ever run
    // blank padding beside the images.
    if let Dim::Fixed(n) = batch {
        if *n == 0 || *n > MAX_BATCH_IMAGES {
            return Err(invalid(
                path,
                format!(
                    "input \"{}\" fixes the batch size at {n}; a fixed batch must be 1 to \
                     {MAX_BATCH_IMAGES} images, or leave it free",
                    input.name
                ),
            ));
        }
    }
    let (height, width, channels) = match layout {
        Layout::Nchw => (b, c, a),
        Layout::Nhwc => (a, b, c),
    };
    let (Some(height @ 1..), Some(width @ 1..), Some(channels)) =
        (height.size(), width.size(), channels.size())
    else {
        return Err(invalid(
            path,
            not_fixed(&input.name, [("height", height), ("width", width), ("channels", channels)]),
        ));
    };
    if channels != 1 && channels != 3 {
        return Err(invalid(
            path,
            format!("input \"{}\" has {channels} channels; 1 or 3 are served", input.name),
        ));
    }
    Ok(ImageInput { batch: batch.clone(), layout, shape: [height, width, channels] })
}

/// The graph's one output gives a score (1 value) or two classes (2) per image.
fn score_output(graph: &pb::GraphProto, path: &Path) -> Result<usize, ModelError> {
    let [output] = graph.output.as_slice() else {
        return Err(invalid(path, format!("the graph has {} outputs; one is served", graph.output.len())));
    };
    match dims(output).as_deref() {
        Some([_, Dim::Fixed(n)]) if *n == 1 || *n == 2 => Ok(*n),
        Some([_, Dim::Fixed(n)]) => Err(invalid(
            path,
            format!(
                "output \"{}\" has {n} values per image; a score (1) or two classes (2) are served",
                output.name
            ),
        )),
        _ => Err(invalid(
            path,
            format!("output \"{}\" must have the shape [batch, 1] or [batch, 2]", output.name),
        )),
    }
}

impl OnnxFacts {
    /// The input's shape as the graph lays it out, the batch shown by its
    /// name (`batch` when the graph gives none), e.g. `[batch, 3, 20, 24]`.
    #[cfg_attr(not(feature = "tract"), allow(dead_code))]
    pub(super) fn graph_input_shape(&self) -> String {
        let batch = match (self.fixed_batch, &self.batch_name) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => "batch".into(),
        };
        let [h, w, c] = self.input_shape;
        match self.layout {
            Layout::Nchw => format!("[{batch}, {c}, {h}, {w}]"),
            Layout::Nhwc => format!("[{batch}, {h}, {w}, {c}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_shape_proto::{dimension::Value, Dimension};

    fn dim(value: Option<Value>) -> Dim {
        Dim::read(&Dimension { value, denotation: String::new() })
    }

    #[test]
    fn every_way_exporters_write_a_dimension_is_read_as_fixed_named_or_free() {
        assert_eq!(dim(Some(Value::DimValue(4))), Dim::Fixed(4));
        assert_eq!(dim(Some(Value::DimValue(0))), Dim::Fixed(0));
        assert_eq!(dim(Some(Value::DimParam("batch_size".into()))), Dim::Named("batch_size".into()));
        assert_eq!(dim(Some(Value::DimParam("unk__12".into()))), Dim::Named("unk__12".into()));
        for free in [None, Some(Value::DimParam(String::new())), Some(Value::DimParam("?".into()))] {
            assert_eq!(dim(free.clone()), Dim::Free, "{free:?}");
        }
        assert_eq!(dim(Some(Value::DimValue(-1))), Dim::Free, "onnxruntime reads -1 as free");
    }

    /// A test model with its input's batch dimension rewritten.
    fn with_batch(value: i64) -> pb::ModelProto {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/nchw-unnamed-batch.onnx");
        let bytes = std::fs::read(path).unwrap();
        let mut proto = pb::decode(&bytes).unwrap();
        let input = &mut proto.graph.as_mut().unwrap().input[0];
        let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_mut().unwrap().value.as_mut()
        else {
            panic!("the test model has a tensor input")
        };
        tensor.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(value));
        proto
    }

    #[test]
    fn a_fixed_batch_is_served_from_1_to_256_images() {
        let path = Path::new("m.onnx");
        let refused = |value| check(&with_batch(value), path).unwrap_err().to_string();
        assert_eq!(
            refused(0),
            "model m.onnx is not usable: input \"input\" fixes the batch size at 0; \
             a fixed batch must be 1 to 256 images, or leave it free"
        );
        assert!(refused(257).contains("fixes the batch size at 257; a fixed batch must be 1 to 256"));
        for served in [1, 4, 256] {
            assert_eq!(check(&with_batch(served), path).unwrap().fixed_batch, Some(served as usize));
        }
        assert_eq!(check(&with_batch(-1), path).unwrap().fixed_batch, None);
    }
}
