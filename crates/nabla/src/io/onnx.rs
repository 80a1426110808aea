//! ONNX export of any [`Network`]: one graph that takes inputs in the data file's own units
//! (IDX pixels 0–255), applies all the preprocessing of training (the scale to [0, 1], the
//! fitted normaliser), runs the layers and returns the logits — and, for classifiers, the
//! softmax probabilities as a second output. Any ONNX runtime (ONNX Runtime, OpenVINO,
//! TensorRT, onnxruntime-web) can then serve a nabla model.
//!
//! The file is an ONNX `ModelProto` encoded by `prost` with message types generated from the
//! official `onnx.proto` (vendored in `crates/nabla/proto/`; regenerate with
//! `tools/onnx-proto-gen`). The graph uses only standard operators of the default domain at
//! opset [`ONNX_OPSET`]: `Mul` (the input scale), `Sub`, `Div` (the normaliser, exactly as
//! [`Normalizer::apply`] computes it), `Gemm` (a linear layer, `X·W + b` with nabla's
//! `[in, out]` weights, so no transpose; `MatMul` + `Add` on sequences), `Conv`, `MaxPool`,
//! `AveragePool` (padding counted), `BatchNormalization` (inference form: running statistics),
//! `Flatten`, `Add` (residual blocks), the activation (`Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Gelu` with `approximate="tanh"`,
//! `Softplus`; none for identity) and `Softmax`. Dropout is the identity at inference and is
//! left out. Sequence layers (embeddings, layer norm, attention, transformer blocks, GPTs) are
//! written out as standard ops too (`onnx_seq.rs`); a model whose first layer is an embedding
//! or a GPT takes `input` as int64 token ids `[batch, positions]`, any number of positions up
//! to its context, and returns `[batch, positions, vocab]`.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::onnx_proto as pb;
use super::write_atomic;
use crate::data::{Normalization, Normalizer};
use crate::error::{Error, Result};
use crate::nn::spec_infer as infer;
use crate::nn::{named_state, Activation, LayerSpec, Module, Network};
use crate::tensor::Tensor;

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
    /// The graph multiplies its input by this first, so that it takes the data file's own
    /// units (1/255 for IDX pixels 0–255; 1, the default, for values used as they are).
    pub input_scale: f32,
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
            input_scale: 1.0,
            normalizer: None,
            head: OnnxHead::Classification,
            metadata: BTreeMap::new(),
        }
    }
}

fn tensor_type(dims: &[Dim], elem: pb::tensor_proto::DataType) -> pb::TypeProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Dim::Batch => Value::DimParam("batch".into()),
                Dim::Positions => Value::DimParam("positions".into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
        })
        .collect();
    pb::TypeProto {
        denotation: None,
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(elem as i32),
            shape: Some(pb::TensorShapeProto { dim }),
        })),
    }
}

/// A dimension of a graph input or output.
enum Dim {
    Batch,
    /// A sequence's positions (token models: any number up to the context).
    Positions,
    Fixed(usize),
}

fn value_info(name: &str, dims: &[Dim], doc: &str) -> pb::ValueInfoProto {
    typed_value_info(name, dims, doc, pb::tensor_proto::DataType::Float)
}

fn typed_value_info(
    name: &str,
    dims: &[Dim],
    doc: &str,
    elem: pb::tensor_proto::DataType,
) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(tensor_type(dims, elem)),
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
    /// The graph's `input` holds int64 token ids (else floats).
    ids_input: bool,
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
    fn normalizer(&mut self, n: &Normalizer, features: usize, sample: &[usize]) -> Result<()> {
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
        // Per feature: one value per input value, laid out as a sample (broadcast over the batch).
        let dims = if expected == 1 {
            vec![1]
        } else {
            sample.to_vec()
        };
        self.constant("normalizer.mean", &dims, &n.mean);
        self.constant("normalizer.std", &dims, &n.std);
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
    /// A node with explicit inputs (the graph's edges by name).
    fn node_from(
        &mut self,
        op: &str,
        input: Vec<String>,
        output: &str,
        attrs: Vec<pb::AttributeProto>,
    ) {
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

    /// A tensor of the network as an initializer named like the parameter.
    fn state(&mut self, state: &BTreeMap<String, Tensor<f32>>, name: &str) -> Result<String> {
        let t = state.get(name).ok_or_else(|| {
            Error::arg("export_onnx", format!("the network has no tensor '{name}'"))
        })?;
        self.constant(name, t.shape(), &t.contiguous()?.to_vec()?);
        Ok(name.to_string())
    }

    /// The inputs of a convolution: the current value, the weight, the bias if any.
    fn conv_inputs(
        &mut self,
        state: &BTreeMap<String, Tensor<f32>>,
        name: &str,
        bias: bool,
    ) -> Result<Vec<String>> {
        let mut inputs = vec![
            self.last.clone(),
            self.state(state, &format!("{name}.weight"))?,
        ];
        if bias {
            inputs.push(self.state(state, &format!("{name}.bias"))?);
        }
        Ok(inputs)
    }

    /// The nodes of `layers` (named `at.i`), from the current value on; `shape` is the input
    /// shape of the first (batch 1), updated to the output's.
    fn layers(
        &mut self,
        layers: &[LayerSpec],
        at: &str,
        shape: &mut Vec<usize>,
        state: &BTreeMap<String, Tensor<f32>>,
    ) -> Result<()> {
        for (i, l) in layers.iter().enumerate() {
            let name = format!("{at}.{i}");
            let out_shape = infer(l, shape, &name)?.0;
            let out = format!("{name}.out");
            let pair = |p: (usize, usize)| vec![p.0 as i64, p.1 as i64];
            match l {
                LayerSpec::Linear { bias, .. } => {
                    let w = self.state(state, &format!("{name}.weight"))?;
                    if *bias {
                        let b = self.state(state, &format!("{name}.bias"))?;
                        if shape.len() == 2 {
                            self.node("Gemm", &[&w, &b], &out, vec![]);
                        } else {
                            self.node("MatMul", &[&w], &format!("{name}.matmul"), vec![]);
                            self.node("Add", &[&b], &out, vec![]);
                        }
                    } else {
                        self.node("MatMul", &[&w], &out, vec![]);
                    }
                }
                LayerSpec::Conv2d {
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    ..
                } => {
                    let inputs = self.conv_inputs(state, &name, *bias)?;
                    let attrs = vec![
                        attr_ints("kernel_shape", pair(*kernel_size)),
                        attr_ints("strides", pair(*stride)),
                        attr_ints("pads", [pair(*padding), pair(*padding)].concat()),
                        attr_ints("dilations", pair(*dilation)),
                        attr_int("group", *groups as i64),
                    ];
                    self.node_from("Conv", inputs, &out, attrs);
                }
                LayerSpec::Conv1d {
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    ..
                } => {
                    let inputs = self.conv_inputs(state, &name, *bias)?;
                    let attrs = vec![
                        attr_ints("kernel_shape", vec![*kernel_size as i64]),
                        attr_ints("strides", vec![*stride as i64]),
                        attr_ints("pads", vec![*padding as i64; 2]),
                        attr_ints("dilations", vec![*dilation as i64]),
                        attr_int("group", *groups as i64),
                    ];
                    self.node_from("Conv", inputs, &out, attrs);
                }
                LayerSpec::MaxPool2d {
                    kernel_size,
                    stride,
                    padding,
                }
                | LayerSpec::AvgPool2d {
                    kernel_size,
                    stride,
                    padding,
                } => {
                    let max = matches!(l, LayerSpec::MaxPool2d { .. });
                    let mut attrs = vec![
                        attr_ints("kernel_shape", pair(*kernel_size)),
                        attr_ints("strides", pair(stride.unwrap_or(*kernel_size))),
                        attr_ints("pads", [pair(*padding), pair(*padding)].concat()),
                    ];
                    if !max {
                        attrs.push(attr_int("count_include_pad", 1)); // padding counts as zeros
                    }
                    let op = if max { "MaxPool" } else { "AveragePool" };
                    self.node(op, &[], &out, attrs);
                }
                LayerSpec::BatchNorm1d { eps, .. } | LayerSpec::BatchNorm2d { eps, .. } => {
                    let mut inputs = vec![self.last.clone()];
                    for k in ["weight", "bias", "running_mean", "running_var"] {
                        inputs.push(self.state(state, &format!("{name}.{k}"))?);
                    }
                    let eps = vec![attr_float("epsilon", *eps as f32)];
                    self.node_from("BatchNormalization", inputs, &out, eps);
                }
                LayerSpec::Flatten => self.node("Flatten", &[], &out, vec![attr_int("axis", 1)]),
                LayerSpec::Dropout { .. } | LayerSpec::Identity => {} // identities at inference
                LayerSpec::Sequential { layers } => self.layers(layers, &name, shape, state)?,
                LayerSpec::Residual { layers } => {
                    let skip = self.last.clone();
                    self.layers(layers, &format!("{name}.inner"), &mut shape.clone(), state)?;
                    let body = self.last.clone();
                    self.node_from("Add", vec![skip, body], &out, vec![]);
                }
                seq if seq.is_sequence_layer() => {
                    self.sequence_layer(seq, &name, &out, shape, state)?
                }
                other => self.activation(other.as_activation()?, &out),
            }
            *shape = out_shape;
        }
        Ok(())
    }

    /// The head: the last value as `logits` (or `predictions`), and the softmax.
    fn head(
        &mut self,
        head: OnnxHead,
        out_shape: &[usize],
        positions: Option<usize>,
    ) -> Vec<pb::ValueInfoProto> {
        let head_name = match head {
            OnnxHead::Classification => "logits",
            OnnxHead::Regression => "predictions",
        };
        // The last node's output becomes the head (it feeds no other node); a graph whose layers
        // add no node (only dropout) copies its input.
        match self.nodes.last_mut() {
            Some(n) if n.output.first() == Some(&self.last) => {
                n.output = vec![head_name.into()];
                self.last = head_name.into();
            }
            _ => self.node("Identity", &[], head_name, vec![]),
        }
        let mut dims = vec![Dim::Batch];
        dims.extend(out_shape[1..].iter().map(|&d| Dim::Fixed(d)));
        if let Some(axis) = positions {
            dims[axis] = Dim::Positions;
        }
        let mut graph_outputs = vec![value_info(
            head_name,
            &dims,
            "the network's outputs (before any softmax)",
        )];
        if head == OnnxHead::Classification {
            self.node("Softmax", &[], "probabilities", vec![attr_int("axis", -1)]);
            graph_outputs.push(value_info("probabilities", &dims, "softmax of the logits"));
        }
        graph_outputs
    }
}

fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn attr_ints(name: &str, values: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Ints as i32),
        ints: values,
        ..Default::default()
    }
}

fn model_proto(model: &Network<f32>, options: &OnnxOptions) -> Result<pb::ModelProto> {
    let spec = model.spec();
    let features = spec.input_features();
    let out_shape = spec.output_shape(1)?;
    if !(options.input_scale.is_finite() && options.input_scale > 0.0) {
        return Err(Error::arg(
            "export_onnx",
            format!("input scale {} must be positive", options.input_scale),
        ));
    }
    let ids = seq::takes_ids(&spec.layers);
    let normalised = options
        .normalizer
        .as_ref()
        .is_some_and(|n| n.mode != Normalization::None);
    if ids && (options.input_scale != 1.0 || normalised) {
        return Err(Error::arg(
            "export_onnx",
            format!(
                "a model of token ids takes no input scale ({}) nor normaliser",
                options.input_scale
            ),
        ));
    }
    let mut b = Builder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        last: "input".into(),
        ids_input: ids,
    };
    if options.input_scale != 1.0 {
        b.constant("input_scale", &[1], &[options.input_scale]);
        b.node("Mul", &["input_scale"], "scaled", vec![]);
    }
    if let Some(n) = &options.normalizer {
        b.normalizer(n, features, &spec.input)?;
    }
    let state: BTreeMap<String, Tensor<f32>> = named_state(model).into_iter().collect();
    let mut shape = vec![1];
    shape.extend(&spec.input);
    b.layers(&spec.layers, "layers", &mut shape, &state)?;
    // Where nabla's network takes any number of positions up to its context (its first layer
    // an embedding or a GPT of ids [N, t]) and keeps a vector per position, so does the
    // graph: the input's positions and the output's are dynamic.
    let positions = (ids
        && seq::takes_ids(&spec.layers[..spec.layers.len().min(1)])
        && spec.input.len() == 1
        && out_shape.len() == 3)
        .then_some(1);
    let graph_outputs = b.head(options.head, &out_shape, positions);
    let units = if options.input_scale == 1.0 {
        "values as the data file holds them (CSV columns as written)".to_string()
    } else {
        format!(
            "values as the data file holds them (IDX pixels 0-255); the graph multiplies them by {}",
            options.input_scale
        )
    };
    let sample: Vec<String> = spec.input.iter().map(|d| d.to_string()).collect();
    let input_doc = format!(
        "{units}{}; shape [batch, {}]",
        if normalised {
            ", then normalises them as in training"
        } else {
            ""
        },
        sample.join(", ")
    );
    let mut metadata = options.metadata.clone();
    metadata.insert("model_spec".into(), spec.to_json());
    metadata.insert("input_scale".into(), format!("{:?}", options.input_scale));
    if let Some(mlp) = spec.as_mlp() {
        let arch: Vec<String> = mlp.sizes.iter().map(|s| s.to_string()).collect();
        metadata.insert("architecture".into(), arch.join("-"));
        metadata.insert("activation".into(), mlp.activation.to_string());
    }
    let mut input_dims = vec![Dim::Batch];
    input_dims.extend(spec.input.iter().map(|&d| Dim::Fixed(d)));
    let input = if ids {
        let doc = if positions.is_some() {
            format!(
                "token ids (int64, ≥ 0 and below the vocabulary's size); shape [batch, \
                 positions], at most {} positions",
                spec.input.last().copied().unwrap_or(0)
            )
        } else {
            let dims = sample.join(", ");
            format!("token ids (int64, ≥ 0 and below the vocabulary's size); shape [batch, {dims}]")
        };
        if positions.is_some() {
            if let Some(last) = input_dims.last_mut() {
                *last = Dim::Positions;
            }
        }
        typed_value_info(
            "input",
            &input_dims,
            &doc,
            pb::tensor_proto::DataType::Int64,
        )
    } else {
        value_info("input", &input_dims, &input_doc)
    };
    let graph = pb::GraphProto {
        node: b.nodes,
        name: Some("nabla_network".into()),
        initializer: b.initializers,
        doc_string: Some(model.describe()),
        input: vec![input],
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

/// The model as the bytes of an ONNX file (the module docs describe the graph).
pub fn onnx_bytes<M: AsRef<Network<f32>> + ?Sized>(
    model: &M,
    options: &OnnxOptions,
) -> Result<Vec<u8>> {
    Ok(model_proto(model.as_ref(), options)?.encode_to_vec())
}

/// Writes `model` as an ONNX file (atomically): input `input` `[batch, features]` of raw
/// features (int64 token ids `[batch, positions]` for a language model), outputs `logits` and
/// `probabilities` (or `predictions` for [`OnnxHead::Regression`]), the normaliser folded in.
/// Errors name the model or the file.
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
pub fn export_onnx<M: AsRef<Network<f32>> + ?Sized>(
    model: &M,
    options: &OnnxOptions,
    path: impl AsRef<Path>,
) -> Result<()> {
    write_atomic(path.as_ref(), &onnx_bytes(model, options)?)
}

#[path = "onnx_seq.rs"]
mod seq;

#[cfg(test)]
#[path = "onnx_tests.rs"]
mod tests;
