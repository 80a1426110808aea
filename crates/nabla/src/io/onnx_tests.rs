//! Decodes exported files and runs them with a small interpreter written from the ONNX operator
//! definitions (not from nabla's layers), so a wrong wire name, layout, attribute or order fails
//! here without Python. ONNX Runtime itself runs them in `tests/onnx_interop.rs`.

use std::collections::{BTreeMap, HashMap};

use prost::Message;

use super::*;
use crate::data::{Normalization, Normalizer};
use crate::nn::{Activation, Mlp, MlpConfig, Module};
use crate::tensor::Tensor;

/// A dense f64 matrix `[rows, cols]` (row-major) or a vector (`rows = 1`).
#[derive(Clone)]
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f64>,
}

fn decode_initializer(t: &pb::TensorProto) -> Mat {
    assert_eq!(t.data_type, Some(pb::tensor_proto::DataType::Float as i32));
    let raw = t.raw_data.as_ref().expect("raw_data");
    let v: Vec<f64> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    let (rows, cols) = match t.dims.as_slice() {
        [n] => (1, *n as usize),
        [r, c] => (*r as usize, *c as usize),
        d => panic!("unexpected dims {d:?}"),
    };
    assert_eq!(v.len(), rows * cols, "{:?}", t.name);
    Mat { rows, cols, v }
}

/// `a ∘ b` with b broadcast along rows (numpy rules for `[n, d]` with `[d]` or `[1]`).
fn broadcast(a: &Mat, b: &Mat, f: impl Fn(f64, f64) -> f64) -> Mat {
    assert_eq!(b.rows, 1);
    assert!(b.cols == a.cols || b.cols == 1);
    let v = (0..a.v.len())
        .map(|i| f(a.v[i], b.v[if b.cols == 1 { 0 } else { i % a.cols }]))
        .collect();
    Mat { v, ..a.clone() }
}

fn map(a: &Mat, f: impl Fn(f64) -> f64) -> Mat {
    Mat {
        v: a.v.iter().map(|&x| f(x)).collect(),
        ..a.clone()
    }
}

/// Runs the graph on `x` `[n, d]`; returns every graph output by name.
fn run(model: &pb::ModelProto, x: Mat) -> BTreeMap<String, Mat> {
    let graph = model.graph.as_ref().unwrap();
    let mut values: HashMap<String, Mat> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap(), decode_initializer(t)))
        .collect();
    values.insert(graph.input[0].name.clone().unwrap(), x);
    for node in &graph.node {
        let arg = |i: usize| values[&node.input[i]].clone();
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
        };
        let out = match node.op_type.as_deref().unwrap() {
            "Sub" => broadcast(&arg(0), &arg(1), |a, b| a - b),
            "Div" => broadcast(&arg(0), &arg(1), |a, b| a / b),
            "Gemm" => {
                // Y = A·B + C (alpha = beta = 1, no transposes: nabla writes none).
                assert!(node.attribute.is_empty());
                let (a, b, c) = (arg(0), arg(1), arg(2));
                assert_eq!(a.cols, b.rows);
                let mut v = vec![0.0; a.rows * b.cols];
                for i in 0..a.rows {
                    for j in 0..b.cols {
                        let dot: f64 = (0..a.cols)
                            .map(|k| a.v[i * a.cols + k] * b.v[k * b.cols + j])
                            .sum();
                        v[i * b.cols + j] = dot + c.v[j];
                    }
                }
                Mat {
                    rows: a.rows,
                    cols: b.cols,
                    v,
                }
            }
            "Relu" => map(&arg(0), |x| x.max(0.0)),
            "LeakyRelu" => {
                let alpha = attr("alpha").unwrap().f.unwrap() as f64;
                map(&arg(0), |x| if x >= 0.0 { x } else { alpha * x })
            }
            "Sigmoid" => map(&arg(0), |x| 1.0 / (1.0 + (-x).exp())),
            "Tanh" => map(&arg(0), f64::tanh),
            "Softplus" => map(&arg(0), |x| (1.0 + x.exp()).ln()),
            "Gelu" => {
                assert_eq!(
                    attr("approximate").unwrap().s.as_deref(),
                    Some(&b"tanh"[..])
                );
                let c = (2.0 / std::f64::consts::PI).sqrt();
                map(&arg(0), |x| {
                    0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
                })
            }
            "Softmax" => {
                assert_eq!(attr("axis").unwrap().i, Some(-1));
                let a = arg(0);
                let mut v = a.v.clone();
                for row in v.chunks_mut(a.cols) {
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = row.iter().map(|z| (z - m).exp()).sum();
                    row.iter_mut().for_each(|z| *z = (*z - m).exp() / s);
                }
                Mat { v, ..a }
            }
            op => panic!("the interpreter has no {op}"),
        };
        values.insert(node.output[0].clone(), out);
    }
    graph
        .output
        .iter()
        .map(|o| {
            let name = o.name.clone().unwrap();
            (name.clone(), values[&name].clone())
        })
        .collect()
}

fn inputs(n: usize, d: usize) -> (Tensor<f32>, Mat) {
    let x = Tensor::<f32>::randn(&[n, d], 3.0, 2.0, 7).unwrap();
    let v = x.to_vec().unwrap().iter().map(|&a| a as f64).collect();
    (
        x,
        Mat {
            rows: n,
            cols: d,
            v,
        },
    )
}

fn assert_close(name: &str, got: &Mat, want: &[f32], tol: f64) {
    assert_eq!(got.v.len(), want.len(), "{name}");
    for (i, (g, w)) in got.v.iter().zip(want).enumerate() {
        let err = (g - *w as f64).abs();
        assert!(
            err <= tol * (1.0 + g.abs()),
            "{name}[{i}]: onnx {g} vs nabla {w}"
        );
    }
}

#[test]
fn every_activation_and_normaliser_computes_what_nabla_computes() {
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Softplus,
        Activation::Identity,
    ];
    let (x, xm) = inputs(9, 5);
    let normalizers = [
        Normalization::None,
        Normalization::Global,
        Normalization::PerFeature,
    ];
    for (i, &activation) in activations.iter().enumerate() {
        let mode = normalizers[i % 3];
        let mut config = MlpConfig::new(&[5, 7, 6, 4]);
        config.activation = activation;
        config.seed = i as u64;
        let model = Mlp::<f32>::new(&config).unwrap();
        let normalizer = Normalizer::fit(&x, mode).unwrap();
        let options = OnnxOptions {
            normalizer: Some(normalizer.clone()),
            ..Default::default()
        };
        let proto = pb::ModelProto::decode(&onnx_bytes(&model, &options).unwrap()[..]).unwrap();
        let out = run(&proto, xm.clone());
        let logits = model.forward(&normalizer.apply(&x).unwrap()).unwrap();
        let probs = logits.softmax(1).unwrap();
        let what = format!("{activation} with {mode:?}");
        assert_close(&what, &out["logits"], &logits.to_vec().unwrap(), 1e-5);
        assert_close(&what, &out["probabilities"], &probs.to_vec().unwrap(), 1e-6);
        assert_eq!(out.len(), 2);
    }
}

#[test]
fn the_model_header_names_opset_shapes_and_metadata() {
    let model = Mlp::<f32>::new(&MlpConfig::new(&[3, 4, 1])).unwrap();
    let options = OnnxOptions {
        head: OnnxHead::Regression,
        metadata: BTreeMap::from([("dataset".to_string(), "sine".to_string())]),
        ..Default::default()
    };
    let proto = pb::ModelProto::decode(&onnx_bytes(&model, &options).unwrap()[..]).unwrap();
    assert_eq!(proto.ir_version, Some(ONNX_IR_VERSION));
    assert_eq!(proto.opset_import.len(), 1);
    assert_eq!(proto.opset_import[0].version, Some(ONNX_OPSET));
    assert_eq!(proto.opset_import[0].domain.as_deref(), Some(""));
    let graph = proto.graph.as_ref().unwrap();
    let names: Vec<_> = graph
        .output
        .iter()
        .map(|o| o.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["predictions"]);
    let ops: Vec<_> = graph
        .node
        .iter()
        .map(|n| n.op_type.clone().unwrap())
        .collect();
    assert_eq!(ops, ["Gemm", "Relu", "Gemm"]);
    let meta: BTreeMap<_, _> = proto
        .metadata_props
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
        .collect();
    assert_eq!(meta["dataset"], "sine");
    assert_eq!(meta["architecture"], "3-4-1");
    let Some(pb::type_proto::Value::TensorType(t)) = &graph.input[0].r#type.as_ref().unwrap().value
    else {
        panic!("input is not a tensor");
    };
    use pb::tensor_shape_proto::dimension::Value;
    let dims: Vec<_> = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.value.clone())
        .collect();
    assert_eq!(
        dims,
        [
            Some(Value::DimParam("batch".into())),
            Some(Value::DimValue(3))
        ]
    );
}

#[test]
fn a_normaliser_that_does_not_fit_the_model_is_an_error() {
    let model = Mlp::<f32>::new(&MlpConfig::new(&[3, 2])).unwrap();
    let options = OnnxOptions {
        normalizer: Some(Normalizer {
            mode: Normalization::PerFeature,
            mean: vec![0.0; 5],
            std: vec![1.0; 5],
        }),
        ..Default::default()
    };
    let err = onnx_bytes(&model, &options).unwrap_err().to_string();
    assert!(err.contains("5 means") && err.contains("3 inputs"), "{err}");
    let dir = std::env::temp_dir().join("nabla_no_such_dir_for_onnx/x/y.onnx");
    let err = export_onnx(&model, &OnnxOptions::default(), &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nabla_no_such_dir_for_onnx"), "{err}");
}
