//! The part of ONNX's protobuf schema (`onnx.proto`, its field numbers)
//! that [`super::check`] reads: the graph's nodes and their attributes, its
//! inputs and outputs with their shapes, the weights' names and sizes, and
//! the model's `metadata_props`. Written out with `prost`'s derive rather
//! than generated, so reading a model needs neither `protoc` nor an engine:
//! onnxruntime then runs the file it was given, and tract (when built in)
//! parses it again with its own types.
//!
//! Every field not listed here is skipped while decoding — the weights'
//! bytes (`raw_data`) among them, so a model is read without copying them.
//! The module paths follow the generated code's (`type_proto::Value`,
//! `tensor_shape_proto::dimension::Value`), as tract's `pb` has them.

/// `ModelProto`: the file.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub(crate) graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub(crate) metadata_props: Vec<StringStringEntryProto>,
}

/// `StringStringEntryProto`: one metadata entry.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `GraphProto`: nodes in order, weights, inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub(crate) node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    pub(crate) initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub(crate) input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub(crate) output: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NodeProto {
    #[prost(string, tag = "3")]
    pub(crate) name: String,
    #[prost(string, tag = "4")]
    pub(crate) op_type: String,
    #[prost(string, tag = "7")]
    pub(crate) domain: String,
    #[prost(message, repeated, tag = "5")]
    pub(crate) attribute: Vec<AttributeProto>,
}

/// `AttributeProto`: the integer forms only (`i`, `ints`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AttributeProto {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(int64, tag = "3")]
    pub(crate) i: i64,
    #[prost(int64, repeated, tag = "8")]
    pub(crate) ints: Vec<i64>,
}

/// `TensorProto`: a weight's name and dimensions (its bytes are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub(crate) dims: Vec<i64>,
    #[prost(string, tag = "8")]
    pub(crate) name: String,
}

/// `ValueInfoProto`: a graph input or output.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) r#type: Option<TypeProto>,
}

/// `TypeProto`: only tensors are read; other kinds decode as `None`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub(crate) value: Option<type_proto::Value>,
}

pub(crate) mod type_proto {
    /// `TypeProto.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }

    /// `TypeProto.Tensor`: element type and shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Tensor {
        #[prost(int32, tag = "1")]
        pub(crate) elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub(crate) shape: Option<super::TensorShapeProto>,
    }
}

/// `TensorShapeProto`: one entry per dimension.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub(crate) dim: Vec<tensor_shape_proto::Dimension>,
}

pub(crate) mod tensor_shape_proto {
    /// `TensorShapeProto.Dimension`: a number, a name, or neither.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub(crate) value: Option<dimension::Value>,
        #[prost(string, tag = "3")]
        pub(crate) denotation: String,
    }

    pub(crate) mod dimension {
        /// `Dimension.value`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub(crate) enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// Reads a model file's bytes.
///
/// # Errors
/// Bytes that are not a protobuf of this shape.
pub(crate) fn decode(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    prost::Message::decode(bytes)
}
