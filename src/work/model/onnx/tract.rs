//! tract, the pure-Rust ONNX engine (the cargo feature `tract`): the
//! fallback where onnxruntime is not there. It optimises the graph once at
//! load and runs the plan for every batch, each part on one core. About a
//! quarter of onnxruntime's speed on these networks, and most of a release
//! build's time — hence a feature, not always built in.

use std::path::Path;
use std::sync::Arc;

use ndarray::Array4;
use tract_onnx::pb;
use tract_onnx::prelude::{
    tvec, Framework, InferenceFact, InferenceModelExt, IntoRunnable, TDim, TValue, Tensor, TractResult,
    TypedRunnableModel,
};

use super::check::{invalid, Layout, OnnxFacts};
use crate::work::model::ModelError;

/// A checked graph, optimised by tract and ready to run.
pub(super) struct TractPlan(Arc<TypedRunnableModel>);

impl TractPlan {
    /// Parses the file again with tract's own protobuf types and builds
    /// its plan; tract's words stay in the debug log, the user gets ours.
    pub(super) fn prepare(bytes: &[u8], facts: &OnnxFacts, path: &Path) -> Result<TractPlan, ModelError> {
        let proto = tract_onnx::onnx().proto_model_for_read(&mut &bytes[..]).map_err(|e| {
            tracing::debug!(path = %path.display(), error = %format!("{e:#}"), "tract's protobuf refused the file");
            invalid(path, "not an ONNX model (the file is not an ONNX protobuf)")
        })?;
        let plan = build(&proto, facts).map_err(|e| {
            tracing::debug!(path = %path.display(), error = %format!("{e:#}"), "tract refused the graph");
            invalid(
                path,
                format!(
                    "the tract engine cannot prepare the graph for its input {}: a layer's \
                     weights or attributes do not fit the tensor it gets, or are beyond what \
                     tract runs; onnxruntime names the node (--onnxruntime)",
                    facts.graph_input_shape()
                ),
            )
        })?;
        Ok(TractPlan(plan))
    }

    /// Runs one batch (in the graph's layout) and returns its rows, flat.
    pub(super) fn run(&self, batch: Array4<f32>) -> Result<Vec<f32>, ModelError> {
        let images = batch.dim().0;
        let input: TValue = Tensor::from(batch).into();
        let outputs = self.0.run(tvec!(input)).map_err(|e| {
            tracing::debug!(error = %format!("{e:#}"), "tract failed on a batch");
            ModelError::Run(format!("the tract engine failed on a group of {images} images"))
        })?;
        let output = outputs[0].to_plain_array_view::<f32>().map_err(|e| ModelError::Run(e.to_string()))?;
        Ok(output.iter().copied().collect())
    }
}

/// Builds tract's plan for a checked graph.
///
/// tract takes the input's shape from the graph, and cannot work the other
/// shapes out from a batch written without a name. So it is told the input
/// as [`super::check`] read it: the batch a fixed size or a symbol, height,
/// width and channels fixed. Every other shape it works out from that and
/// the weights; the shapes the graph declares for its output and
/// intermediate tensors (`value_info`) are set aside, because exporters
/// name their batch in their own words (tf2onnx writes `unk__12` on the
/// input and `unk__13` on the output) and one that differs from the
/// input's would not agree with it. `check` has already read what it needs
/// from the output's.
fn build(proto: &pb::ModelProto, facts: &OnnxFacts) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().with_ignore_value_info(true).model_for_proto_model(proto)?;
    let batch: TDim = match facts.fixed_batch {
        Some(n) => n.into(),
        None => model.symbols.sym(facts.batch_name.as_deref().unwrap_or("batch")).into(),
    };
    let [h, w, c] = facts.input_shape.map(TDim::from);
    let shape = match facts.layout {
        Layout::Nchw => [batch, c, h, w],
        Layout::Nhwc => [batch, h, w, c],
    };
    // The declared element type stays; only the shape is ours.
    let input = model.input_fact(0)?.clone().with_shape(shape);
    model.set_input_fact(0, input)?;
    model.set_output_fact(0, InferenceFact::default())?;
    model.into_optimized()?.into_runnable()
}
