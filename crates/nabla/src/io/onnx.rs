//! ONNX export of MLPs: one graph that takes the raw features (as nabla reads them), applies the
//! fitted input normaliser, runs the layers and returns the logits — and, for classifiers, the
//! softmax probabilities as a second output. Any ONNX runtime (ONNX Runtime, OpenVINO,
//! TensorRT, onnxruntime-web) can then serve a nabla model.
//!
//! The file is an ONNX `ModelProto` encoded by `prost` with message types generated from the
//! official `onnx.proto` (vendored in `crates/nabla/proto/`; regenerate with
//! `tools/onnx-proto-gen`). The graph uses only standard operators of the default domain at
//! opset [`ONNX_OPSET`]: `Sub`, `Div` (the normaliser, exactly as [`Normalizer::apply`] computes
//! it), `Gemm` (a linear layer, `X·W + b` with nabla's `[in, out]` weights, so no transpose),
//! the activation (`Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Gelu` with `approximate="tanh"`,
//! `Softplus`; none for identity) and `Softmax`. Dropout is the identity at inference and is
//! left out.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::onnx_proto as pb;
use super::write_atomic;
use crate::data::{Normalization, Normalizer};
use crate::error::{Error, Result};
use crate::nn::{Activation, Mlp, Module};

/// The opset of the default ONNX domain that exported graphs import (21: ONNX 1.16, ONNX
/// Runtime ≥ 1.18; `Gelu` needs ≥ 20).
pub const ONNX_OPSET: i64 = 21;

/// The IR version written with [`ONNX_OPSET`] (10, as the ONNX versioning table pairs them).
pub const ONNX_IR_VERSION: i64 = 10;

/// What an exported graph returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxHead {
    /// Outputs `logits` `[batch, classes]` and `probabilities` (their softmax).
    Classification,
    /// One output, `predictions` `[batch, outputs]`.
    Regression,
}

/// Options of [`export_onnx`].
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// The input normaliser fitted in training, folded into the graph so that it takes raw
    /// features; `None` (or a [`Normalization::None`] normaliser) feeds the inputs as they are.
    pub normalizer: Option<Normalizer>,
    /// The outputs.
    pub head: OnnxHead,
    /// Extra key/value pairs stored as the model's `metadata_props` (class names, data set, …).
    pub metadata: BTreeMap<String, String>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            normalizer: None,
            head: OnnxHead::Classification,
            metadata: BTreeMap::new(),
        }
    }
}

fn float_type(dims: &[Dim]) -> pb::TypeProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Dim::Batch => Value::DimParam("batch".into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
        })
        .collect();
    pb::TypeProto {
        denotation: None,
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(pb::tensor_proto::DataType::Float as i32),
            shape: Some(pb::TensorShapeProto { dim }),
        })),
    }
}

/// A dimension of a graph input or output.
enum Dim {
    Batch,
    Fixed(usize),
}

fn value_info(name: &str, dims: &[Dim], doc: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(float_type(dims)),
        doc_string: Some(doc.into()),
        ..Default::default()
    }
}

fn initializer(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(pb::tensor_proto::DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn attr_float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

fn attr_string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// The graph under construction: nodes, initializers and the name of the last value.
struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    last: String,
}

impl Builder {
    /// Appends `op(last, extra inputs…) -> output` and makes `output` the last value.
    fn node(&mut self, op: &str, extra: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) {
        let mut input = vec![self.last.clone()];
        input.extend(extra.iter().map(|s| s.to_string()));
        self.nodes.push(pb::NodeProto {
            input,
            output: vec![output.into()],
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        self.last = output.into();
    }

    fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        self.initializers.push(initializer(name, dims, data));
    }

    /// The normaliser as `(x − mean) / std`, the same two roundings as [`Normalizer::apply`].
    fn normalizer(&mut self, n: &Normalizer, features: usize) -> Result<()> {
        let expected = match n.mode {
            Normalization::None => return Ok(()),
            Normalization::Global => 1,
            Normalization::PerFeature => features,
        };
        if n.mean.len() != expected || n.std.len() != expected {
            return Err(Error::arg(
                "export_onnx",
                format!(
                    "the {:?} normaliser has {} means and {} stds; the model's {features} \
                     inputs need {expected}",
                    n.mode,
                    n.mean.len(),
                    n.std.len()
                ),
            ));
        }
        self.constant("normalizer.mean", &[expected], &n.mean);
        self.constant("normalizer.std", &[expected], &n.std);
        self.node("Sub", &["normalizer.mean"], "centered", vec![]);
        self.node("Div", &["normalizer.std"], "normalized", vec![]);
        Ok(())
    }

    fn activation(&mut self, a: Activation, output: &str) {
        let (op, attrs) = match a {
            Activation::Relu => ("Relu", vec![]),
            Activation::LeakyRelu(s) => ("LeakyRelu", vec![attr_float("alpha", s as f32)]),
            Activation::Sigmoid => ("Sigmoid", vec![]),
            Activation::Tanh => ("Tanh", vec![]),
            Activation::Gelu => ("Gelu", vec![attr_string("approximate", "tanh")]),
            Activation::Softplus => ("Softplus", vec![]),
            Activation::Identity => return,
        };
        self.node(op, &[], output, attrs);
    }
}

impl Builder {
    /// `Gemm` + activation per layer, then the head; returns the graph's outputs.
    fn layers(
        &mut self,
        model: &Mlp<f32>,
        head: OnnxHead,
        outputs: usize,
    ) -> Result<Vec<pb::ValueInfoProto>> {
        let activation = model.config().activation;
        let layers = super::torch::linear_layers(model, "export_onnx")?;
        let head_name = match head {
            OnnxHead::Classification => "logits",
            OnnxHead::Regression => "predictions",
        };
        for (k, (w, bias)) in layers.iter().enumerate() {
            let (wn, bn) = (format!("layers.{k}.weight"), format!("layers.{k}.bias"));
            self.constant(&wn, w.shape(), &w.contiguous()?.to_vec()?);
            self.constant(&bn, bias.shape(), &bias.to_vec()?);
            let last_layer = k + 1 == layers.len();
            let out = if last_layer {
                head_name.to_string()
            } else {
                format!("layers.{k}.linear")
            };
            self.node("Gemm", &[&wn, &bn], &out, vec![]);
            if !last_layer {
                self.activation(activation, &format!("layers.{k}.{activation}"));
            }
        }
        let out_dims = [Dim::Batch, Dim::Fixed(outputs)];
        let mut graph_outputs = vec![value_info(
            head_name,
            &out_dims,
            "the network's outputs (before any softmax)",
        )];
        if head == OnnxHead::Classification {
            let axis = pb::AttributeProto {
                name: Some("axis".into()),
                r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
                i: Some(-1),
                ..Default::default()
            };
            self.node("Softmax", &[], "probabilities", vec![axis]);
            graph_outputs.push(value_info(
                "probabilities",
                &out_dims,
                "softmax of the logits",
            ));
        }
        Ok(graph_outputs)
    }
}

/// The model as an ONNX `ModelProto`.
fn model_proto(model: &Mlp<f32>, options: &OnnxOptions) -> Result<pb::ModelProto> {
    let config = model.config();
    let sizes = &config.sizes;
    let (Some(&inputs), Some(&outputs)) = (sizes.first(), sizes.last()) else {
        return Err(Error::arg("export_onnx", "the model has no layers"));
    };
    let mut b = Builder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        last: "input".into(),
    };
    if let Some(n) = &options.normalizer {
        b.normalizer(n, inputs)?;
    }
    let graph_outputs = b.layers(model, options.head, outputs)?;
    let input_doc = "raw features as nabla reads them (IDX pixels scaled to [0, 1], CSV columns \
                     as written); the normaliser is part of the graph";
    let mut metadata = options.metadata.clone();
    metadata.insert(
        "architecture".into(),
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-"),
    );
    metadata.insert("activation".into(), config.activation.to_string());
    let graph = pb::GraphProto {
        node: b.nodes,
        name: Some("nabla_mlp".into()),
        initializer: b.initializers,
        doc_string: Some(model.describe()),
        input: vec![value_info(
            "input",
            &[Dim::Batch, Dim::Fixed(inputs)],
            input_doc,
        )],
        output: graph_outputs,
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: Some(ONNX_IR_VERSION),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(ONNX_OPSET),
        }],
        producer_name: Some("nabla".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: Some(k),
                value: Some(v),
            })
            .collect(),
        ..Default::default()
    })
}

/// The model as the bytes of an ONNX file (see the [module docs](self) for the graph).
pub fn onnx_bytes(model: &Mlp<f32>, options: &OnnxOptions) -> Result<Vec<u8>> {
    Ok(model_proto(model, options)?.encode_to_vec())
}

/// Writes `model` as an ONNX file (atomically): input `input` `[batch, features]` of raw
/// features, outputs `logits` and `probabilities` (or `predictions` for
/// [`OnnxHead::Regression`]), the normaliser folded in. Errors name the model or the file.
///
/// ```
/// use nabla::io::{export_onnx, OnnxOptions};
/// use nabla::nn::{Mlp, MlpConfig};
/// let model = Mlp::<f32>::new(&MlpConfig::new(&[4, 8, 3])).unwrap();
/// let path = std::env::temp_dir().join("nabla_doc.onnx");
/// export_onnx(&model, &OnnxOptions::default(), &path).unwrap();
/// // Python: onnxruntime.InferenceSession(path).run(None, {"input": x}) -> [logits, probabilities]
/// assert!(std::fs::metadata(&path).unwrap().len() > 4 * (4 * 8 + 8 * 3));
/// ```
pub fn export_onnx(model: &Mlp<f32>, options: &OnnxOptions, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &onnx_bytes(model, options)?)
}

#[cfg(test)]
#[path = "onnx_tests.rs"]
mod tests;
