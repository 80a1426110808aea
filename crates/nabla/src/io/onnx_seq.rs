//! The sequence layers in an ONNX graph (a child of `onnx.rs`, sharing its graph builder):
//! `Embedding` and the `Gpt`'s token and position embeddings as `Gather`/`Slice`,
//! `LayerNorm` as `LayerNormalization`, attention written out as the ops it is — `MatMul`
//! for the projections and the two products, `Reshape`/`Transpose`/`Gather` to split the
//! packed queries, keys and values into heads, `Mul` by `1/√d`, the causal mask added as
//! `−∞` above the diagonal (`Trilu` of a `ConstantOfShape` the size of the scores, so the
//! graph takes any number of positions up to the model's context), and `Softmax` —
//! and the pre-LN `TransformerBlock` (`Gelu` with `approximate="tanh"`, as nabla's GELU).
//! Token models take `input` as int64 ids `[batch, positions]`.

use std::collections::BTreeMap;

use super::{attr_float, attr_int, attr_ints, pb, Builder};
use crate::error::{Error, Result};
use crate::nn::LayerSpec;
use crate::tensor::Tensor;

type State = BTreeMap<String, Tensor<f32>>;

/// An attention layer's (or a block's) settings: `heads` heads over `width`, causal or not,
/// with biases or not.
#[derive(Clone, Copy)]
struct Attn {
    width: usize,
    heads: usize,
    causal: bool,
    bias: bool,
}

/// Whether a network whose layers are `layers` takes token ids: the first layer that computes
/// anything (past identities, dropout and empty containers; inside containers too) is an
/// embedding or a GPT.
pub(super) fn takes_ids(layers: &[LayerSpec]) -> bool {
    first_effective(layers)
        .is_some_and(|l| matches!(l, LayerSpec::Embedding { .. } | LayerSpec::Gpt { .. }))
}

/// The first layer of `layers` that computes something (see [`takes_ids`]).
fn first_effective(layers: &[LayerSpec]) -> Option<&LayerSpec> {
    layers.iter().find_map(|l| match l {
        LayerSpec::Identity | LayerSpec::Dropout { .. } => None,
        LayerSpec::Sequential { layers } => first_effective(layers),
        other => Some(other),
    })
}

/// A 1-D (or, with `scalar`, 0-D) int64 initializer.
fn int64s(name: &str, values: &[i64], scalar: bool) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: if scalar {
            vec![]
        } else {
            vec![values.len() as i64]
        },
        data_type: Some(pb::tensor_proto::DataType::Int64 as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

impl Builder {
    /// An int64 constant named `name`, added once however often it is asked for.
    fn int_constant(&mut self, name: &str, values: &[i64], scalar: bool) -> String {
        if !self
            .initializers
            .iter()
            .any(|t| t.name.as_deref() == Some(name))
        {
            self.initializers.push(int64s(name, values, scalar));
        }
        name.to_string()
    }

    /// `op(inputs) -> out`, and `out` (now the last value).
    fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: &str,
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        self.node_from(op, inputs, out, attrs);
        out.to_string()
    }

    /// A parameter's initializer, added once (a tied head reads the token table again).
    fn param(&mut self, state: &State, name: &str) -> Result<String> {
        if self
            .initializers
            .iter()
            .any(|t| t.name.as_deref() == Some(name))
        {
            return Ok(name.to_string());
        }
        self.state(state, name)
    }

    /// The additive causal mask for `scores` `[.., t, s]` (named `name`): 0 on and below the
    /// diagonal, −∞ above, `[t, s]`, sized from the scores themselves.
    fn causal_mask(&mut self, scores: &str, name: &str) -> String {
        let attrs = vec![attr_int("start", -2)];
        let square = self.op("Shape", &[scores], &format!("{name}.shape"), attrs);
        let fill = pb::AttributeProto {
            name: Some("value".into()),
            r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
            t: Some(super::initializer("", &[1], &[f32::NEG_INFINITY])),
            ..Default::default()
        };
        let full = self.op(
            "ConstantOfShape",
            &[&square],
            &format!("{name}.full"),
            vec![fill],
        );
        let one = self.int_constant("one", &[1], true);
        self.op("Trilu", &[&full, &one], name, vec![attr_int("upper", 1)])
    }

    /// `ids` as int64: the graph's input is already where it holds ids; another value is
    /// cast.
    fn ids(&mut self, name: &str) -> String {
        if self.last == "input" && self.ids_input {
            return self.last.clone();
        }
        let last = self.last.clone();
        let to = attr_int("to", pb::tensor_proto::DataType::Int64 as i64);
        self.op("Cast", &[&last], &format!("{name}.ids"), vec![to])
    }

    /// `x·W (+ b)` of the linear layer `name` on the last value.
    fn linear_of(&mut self, state: &State, name: &str, bias: bool, out: &str) -> Result<String> {
        let w = self.param(state, &format!("{name}.weight"))?;
        if bias {
            let b = self.param(state, &format!("{name}.bias"))?;
            self.node("MatMul", &[&w], &format!("{name}.matmul"), vec![]);
            self.node("Add", &[&b], out, vec![]);
        } else {
            self.node("MatMul", &[&w], out, vec![]);
        }
        Ok(out.to_string())
    }

    /// Layer normalisation `name` over the last axis of the last value.
    fn layer_norm(
        &mut self,
        state: &State,
        name: &str,
        eps: f64,
        bias: bool,
        out: &str,
    ) -> Result<String> {
        let w = self.param(state, &format!("{name}.weight"))?;
        let mut inputs = vec![self.last.clone(), w];
        if bias {
            inputs.push(self.param(state, &format!("{name}.bias"))?);
        }
        let attrs = vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)];
        self.node_from("LayerNormalization", inputs, out, attrs);
        Ok(out.to_string())
    }

    /// Multi-head self-attention `name` (`qkv` and `proj` projections) of the last value
    /// `[batch, positions, width]`.
    fn attention(&mut self, state: &State, name: &str, a: Attn, out: &str) -> Result<String> {
        let Attn {
            width,
            heads,
            causal,
            bias,
        } = a;
        let d = width / heads;
        let qkv = self.linear_of(
            state,
            &format!("{name}.qkv"),
            bias,
            &format!("{name}.qkv.out"),
        )?;
        let dims = [0, 0, 3, heads as i64, d as i64];
        let split = self.int_constant(&format!("{name}.split_shape"), &dims, false);
        let five = self.op(
            "Reshape",
            &[&qkv, &split],
            &format!("{name}.qkv.heads"),
            vec![],
        );
        let perm = vec![attr_ints("perm", vec![2, 0, 3, 1, 4])];
        let parts = self.op("Transpose", &[&five], &format!("{name}.qkv.parts"), perm);
        let mut qkv_heads = Vec::new();
        for (i, which) in ["q", "k", "v"].iter().enumerate() {
            let index = self.int_constant(&format!("index{i}"), &[i as i64], true);
            let out = format!("{name}.{which}");
            qkv_heads.push(self.op("Gather", &[&parts, &index], &out, vec![attr_int("axis", 0)]));
        }
        let perm = vec![attr_ints("perm", vec![0, 1, 3, 2])];
        let kt = self.op("Transpose", &[&qkv_heads[1]], &format!("{name}.kt"), perm);
        let scores = self.op(
            "MatMul",
            &[&qkv_heads[0], &kt],
            &format!("{name}.qk"),
            vec![],
        );
        let scale = format!("{name}.scale");
        self.constant(&scale, &[1], &[(1.0 / (d as f64).sqrt()) as f32]);
        let mut scores = self.op("Mul", &[&scores, &scale], &format!("{name}.scores"), vec![]);
        if causal {
            let mask = self.causal_mask(&scores, &format!("{name}.mask"));
            scores = self.op("Add", &[&scores, &mask], &format!("{name}.masked"), vec![]);
        }
        let axis = vec![attr_int("axis", -1)];
        let p = self.op(
            "Softmax",
            &[&scores],
            &format!("{name}.probabilities"),
            axis,
        );
        let y = self.op(
            "MatMul",
            &[&p, &qkv_heads[2]],
            &format!("{name}.heads"),
            vec![],
        );
        let perm = vec![attr_ints("perm", vec![0, 2, 1, 3])];
        let y = self.op("Transpose", &[&y], &format!("{name}.positions_first"), perm);
        let merge = self.int_constant(&format!("{name}.merge_shape"), &[0, 0, width as i64], false);
        self.op("Reshape", &[&y, &merge], &format!("{name}.merged"), vec![]);
        self.linear_of(state, &format!("{name}.proj"), bias, out)
    }

    /// The pre-LN transformer block `name` on the last value `[batch, positions, width]`.
    fn block(&mut self, state: &State, name: &str, a: Attn, out: &str) -> Result<String> {
        let bias = a.bias;
        let x = self.last.clone();
        self.layer_norm(
            state,
            &format!("{name}.ln1"),
            1e-5,
            bias,
            &format!("{name}.ln1.out"),
        )?;
        let a = self.attention(
            state,
            &format!("{name}.attn"),
            a,
            &format!("{name}.attn.out"),
        )?;
        let x = self.op("Add", &[&x, &a], &format!("{name}.after_attn"), vec![]);
        self.layer_norm(
            state,
            &format!("{name}.ln2"),
            1e-5,
            bias,
            &format!("{name}.ln2.out"),
        )?;
        self.linear_of(
            state,
            &format!("{name}.mlp.fc"),
            bias,
            &format!("{name}.mlp.fc.out"),
        )?;
        let tanh = vec![super::attr_string("approximate", "tanh")];
        self.node("Gelu", &[], &format!("{name}.mlp.gelu"), tanh);
        let m = self.linear_of(
            state,
            &format!("{name}.mlp.proj"),
            bias,
            &format!("{name}.mlp.out"),
        )?;
        Ok(self.op("Add", &[&x, &m], out, vec![]))
    }

    /// The nodes of one sequence layer `l` (named `name`, input shape `shape`), ending in
    /// `out`.
    pub(super) fn sequence_layer(
        &mut self,
        l: &LayerSpec,
        name: &str,
        out: &str,
        shape: &[usize],
        state: &State,
    ) -> Result<()> {
        let width = shape.last().copied().unwrap_or(0);
        match *l {
            LayerSpec::Embedding { .. } => {
                let ids = self.ids(name);
                let w = self.param(state, &format!("{name}.weight"))?;
                self.op("Gather", &[&w, &ids], out, vec![attr_int("axis", 0)]);
            }
            LayerSpec::LayerNorm { eps, bias } => {
                self.layer_norm(state, name, eps, bias, out)?;
            }
            // Dropout is training-only: the graph is inference.
            LayerSpec::MultiHeadAttention {
                heads,
                causal,
                bias,
                ..
            }
            | LayerSpec::TransformerBlock {
                heads,
                causal,
                bias,
                ..
            } => {
                let a = Attn {
                    width,
                    heads,
                    causal,
                    bias,
                };
                if matches!(l, LayerSpec::MultiHeadAttention { .. }) {
                    self.attention(state, name, a, out)?;
                } else {
                    self.block(state, name, a, out)?;
                }
            }
            LayerSpec::Gpt {
                width,
                depth,
                heads,
                bias,
                tied,
                ..
            } => {
                let ids = self.ids(name);
                let table = self.param(state, &format!("{name}.tok_emb.weight"))?;
                let axis0 = || vec![attr_int("axis", 0)];
                let tok = self.op(
                    "Gather",
                    &[&table, &ids],
                    &format!("{name}.tokens"),
                    axis0(),
                );
                let t = self.op(
                    "Shape",
                    &[&ids],
                    &format!("{name}.positions"),
                    vec![attr_int("start", 1), attr_int("end", 2)],
                );
                let zero = self.int_constant("zero", &[0], false);
                let pos_table = self.param(state, &format!("{name}.pos_emb.weight"))?;
                let pos_out = format!("{name}.position_vectors");
                let pos = self.op("Slice", &[&pos_table, &zero, &t, &zero], &pos_out, vec![]);
                self.op("Add", &[&tok, &pos], &format!("{name}.embedded"), vec![]);
                for i in 0..depth {
                    let b = format!("{name}.blocks.{i}");
                    let a = Attn {
                        width,
                        heads,
                        causal: true,
                        bias,
                    };
                    self.block(state, &b, a, &format!("{b}.out"))?;
                }
                self.layer_norm(
                    state,
                    &format!("{name}.ln_f"),
                    1e-5,
                    bias,
                    &format!("{name}.ln_f.out"),
                )?;
                if tied {
                    let perm = vec![attr_ints("perm", vec![1, 0])];
                    let head =
                        self.op("Transpose", &[&table], &format!("{name}.head.weight"), perm);
                    let h = format!("{name}.ln_f.out");
                    self.op("MatMul", &[&h, &head], out, vec![]);
                } else {
                    self.linear_of(state, &format!("{name}.head"), bias, out)?;
                }
            }
            ref other => {
                return Err(Error::arg(
                    "export_onnx",
                    format!("{name}: {other:?} is not a sequence layer"),
                ))
            }
        }
        Ok(())
    }
}
