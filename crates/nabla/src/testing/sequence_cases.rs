//! Gradient-check cases of the sequence ops (layer norm, embedding, the softmax of attention
//! scores, scaled dot-product attention) and of their layers, first and second order.

use super::cases::{case, u, us, OpCase};
use crate::ops::{packed_attention, packed_attention_dropped, scaled_dot_product_attention};
use crate::tensor::kernels::counter::Keep;
use crate::tensor::Tensor;

/// Every sequence op, as functions of all their differentiable inputs.
pub(super) fn sequence_op_cases() -> Vec<OpCase> {
    vec![
        case(
            "layer_norm over the last axis (x, weight, bias)",
            vec![us(&[2, 3, 4], 300, 2.0), u(&[4], 301), u(&[4], 302)],
            |t| t[0].layer_norm(&[4], Some(&t[1]), Some(&t[2]), 1e-5),
        ),
        case(
            "layer_norm over two axes, no affine",
            vec![us(&[3, 2, 3], 303, 2.0)],
            |t| t[0].layer_norm(&[2, 3], None, None, 1e-5),
        ),
        case(
            "gelu_backward (g, x)",
            vec![u(&[3, 4], 313), us(&[3, 4], 314, 3.0)],
            |t| t[0].gelu_backward(&t[1]),
        ),
        case(
            "embedding with repeated ids (table)",
            vec![u(&[4, 3], 304)],
            |t| t[0].embedding(&[2, 0, 2, 3, 2]),
        ),
        case(
            "attention_softmax scaled",
            vec![us(&[2, 3, 4], 305, 2.0)],
            |t| t[0].attention_softmax(0.7, false),
        ),
        case(
            "softmax_backward (g, y)",
            vec![u(&[2, 3, 4], 315), us(&[2, 3, 4], 316, 0.5)],
            |t| t[0].softmax_backward(&t[1], 0.7),
        ),
        case(
            "attention_softmax causal, 2 queries over 4 keys",
            vec![us(&[2, 2, 4], 306, 2.0)],
            |t| t[0].attention_softmax(0.7, true),
        ),
        case(
            "scaled_dot_product_attention causal [b, h, t, d] (q, k, v)",
            vec![
                u(&[2, 2, 3, 4], 307),
                u(&[2, 2, 3, 4], 308),
                u(&[2, 2, 3, 2], 309),
            ],
            |t| scaled_dot_product_attention(&t[0], &t[1], &t[2], None, true),
        ),
        case(
            "attention (fused) causal, 3 queries over 5 keys, heads of a permuted view",
            vec![
                us(&[1, 3, 2, 4], 315, 2.0),
                us(&[1, 5, 2, 4], 316, 2.0),
                u(&[1, 5, 2, 3], 317),
            ],
            |t| {
                let h = |x: &Tensor<f64>| x.permute(&[0, 2, 1, 3]);
                scaled_dot_product_attention(&h(&t[0])?, &h(&t[1])?, &h(&t[2])?, None, true)
            },
        ),
        case(
            "attention (fused) not causal, 4 queries over 2 keys",
            vec![
                us(&[2, 4, 3], 318, 2.0),
                us(&[2, 2, 3], 319, 2.0),
                u(&[2, 2, 5], 320),
            ],
            |t| scaled_dot_product_attention(&t[0], &t[1], &t[2], None, false),
        ),
        case(
            "packed_attention causal, 2 heads of width 2 (qkv)",
            vec![us(&[2, 3, 12], 321, 2.0)],
            |t| packed_attention(&t[0], 2, true),
        ),
        case(
            "packed_attention causal, dropout 0.3 in the kernel, two tiles of queries (qkv)",
            vec![us(&[1, 19, 12], 335, 2.0)],
            |t| packed_attention_dropped(&t[0], 2, true, Some(Keep { p: 0.3, seed: 336 })),
        ),
        case(
            "packed_attention not causal, dropout 0.4 in the kernel (qkv)",
            vec![us(&[2, 5, 12], 337, 2.0)],
            |t| packed_attention_dropped(&t[0], 2, false, Some(Keep { p: 0.4, seed: 338 })),
        ),
        case(
            "packed_attention not causal, a transposed view (qkv)",
            vec![us(&[2, 12, 4], 322, 2.0)],
            |t| packed_attention(&t[0].permute(&[0, 2, 1])?, 2, false),
        ),
        case(
            "scaled_dot_product_attention with an additive mask (q, k, v)",
            vec![u(&[2, 3, 4], 310), u(&[2, 5, 4], 311), u(&[2, 5, 3], 312)],
            |t| {
                let mask = Tensor::from_vec(
                    (0..15)
                        .map(|i| if i % 4 == 3 { -1e9 } else { 0.1 * i as f64 })
                        .collect(),
                    &[3, 5],
                )?;
                scaled_dot_product_attention(&t[0], &t[1], &t[2], Some(&mask), false)
            },
        ),
    ]
}

/// The sequence layers, as functions of their input (or, for the GPT, its token table), and
/// a small GPT's cross-entropy loss.
pub fn sequence_module_cases() -> Vec<OpCase> {
    use crate::nn::{
        loss, Gpt, GptConfig, LayerNorm, Module, MultiHeadAttention, TransformerBlock,
    };
    use crate::rng::Rng;
    let config = GptConfig {
        vocab: 5,
        context: 4,
        width: 4,
        depth: 1,
        heads: 2,
        bias: true,
        tied: true,
        dropout: 0.0,
    };
    vec![
        case("LayerNorm (input)", vec![us(&[2, 3, 4], 320, 2.0)], |t| {
            LayerNorm::<f64>::new(4, true, 1e-5)?.forward(&t[0])
        }),
        case(
            "MultiHeadAttention causal (input)",
            vec![u(&[2, 3, 4], 321)],
            |t| {
                MultiHeadAttention::<f64>::new(4, 2, true, true, (0.5, 0.5), &mut Rng::new(322))?
                    .forward(&t[0])
            },
        ),
        case("TransformerBlock (input)", vec![u(&[1, 3, 4], 323)], |t| {
            TransformerBlock::<f64>::new(4, 2, true, true, (0.5, 0.5), &mut Rng::new(324))?
                .forward(&t[0])
        }),
        case(
            "Gpt tied: loss of next tokens (token table)",
            vec![u(&[5, 4], 325)],
            move |t| {
                let mut gpt = Gpt::<f64>::new(config, &mut Rng::new(326))?;
                gpt.tok_emb.weight = t[0].clone();
                let ids = Tensor::from_vec(vec![1.0, 4.0, 4.0, 0.0, 2.0, 3.0], &[2, 3])?;
                let logits = gpt.forward(&ids)?.reshape(&[6, 5])?;
                let target = loss::Target::Classes(&[4, 4, 0, 3, 1, 2]);
                loss::cross_entropy(&logits, target, 0.0, loss::Reduction::Mean)
            },
        ),
        // With dropout in training mode: each evaluation builds the layer from the same seeds,
        // so it draws the same masks.
        case(
            "MultiHeadAttention causal, dropout 0.3 (input)",
            vec![u(&[2, 3, 4], 327)],
            |t| {
                MultiHeadAttention::<f64>::new(4, 2, true, true, (0.5, 0.5), &mut Rng::new(328))?
                    .with_dropout(0.3, 329)?
                    .forward(&t[0])
            },
        ),
        case(
            "TransformerBlock, dropout 0.3 (input)",
            vec![u(&[1, 3, 4], 330)],
            |t| {
                TransformerBlock::<f64>::new(4, 2, true, true, (0.5, 0.5), &mut Rng::new(331))?
                    .with_dropout(0.3, 332)?
                    .forward(&t[0])
            },
        ),
        case(
            "Gpt untied, dropout 0.3: loss of next tokens (token table)",
            vec![u(&[5, 4], 333)],
            move |t| {
                let config = GptConfig {
                    tied: false,
                    dropout: 0.3,
                    ..config
                };
                let mut gpt = Gpt::<f64>::new(config, &mut Rng::new(334))?;
                gpt.tok_emb.weight = t[0].clone();
                let ids = Tensor::from_vec(vec![1.0, 4.0, 4.0, 0.0, 2.0, 3.0], &[2, 3])?;
                let logits = gpt.forward(&ids)?.reshape(&[6, 5])?;
                let target = loss::Target::Classes(&[4, 4, 0, 3, 1, 2]);
                loss::cross_entropy(&logits, target, 0.0, loss::Reduction::Mean)
            },
        ),
    ]
}
