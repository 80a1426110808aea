//! Shape inference of a [`ModelSpec`](crate::nn::ModelSpec)'s layers: each layer's output
//! shape, parameter count and description from its input shape, or an error naming the layer
//! and both shapes. Nothing is allocated.

use crate::error::{Error, Result};
use crate::nn::{Activation, LayerSpec, Module};

/// A layer's output shape, parameter count and description.
pub(crate) type Shaped = (Vec<usize>, usize, String);

fn bad_shape(at: &str, layer: &str, need: &str, input: &[usize]) -> Error {
    Error::shape(
        "ModelSpec",
        format!(
            "{at} ({layer}) takes {need}, but its input is {}",
            fmt_batch(input)
        ),
    )
}

/// `[N, 16, 7, 7]`: a shape with the batch axis written N.
pub(crate) fn fmt_batch(shape: &[usize]) -> String {
    let rest: Vec<String> = shape.iter().skip(1).map(|d| d.to_string()).collect();
    if rest.is_empty() {
        "[N]".into()
    } else {
        format!("[N, {}]", rest.join(", "))
    }
}

fn arg(at: &str, msg: String) -> Error {
    Error::arg("ModelSpec", format!("{at}: {msg}"))
}

/// `(in + 2p − d(k−1) − 1) / s + 1`, or `None` when the window does not fit.
fn out_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = len.checked_add(p.checked_mul(2)?)?;
    Some(padded.checked_sub(span)? / s + 1)
}

fn fmt_pair(p: (usize, usize)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        format!("{}×{}", p.0, p.1)
    }
}

/// A layer's output shape, parameter count and description for `input` (`at` names it).
pub(crate) fn infer(l: &LayerSpec, input: &[usize], at: &str) -> Result<Shaped> {
    match l {
        LayerSpec::Linear { out_features, bias } => linear(*out_features, *bias, input, at),
        LayerSpec::Conv2d {
            out_channels,
            kernel_size: k,
            stride: s,
            padding: p,
            dilation: d,
            groups,
            bias,
        } => {
            let mut opts = format!("{}×{}", k.0, k.1);
            for (name, v, default) in [("stride", s, (1, 1)), ("padding", p, (0, 0))] {
                if *v != default {
                    opts += &format!(", {name} {}", fmt_pair(*v));
                }
            }
            if *d != (1, 1) {
                opts += &format!(", dilation {}", fmt_pair(*d));
            }
            if *groups != 1 {
                opts += &format!(", groups {groups}");
            }
            let conv = Conv {
                kind: "Conv2d",
                out: *out_channels,
                groups: *groups,
                bias: *bias,
                axes: vec![(k.0, s.0, p.0, d.0), (k.1, s.1, p.1, d.1)],
            };
            conv.infer(&opts, input, at)
        }
        LayerSpec::Conv1d {
            out_channels,
            kernel_size: k,
            stride: s,
            padding: p,
            dilation: d,
            groups,
            bias,
        } => {
            let conv = Conv {
                kind: "Conv1d",
                out: *out_channels,
                groups: *groups,
                bias: *bias,
                axes: vec![(*k, *s, *p, *d)],
            };
            conv.infer(&format!("{k}, stride {s}, padding {p}"), input, at)
        }
        LayerSpec::MaxPool2d {
            kernel_size,
            stride,
            padding,
        } => pool("MaxPool2d", *kernel_size, *stride, *padding, input, at),
        LayerSpec::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => pool("AvgPool2d", *kernel_size, *stride, *padding, input, at),
        LayerSpec::BatchNorm1d { momentum, eps } => norm(false, *momentum, *eps, input, at),
        LayerSpec::BatchNorm2d { momentum, eps } => norm(true, *momentum, *eps, input, at),
        LayerSpec::Flatten => Ok((
            vec![input[0], input[1..].iter().product()],
            0,
            "Flatten".into(),
        )),
        LayerSpec::Dropout { p } => {
            if !(0.0..1.0).contains(p) {
                return Err(arg(at, format!("dropout probability {p} is not in [0, 1)")));
            }
            Ok((input.to_vec(), 0, format!("Dropout(p={p})")))
        }
        LayerSpec::Embedding {
            num_embeddings: v,
            embedding_dim: c,
        } => {
            let layer = format!("Embedding({v} × {c})");
            if *v == 0 || *c == 0 {
                return Err(arg(at, format!("{layer}: both sizes must be > 0")));
            }
            Ok(([input, &[*c]].concat(), v.saturating_mul(*c), layer))
        }
        LayerSpec::LayerNorm { eps, bias } => {
            let c = input[input.len() - 1];
            let layer = format!("LayerNorm({c})");
            if input.len() < 2 || !(*eps >= 0.0 && eps.is_finite()) {
                return Err(arg(
                    at,
                    format!("{layer}: eps {eps} must be finite and ≥ 0"),
                ));
            }
            Ok((input.to_vec(), c * (1 + usize::from(*bias)), layer))
        }
        LayerSpec::MultiHeadAttention {
            heads,
            causal,
            bias,
            dropout,
        } => attention((*heads, *causal, *bias, *dropout), false, input, at),
        LayerSpec::TransformerBlock {
            heads,
            causal,
            bias,
            dropout,
        } => attention((*heads, *causal, *bias, *dropout), true, input, at),
        LayerSpec::Gpt { .. } => {
            let g = l.gpt_config().expect("internal: a Gpt layer");
            let layer = format!(
                "Gpt(vocab {}, context {}, width {}, {}×{} heads{}{})",
                g.vocab,
                g.context,
                g.width,
                g.depth,
                g.heads,
                if g.tied { ", tied" } else { "" },
                crate::nn::transformer::dropout_text(g.dropout)
            );
            g.validate().map_err(|e| arg(at, e.to_string()))?;
            match input {
                [n, t] if *t <= g.context => {
                    Ok((vec![*n, *t, g.vocab], g.parameter_count(), layer))
                }
                _ => Err(bad_shape(
                    at,
                    &layer,
                    &format!("token ids [N, T] with T ≤ {}", g.context),
                    input,
                )),
            }
        }
        LayerSpec::Residual { layers } => container(layers, true, input, at),
        LayerSpec::Sequential { layers } => container(layers, false, input, at),
        other => {
            let a = other.as_activation()?;
            Ok((input.to_vec(), 0, Module::<f32>::describe(&a)))
        }
    }
}

fn linear(out_features: usize, bias: bool, input: &[usize], at: &str) -> Result<Shaped> {
    let rank = input.len();
    if rank < 2 {
        let l = format!("Linear(? → {out_features})");
        return Err(bad_shape(at, &l, "[N, …, features]", input));
    }
    let f = input[rank - 1];
    let layer = format!("Linear({f} → {out_features})");
    if out_features == 0 {
        return Err(arg(at, "a linear layer needs out_features ≥ 1".into()));
    }
    if rank > 3 {
        let need = "[N, features] or [N, T, features] (add a flatten layer before it)";
        return Err(bad_shape(at, &layer, need, input));
    }
    let params = f
        .saturating_mul(out_features)
        .saturating_add(if bias { out_features } else { 0 });
    let mut out = input.to_vec();
    out[rank - 1] = out_features;
    Ok((out, params, layer))
}

/// A convolution over `axes.len()` spatial axes, each `(kernel, stride, padding, dilation)`.
struct Conv {
    kind: &'static str,
    out: usize,
    groups: usize,
    bias: bool,
    axes: Vec<(usize, usize, usize, usize)>,
}

impl Conv {
    /// `opts` describes the kernel and options, e.g. `3×3, padding 1`.
    fn infer(&self, opts: &str, input: &[usize], at: &str) -> Result<Shaped> {
        let two = self.axes.len() == 2;
        let fits = input.len() == 2 + self.axes.len();
        let c = if fits { input[1] } else { 0 };
        let shown = if fits { c.to_string() } else { "?".into() };
        let layer = format!("{}({shown} → {}, {opts})", self.kind, self.out);
        if !fits {
            let need = if two { "[N, C, H, W]" } else { "[N, C, L]" };
            return Err(bad_shape(at, &layer, need, input));
        }
        let g = self.groups;
        let positive = self.axes.iter().flat_map(|&(k, s, _, d)| [k, s, d]);
        if g == 0
            || self.out == 0
            || !c.is_multiple_of(g)
            || !self.out.is_multiple_of(g)
            || positive.clone().any(|v| v == 0)
        {
            return Err(arg(
                at,
                format!(
                    "{c} → {} channels in {g} groups: channels must be positive and divisible \
                     by the groups, kernel, stride and dilation positive",
                    self.out
                ),
            ));
        }
        let mut out = vec![input[0], self.out];
        for (&len, &(k, s, p, d)) in input[2..].iter().zip(&self.axes) {
            let Some(o) = out_len(len, k, s, p, d) else {
                let need = if two {
                    "an image at least as large as its kernel (with padding)"
                } else {
                    "a sequence at least as long as its kernel (with padding)"
                };
                return Err(bad_shape(at, &layer, need, input));
            };
            out.push(o);
        }
        let taps: usize = self.axes.iter().map(|a| a.0).product();
        let params = (c / g)
            .saturating_mul(taps)
            .saturating_mul(self.out)
            .saturating_add(if self.bias { self.out } else { 0 });
        Ok((out, params, layer))
    }
}

fn pool(
    kind: &str,
    k: (usize, usize),
    stride: Option<(usize, usize)>,
    p: (usize, usize),
    input: &[usize],
    at: &str,
) -> Result<Shaped> {
    let s = stride.unwrap_or(k);
    let mut layer = format!("{kind}({}×{}", k.0, k.1);
    if s != k {
        layer += &format!(", stride {}", fmt_pair(s));
    }
    if p != (0, 0) {
        layer += &format!(", padding {}", fmt_pair(p));
    }
    layer += ")";
    if input.len() != 4 {
        return Err(bad_shape(at, &layer, "[N, C, H, W]", input));
    }
    if k.0 == 0 || k.1 == 0 || s.0 == 0 || s.1 == 0 || 2 * p.0 > k.0 || 2 * p.1 > k.1 {
        return Err(arg(
            at,
            format!("{layer}: the window and stride must be positive and the padding at most half the window"),
        ));
    }
    match (
        out_len(input[2], k.0, s.0, p.0, 1),
        out_len(input[3], k.1, s.1, p.1, 1),
    ) {
        (Some(h), Some(w)) => Ok((vec![input[0], input[1], h, w], 0, layer)),
        _ => Err(bad_shape(
            at,
            &layer,
            "an image at least as large as its window",
            input,
        )),
    }
}

fn norm(two: bool, momentum: f64, eps: f64, input: &[usize], at: &str) -> Result<Shaped> {
    let c = input.get(1).copied().unwrap_or(0);
    let layer = format!("BatchNorm{}({c})", if two { "2d" } else { "1d" });
    let rank = input.len();
    let ok = if two {
        rank == 4
    } else {
        rank == 2 || rank == 3
    };
    if !ok {
        let need = if two {
            "[N, C, H, W]"
        } else {
            "[N, C] or [N, C, L]"
        };
        return Err(bad_shape(at, &layer, need, input));
    }
    if !((0.0..=1.0).contains(&momentum) && eps >= 0.0 && eps.is_finite()) {
        return Err(arg(
            at,
            format!("{layer}: momentum {momentum} must be in [0, 1] and eps {eps} finite and ≥ 0"),
        ));
    }
    Ok((input.to_vec(), 2 * c, layer))
}

/// Multi-head attention, or (`block`) a whole pre-LN transformer block, over `[N, T, C]`.
fn attention(
    (heads, causal, bias, dropout): (usize, bool, bool, f64),
    block: bool,
    input: &[usize],
    at: &str,
) -> Result<Shaped> {
    let c = input[input.len() - 1];
    let kind = if block {
        "TransformerBlock"
    } else {
        "MultiHeadAttention"
    };
    let layer = format!(
        "{kind}({c}, {heads} heads{}{})",
        if causal { ", causal" } else { "" },
        crate::nn::transformer::dropout_text(dropout)
    );
    if !(0.0..1.0).contains(&dropout) {
        return Err(arg(
            at,
            format!("{layer}: dropout {dropout} is not in [0, 1)"),
        ));
    }
    if input.len() != 3 {
        return Err(bad_shape(at, &layer, "[N, T, C]", input));
    }
    if heads == 0 || !c.is_multiple_of(heads) {
        return Err(arg(
            at,
            format!("{layer}: the width {c} must be a multiple of the heads"),
        ));
    }
    let b = usize::from(bias);
    let attn = 4 * c * c + 4 * c * b;
    let params = if block {
        attn + 2 * c * (1 + b) + 8 * c * c + 5 * c * b
    } else {
        attn
    };
    Ok((input.to_vec(), params, layer))
}

fn container(layers: &[LayerSpec], residual: bool, input: &[usize], at: &str) -> Result<Shaped> {
    let mut shape = input.to_vec();
    let mut params = 0usize;
    let mut parts = Vec::new();
    for (i, inner) in layers.iter().enumerate() {
        let (out, p, d) = infer(inner, &shape, &format!("{at}.{i}"))?;
        shape = out;
        params = params.saturating_add(p);
        parts.push(d);
    }
    if residual && shape != input {
        return Err(Error::shape(
            "ModelSpec",
            format!(
                "{at} (Residual): its body maps {} to {}; x + body(x) needs the same shape",
                fmt_batch(input),
                fmt_batch(&shape)
            ),
        ));
    }
    let name = if residual { "Residual" } else { "Sequential" };
    Ok((shape, params, format!("{name}({})", parts.join(", "))))
}

/// The activation of a layer that must be one (every kind the walks do not handle).
pub(crate) fn activation_of(l: &LayerSpec) -> Result<Activation> {
    l.activation().ok_or_else(|| {
        Error::arg(
            "ModelSpec",
            format!("internal: {l:?} reached a walk that handles only activations here"),
        )
    })
}
