//! The layers of the convolutional network and their forward passes.
//!
//! Activations are NHWC — height, width, channels, with the channels of one
//! pixel next to each other — for one image at a time until `flatten`, and a
//! `[batch, features]` matrix after it. That layout makes a 3×3 convolution a
//! matrix product ("im2col"): each output pixel's 3×3×C input window is
//! copied into one row of a matrix, three contiguous runs of 3·C floats, and
//! the whole layer is then `rows × weights`, which ndarray hands to a tuned
//! matrix-multiply kernel. The copy costs memory traffic but turns millions
//! of tiny dot products into one call that keeps the CPU's vector units busy.

use ndarray::{s, Array1, Array2, Array3, ArrayView3, Axis};

/// One layer, with its weights already in the shape its forward pass wants.
#[derive(Debug)]
pub(crate) enum Layer {
    /// A square convolution, stride 1, no padding.
    Conv2d {
        /// `[k·k·in, out]`: the file's `[out, k, k, in]` reshaped and transposed.
        weight: Array2<f32>,
        /// `[out]`.
        bias: Array1<f32>,
        /// Kernel size.
        k: usize,
    },
    /// `max(x, 0)`, element by element.
    Relu,
    /// Max pooling over `size × size` blocks, stride `size`; a last row or
    /// column that does not fill a block is dropped (as Keras and PyTorch do).
    MaxPool2d {
        /// Block size.
        size: usize,
    },
    /// From one image's `[H, W, C]` to a row of `H·W·C` features, in that order.
    Flatten,
    /// `x · weight + bias` for the whole batch at once.
    Dense {
        /// `[in, out]`.
        weight: Array2<f32>,
        /// `[out]`.
        bias: Array1<f32>,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
}

impl Layer {
    /// A one-line description, for the `model` command.
    pub(crate) fn describe(&self) -> String {
        match self {
            Layer::Conv2d { weight, k, .. } => {
                let (rows, out) = weight.dim();
                format!("conv2d {k}x{k}, {} -> {out} channels", rows / (k * k))
            }
            Layer::Relu => "relu".into(),
            Layer::MaxPool2d { size } => format!("maxpool2d {size}x{size}"),
            Layer::Flatten => "flatten".into(),
            Layer::Dense { weight, .. } => format!("dense {} -> {}", weight.nrows(), weight.ncols()),
            Layer::Sigmoid => "sigmoid".into(),
        }
    }
}

/// Runs a convolution on one `[H, W, C]` image.
pub(crate) fn conv2d(
    input: ArrayView3<f32>,
    weight: &Array2<f32>,
    bias: &Array1<f32>,
    k: usize,
) -> Array3<f32> {
    let (h, w, c) = input.dim();
    let (out_h, out_w) = (h + 1 - k, w + 1 - k);
    let cols = im2col(input, k);
    debug_assert_eq!(cols.ncols(), k * k * c);
    // [out_h·out_w, k·k·C] · [k·k·C, out] = [out_h·out_w, out]: row-major,
    // that is already the NHWC layout of the output image.
    let mut out = cols.dot(weight);
    out += bias;
    let channels = out.ncols();
    out.into_shape_with_order((out_h, out_w, channels)).expect("the product has out_h·out_w rows")
}

/// Copies each `k × k × C` window of `input` into one row, ordered
/// (dy, dx, c) — the order of the weights' `[k, k, in]` axes.
fn im2col(input: ArrayView3<f32>, k: usize) -> Array2<f32> {
    let (h, w, c) = input.dim();
    let (out_h, out_w) = (h + 1 - k, w + 1 - k);
    let row_len = k * k * c;
    let input = input.as_standard_layout();
    let pixels = input.as_slice().expect("standard layout is contiguous");
    let mut cols = vec![0.0f32; out_h * out_w * row_len];
    for (row_index, row) in cols.chunks_exact_mut(row_len).enumerate() {
        let (y, x) = (row_index / out_w, row_index % out_w);
        for dy in 0..k {
            // Window row dy: k pixels side by side, k·C floats in a row.
            let start = ((y + dy) * w + x) * c;
            row[dy * k * c..(dy + 1) * k * c].copy_from_slice(&pixels[start..start + k * c]);
        }
    }
    Array2::from_shape_vec((out_h * out_w, row_len), cols).expect("sized above")
}

/// Max pooling on one `[H, W, C]` image.
pub(crate) fn max_pool(input: ArrayView3<f32>, size: usize) -> Array3<f32> {
    let (h, w, c) = input.dim();
    let (out_h, out_w) = (h / size, w / size);
    let mut out = Array3::from_elem((out_h, out_w, c), f32::NEG_INFINITY);
    for y in 0..out_h * size {
        for x in 0..out_w * size {
            let mut target = out.slice_mut(s![y / size, x / size, ..]);
            let source = input.slice(s![y, x, ..]);
            target.zip_mut_with(&source, |best, &v| *best = best.max(v));
        }
    }
    out
}

/// `x · weight + bias` for a `[batch, in]` matrix.
pub(crate) fn dense(input: &Array2<f32>, weight: &Array2<f32>, bias: &Array1<f32>) -> Array2<f32> {
    let mut out = input.dot(weight);
    out += bias;
    out
}

/// Stacks flattened images into a `[batch, features]` matrix.
pub(crate) fn stack_rows(rows: &[Array1<f32>]) -> Array2<f32> {
    let views: Vec<_> = rows.iter().map(|r| r.view().insert_axis(Axis(0))).collect();
    ndarray::concatenate(Axis(0), &views).expect("every image flattens to the same length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array};

    /// The convolution, computed the slow obvious way.
    fn naive_conv(
        input: &Array3<f32>,
        weight_okki: &ndarray::Array4<f32>,
        bias: &Array1<f32>,
    ) -> Array3<f32> {
        let (h, w, c) = input.dim();
        let (o, k, _, _) = weight_okki.dim();
        Array3::from_shape_fn((h + 1 - k, w + 1 - k, o), |(y, x, f)| {
            let mut sum = bias[f];
            for dy in 0..k {
                for dx in 0..k {
                    for ch in 0..c {
                        sum += input[[y + dy, x + dx, ch]] * weight_okki[[f, dy, dx, ch]];
                    }
                }
            }
            sum
        })
    }

    #[test]
    fn im2col_convolution_matches_the_definition() {
        let input = Array::from_shape_fn((6, 5, 2), |(y, x, c)| (y * 10 + x) as f32 * 0.1 - c as f32);
        let weight = Array::from_shape_fn((3, 3, 3, 2), |(o, dy, dx, c)| {
            ((o + 1) as f32) * 0.01 * (dy as f32 - dx as f32 + c as f32 + 0.5)
        });
        let bias = array![0.5, -1.0, 0.25];
        let expected = naive_conv(&input, &weight, &bias);
        let as_matrix = weight.clone().into_shape_with_order((3, 18)).unwrap().reversed_axes().to_owned();
        let got = conv2d(input.view(), &as_matrix, &bias, 3);
        assert_eq!(got.dim(), (4, 3, 3));
        for (a, b) in got.iter().zip(expected.iter()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn max_pool_takes_block_maxima_and_drops_the_odd_edge() {
        let input = Array::from_shape_fn((5, 4, 1), |(y, x, _)| (y * 4 + x) as f32);
        let pooled = max_pool(input.view(), 2);
        assert_eq!(pooled.dim(), (2, 2, 1));
        assert_eq!(pooled.into_raw_vec_and_offset().0, vec![5.0, 7.0, 13.0, 15.0]);
    }
}
