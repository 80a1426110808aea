//! The catalogue of gradient checks: at least one case for every [`OpKind`], including
//! broadcasting in both directions. The test suite and `nabla gradcheck` run it, and a test
//! fails if some op kind is not exercised by any case.

use std::sync::Arc;

use super::{gradcheck, gradgradcheck, GradcheckOptions, GradcheckReport};
use crate::autograd::{checkpoint, OpKind, Step};
use crate::error::Result;
use crate::nn::loss::{self, Reduction, Target};
use crate::nn::{Activation, Dropout, Init, Linear, Module, Residual, Sequential};
use crate::rng::Rng;
use crate::tensor::Tensor;

type CaseFn = Box<dyn Fn(&[Tensor<f64>]) -> Result<Tensor<f64>> + Send + Sync>;

/// One gradient-check case: a function of some inputs.
pub struct OpCase {
    /// What is checked, e.g. `add [3,1]+[1,4]`.
    pub name: String,
    /// The inputs at which the gradient is checked.
    pub inputs: Vec<Tensor<f64>>,
    /// The function.
    pub f: CaseFn,
}

/// The result of one case.
pub struct OpCheck {
    /// The case's name.
    pub name: String,
    /// The comparison.
    pub report: GradcheckReport,
    /// The comparison of second derivatives ([`gradgradcheck`]).
    pub second: GradcheckReport,
    /// The op kinds that the case's graph contains.
    pub kinds: Vec<OpKind>,
}

pub(super) fn u(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).expect("internal: small shape")
}

/// Uniform in [−c, c].
pub(super) fn us(shape: &[usize], seed: u64, c: f64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, -c, c, seed).expect("internal: small shape")
}

/// Uniform values with magnitude in [0.1, 1.1]: away from the kink of relu/abs/leaky_relu.
pub(super) fn away_from_zero(shape: &[usize], seed: u64) -> Tensor<f64> {
    let t = u(shape, seed);
    let data = t
        .to_vec()
        .expect("internal: small shape")
        .iter()
        .map(|&v| v.signum() * (0.1 + v.abs()))
        .collect();
    Tensor::from_vec(data, shape).expect("internal: same shape")
}

pub(super) fn positive(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, 0.5, 2.0, seed).expect("internal: small shape")
}

/// Distinct values (a shuffled, spaced ramp): no ties for `max`.
pub(super) fn distinct(shape: &[usize], seed: u64) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
    crate::rng::Rng::new(seed).shuffle(&mut v);
    Tensor::from_vec(v, shape).expect("internal: same shape")
}

pub(super) fn case(
    name: &str,
    inputs: Vec<Tensor<f64>>,
    f: impl Fn(&[Tensor<f64>]) -> Result<Tensor<f64>> + Send + Sync + 'static,
) -> OpCase {
    OpCase {
        name: name.to_string(),
        inputs,
        f: Box::new(f),
    }
}

/// Every gradient-check case of the library's ops.
pub fn op_cases() -> Vec<OpCase> {
    [
        arithmetic_cases(),
        unary_cases(),
        matmul_cases(),
        layout_cases(),
        reduction_cases(),
        view_cases(),
        adjoint_cases(),
        super::image_cases::image_op_cases(),
        super::sequence_cases::sequence_op_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Broadcasting arithmetic (both directions) and scalar arithmetic.
fn arithmetic_cases() -> Vec<OpCase> {
    vec![
        case("add same shape", vec![u(&[3, 4], 1), u(&[3, 4], 2)], |t| {
            t[0].add(&t[1])
        }),
        case("add [3,4]+[4]", vec![u(&[3, 4], 3), u(&[4], 4)], |t| {
            t[0].add(&t[1])
        }),
        case("add [3,1]+[1,4]", vec![u(&[3, 1], 5), u(&[1, 4], 6)], |t| {
            t[0].add(&t[1])
        }),
        case(
            "add [2,3,4]+[3,1]",
            vec![u(&[2, 3, 4], 7), u(&[3, 1], 8)],
            |t| t[0].add(&t[1]),
        ),
        case("add scalar tensor", vec![u(&[], 9), u(&[2, 3], 10)], |t| {
            t[0].add(&t[1])
        }),
        case("sub [3,1]-[4]", vec![u(&[3, 1], 11), u(&[4], 12)], |t| {
            t[0].sub(&t[1])
        }),
        case(
            "mul [2,3]*[2,1]",
            vec![u(&[2, 3], 13), u(&[2, 1], 14)],
            |t| t[0].mul(&t[1]),
        ),
        case("mul x*x (reuse)", vec![u(&[5], 15)], |t| t[0].mul(&t[0])),
        case(
            "div [2,3]/[3]",
            vec![u(&[2, 3], 16), positive(&[3], 17)],
            |t| t[0].div(&t[1]),
        ),
        case(
            "div [1,3]/[2,1]",
            vec![u(&[1, 3], 18), positive(&[2, 1], 19)],
            |t| t[0].div(&t[1]),
        ),
        case("neg", vec![u(&[2, 3], 20)], |t| t[0].neg()),
        case("add_scalar", vec![u(&[2, 3], 21)], |t| t[0].add_scalar(2.5)),
        case("mul_scalar", vec![u(&[2, 3], 22)], |t| {
            t[0].mul_scalar(-1.5)
        }),
        case("pow_scalar 3", vec![u(&[2, 3], 23)], |t| {
            t[0].pow_scalar(3.0)
        }),
        case("pow_scalar 0.5", vec![positive(&[2, 3], 24)], |t| {
            t[0].pow_scalar(0.5)
        }),
        case("pow_scalar -2", vec![positive(&[4], 25)], |t| {
            t[0].pow_scalar(-2.0)
        }),
        case("square", vec![u(&[4], 26)], |t| t[0].square()),
    ]
}

/// Element-wise functions and activations, inputs kept away from kinks.
fn unary_cases() -> Vec<OpCase> {
    vec![
        case("exp", vec![u(&[2, 3], 27)], |t| t[0].exp()),
        case("log", vec![positive(&[2, 3], 28)], |t| t[0].log()),
        case("sqrt", vec![positive(&[2, 3], 29)], |t| t[0].sqrt()),
        case("abs", vec![away_from_zero(&[2, 3], 30)], |t| t[0].abs()),
        case("clamp", vec![away_from_zero(&[3, 4], 31)], |t| {
            t[0].clamp(-0.55, 0.6)
        }),
        case("relu", vec![away_from_zero(&[3, 4], 32)], |t| t[0].relu()),
        case("leaky_relu", vec![away_from_zero(&[3, 4], 33)], |t| {
            t[0].leaky_relu(0.1)
        }),
        case("sigmoid", vec![us(&[3, 4], 34, 8.0)], |t| t[0].sigmoid()),
        case("tanh", vec![us(&[3, 4], 35, 3.0)], |t| t[0].tanh()),
        case("gelu", vec![us(&[3, 4], 36, 3.0)], |t| t[0].gelu()),
        case("softplus", vec![us(&[3, 4], 37, 30.0)], |t| t[0].softplus()),
    ]
}

/// Matrix products: 2-D, transposed, batched, shared right operand.
fn matmul_cases() -> Vec<OpCase> {
    vec![
        case(
            "matmul [3,4]x[4,2]",
            vec![u(&[3, 4], 38), u(&[4, 2], 39)],
            |t| t[0].matmul(&t[1]),
        ),
        case(
            "matmul_t aᵀ·b",
            vec![u(&[4, 3], 40), u(&[4, 2], 41)],
            |t| t[0].matmul_t(&t[1], true, false),
        ),
        case(
            "matmul_t a·bᵀ",
            vec![u(&[3, 4], 42), u(&[2, 4], 43)],
            |t| t[0].matmul_t(&t[1], false, true),
        ),
        case(
            "matmul_t aᵀ·bᵀ",
            vec![u(&[4, 3], 44), u(&[2, 4], 45)],
            |t| t[0].matmul_t(&t[1], true, true),
        ),
        case(
            "matmul batched",
            vec![u(&[2, 3, 4], 46), u(&[2, 4, 2], 47)],
            |t| t[0].matmul(&t[1]),
        ),
        case(
            "matmul batched aᵀ·bᵀ",
            vec![u(&[2, 4, 3], 48), u(&[2, 2, 4], 49)],
            |t| t[0].matmul_t(&t[1], true, true),
        ),
        case(
            "matmul [2,3,4]x[4,2]",
            vec![u(&[2, 3, 4], 50), u(&[4, 2], 51)],
            |t| t[0].matmul(&t[1]),
        ),
        case(
            "matmul [2,3,4]x[2,4]ᵀ",
            vec![u(&[2, 3, 4], 52), u(&[2, 4], 53)],
            |t| t[0].matmul_t(&t[1], false, true),
        ),
        // Two batch axes, the left operand a permuted view (attention heads).
        case(
            "matmul 4-D heads view x bᵀ",
            vec![u(&[2, 3, 2, 4], 152), u(&[2, 2, 5, 4], 153)],
            |t| t[0].permute(&[0, 2, 1, 3])?.matmul_t(&t[1], false, true),
        ),
        case(
            "matmul 4-D aᵀ·b",
            vec![u(&[2, 2, 4, 3], 154), u(&[2, 2, 4, 2], 155)],
            |t| t[0].matmul_t(&t[1], true, false),
        ),
    ]
}

/// Shape and data-movement ops.
fn layout_cases() -> Vec<OpCase> {
    vec![
        case("permute", vec![u(&[2, 3, 4], 54)], |t| {
            t[0].permute(&[2, 0, 1])
        }),
        case("transpose", vec![u(&[3, 4], 55)], |t| t[0].t()),
        case("reshape", vec![u(&[2, 6], 56)], |t| t[0].reshape(&[3, 4])),
        case("broadcast_to [3,1]->[2,3,4]", vec![u(&[3, 1], 57)], |t| {
            t[0].broadcast_to(&[2, 3, 4])
        }),
        case("narrow", vec![u(&[3, 5], 58)], |t| t[0].narrow(1, 1, 3)),
        case(
            "concat",
            vec![u(&[2, 1], 59), u(&[2, 3], 60), u(&[2, 2], 61)],
            |t| Tensor::concat(&[&t[0], &t[1], &t[2]], 1),
        ),
        case("index_select (repeats)", vec![u(&[4, 3], 62)], |t| {
            t[0].index_select(0, &[3, 0, 3, 1])
        }),
        case("gather", vec![u(&[3, 4], 63)], |t| {
            t[0].gather(1, &[1, 3, 0, 0, 2, 2])
        }),
    ]
}

/// Reductions, softmax, fused cross-entropy and composites.
fn reduction_cases() -> Vec<OpCase> {
    vec![
        case("sum [0,2] keepdim", vec![u(&[2, 3, 4], 64)], |t| {
            t[0].sum(&[0, 2], true)
        }),
        case("sum [1]", vec![u(&[2, 3, 4], 65)], |t| {
            t[0].sum(&[1], false)
        }),
        case("sum_all", vec![u(&[2, 3], 66)], |t| t[0].sum_all()),
        case("mean [0]", vec![u(&[4, 3], 67)], |t| t[0].mean(&[0], false)),
        case("max [1]", vec![distinct(&[3, 4], 68)], |t| {
            t[0].max(&[1], false)
        }),
        case("max [0,2] keepdim", vec![distinct(&[2, 3, 4], 69)], |t| {
            t[0].max(&[0, 2], true)
        }),
        case("softmax axis 1", vec![us(&[3, 4], 70, 3.0)], |t| {
            t[0].softmax(1)
        }),
        case("softmax axis 0", vec![u(&[3, 4], 71)], |t| t[0].softmax(0)),
        case("log_softmax axis 1", vec![us(&[3, 4], 72, 3.0)], |t| {
            t[0].log_softmax(1)
        }),
        case("log_softmax 3-D axis 1", vec![u(&[2, 3, 2], 73)], |t| {
            t[0].log_softmax(1)
        }),
        case(
            "linear + squared loss",
            vec![u(&[5, 3], 74), u(&[3, 2], 75), u(&[2], 76)],
            |t| t[0].matmul(&t[1])?.add(&t[2])?.square()?.sum_all(),
        ),
        case("softmax_cross_entropy", vec![us(&[3, 4], 79, 3.0)], |t| {
            let target = Tensor::from_vec(
                vec![0.0, 1.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.0, 0.1, 0.2, 0.3, 0.4],
                &[3, 4],
            )?;
            t[0].softmax_cross_entropy(&target)
        }),
        case("cross-entropy", vec![u(&[4, 3], 77), u(&[3, 5], 78)], |t| {
            let logp = t[0].matmul(&t[1])?.log_softmax(1)?;
            logp.gather(1, &[0, 4, 2, 1])?.mean_all()?.neg()
        }),
    ]
}

/// Views and non-contiguous inputs: every view op, and ops (element-wise, matmul, linear,
/// reductions, softmax, copies) reading transposed, narrowed, permuted or broadcast views.
fn view_cases() -> Vec<OpCase> {
    vec![
        case("contiguous of a transpose", vec![u(&[3, 4], 100)], |t| {
            t[0].t()?.contiguous()
        }),
        case("unsqueeze then squeeze", vec![u(&[3, 4], 101)], |t| {
            t[0].unsqueeze(1)?
                .mul(&u(&[3, 2, 4], 102))?
                .sum(&[1], true)?
                .squeeze(1)
        }),
        case(
            "expand [3,1]->[3,4] times x",
            vec![u(&[3, 1], 103), u(&[3, 4], 104)],
            |t| t[0].expand(&[3, 4])?.mul(&t[1]),
        ),
        case("narrow of a transpose", vec![u(&[4, 5], 105)], |t| {
            t[0].t()?.narrow(1, 1, 2)?.exp()
        }),
        case("permute of a permute", vec![u(&[2, 3, 4], 106)], |t| {
            t[0].permute(&[2, 0, 1])?.permute(&[0, 2, 1])?.tanh()
        }),
        case(
            "mul of transposed views",
            vec![u(&[3, 4], 107), u(&[4, 3], 108)],
            |t| t[0].t()?.mul(&t[1]),
        ),
        case(
            "add broadcast with a narrowed view",
            vec![u(&[3, 6], 109), u(&[1, 3], 110)],
            |t| t[0].narrow(1, 2, 3)?.add(&t[1]),
        ),
        case(
            "matmul of transposed views",
            vec![u(&[4, 3], 111), u(&[2, 4], 112)],
            |t| t[0].t()?.matmul(&t[1].t()?),
        ),
        case(
            "matmul of narrowed views",
            vec![u(&[3, 6], 113), u(&[5, 2], 114)],
            |t| t[0].narrow(1, 1, 4)?.matmul(&t[1].narrow(0, 1, 4)?),
        ),
        case(
            "matmul [3,2,4]ᵖ x [4,2] (permuted batch)",
            vec![u(&[3, 2, 4], 115), u(&[4, 2], 116)],
            |t| t[0].permute(&[1, 0, 2])?.matmul(&t[1]),
        ),
        case(
            "matmul batched of permuted views",
            vec![u(&[3, 2, 4], 117), u(&[2, 3, 2], 118)],
            |t| t[0].permute(&[1, 2, 0])?.matmul(&t[1]),
        ),
        case(
            "linear with a transposed [out, in] weight",
            vec![u(&[5, 3], 119), u(&[2, 3], 120), u(&[2], 121)],
            |t| t[0].linear(&t[1].t()?, &t[2]),
        ),
        case(
            "reshape of a transpose (copy)",
            vec![u(&[3, 4], 122)],
            |t| t[0].t()?.reshape(&[2, 6]),
        ),
        case("sum of a broadcast view", vec![u(&[3, 1], 123)], |t| {
            t[0].broadcast_to(&[2, 3, 4])?.square()?.sum(&[0, 2], false)
        }),
        case("softmax of a transpose", vec![us(&[4, 3], 124, 3.0)], |t| {
            t[0].t()?.softmax(1)
        }),
        case(
            "max of a permuted view",
            vec![distinct(&[3, 4], 125)],
            |t| t[0].t()?.max(&[1], false),
        ),
        case(
            "concat of views",
            vec![u(&[3, 2], 126), u(&[2, 3], 127)],
            |t| Tensor::concat(&[&t[0], &t[1].t()?], 1),
        ),
        case("index_select of a transpose", vec![u(&[4, 3], 128)], |t| {
            t[0].t()?.index_select(1, &[3, 0, 3])
        }),
        case(
            "relu of a narrowed view",
            vec![away_from_zero(&[4, 4], 129)],
            |t| t[0].narrow(0, 1, 2)?.relu(),
        ),
    ]
}

/// The ops backward rules are built from (so that gradients of gradients work), and
/// checkpointed segments (explicit inputs, captured weights, dropout replayed).
fn adjoint_cases() -> Vec<OpCase> {
    let mut cases = Vec::new();
    for (step, tag) in [
        (Step::Relu, "relu"),
        (Step::LeakyRelu(0.1), "leaky_relu"),
        (Step::Clamp(-0.5, 0.5), "clamp"),
        (Step::Sign, "sign"),
    ] {
        cases.push(case(
            &format!("step_mul {tag}"),
            vec![u(&[3, 4], 130), away_from_zero(&[3, 4], 131)],
            move |t| t[0].step_mul(&t[1], step),
        ));
    }
    cases.push(case("index_add with repeats", vec![u(&[3, 2], 132)], |t| {
        t[0].index_add(0, &[2, 0, 2], 4)
    }));
    cases.push(case("scatter_add along 1", vec![u(&[2, 3], 133)], |t| {
        t[0].scatter_add(1, &[0, 2, 2, 1, 0, 1], 4)
    }));
    cases.push(case(
        "checkpoint (explicit inputs)",
        vec![u(&[3, 4], 134), u(&[4, 2], 135)],
        |t| checkpoint(|xs| xs[0].matmul(&xs[1])?.tanh(), &t[..2]),
    ));
    cases.push(case(
        "checkpoint (captured weight, dropout)",
        vec![u(&[3, 4], 136), u(&[4, 2], 137)],
        |t| {
            let w = t[1].clone();
            let drop = Arc::new(Dropout::new(0.5, 7)?);
            checkpoint(
                move |xs| {
                    let h = Activation::Softplus.apply(&xs[0].matmul(&w)?)?;
                    drop.forward(&h)?.mul(&h)
                },
                &t[..1],
            )
        },
    ));
    cases
}

/// Gradient checks of the losses (every reduction) and of the `Linear` layer, as functions of
/// all their differentiable inputs.
pub fn module_cases() -> Vec<OpCase> {
    let mut cases = Vec::new();
    for (red, tag) in [
        (Reduction::Mean, "mean"),
        (Reduction::Sum, "sum"),
        (Reduction::None, "none"),
    ] {
        cases.push(case(
            &format!("loss mse ({tag})"),
            vec![u(&[4, 3], 80), u(&[4, 3], 81)],
            move |t| loss::mse(&t[0], &t[1], red),
        ));
        // residuals kept away from 0 (|x|'s kink) and from ±δ (huber's switch)
        let pred = away_from_zero(&[4, 3], 82);
        let zero = Tensor::zeros(&[4, 3]).expect("internal: small shape");
        cases.push(case(
            &format!("loss l1 ({tag})"),
            vec![pred.clone(), zero.clone()],
            move |t| loss::l1(&t[0], &t[1], red),
        ));
        cases.push(case(
            &format!("loss huber ({tag})"),
            vec![pred.mul_scalar(1.3).expect("internal: small shape"), zero],
            move |t| loss::huber(&t[0], &t[1], 0.77, red),
        ));
        cases.push(case(
            &format!("loss cross_entropy classes ({tag})"),
            vec![u(&[4, 5], 83)],
            move |t| loss::cross_entropy(&t[0], Target::Classes(&[0, 4, 2, 2]), 0.0, red),
        ));
        cases.push(case(
            &format!("loss cross_entropy smoothed ({tag})"),
            vec![us(&[4, 5], 84, 4.0)],
            move |t| loss::cross_entropy(&t[0], Target::Classes(&[1, 3, 0, 4]), 0.1, red),
        ));
        let probs = Tensor::<f64>::rand_uniform(&[3, 4], 0.1, 1.0, 85).expect("small");
        let probs = probs
            .div(&probs.sum(&[1], true).expect("2-D"))
            .expect("same rows");
        cases.push(case(
            &format!("loss cross_entropy probs ({tag})"),
            vec![u(&[3, 4], 86)],
            move |t| loss::cross_entropy(&t[0], Target::Probs(&probs), 0.0, red),
        ));
        cases.push(case(
            &format!("loss bce_with_logits ({tag})"),
            vec![
                us(&[5, 2], 87, 5.0),
                Tensor::rand_uniform(&[5, 2], 0.0, 1.0, 88).expect("small"),
            ],
            move |t| loss::bce_with_logits(&t[0], &t[1], red),
        ));
    }
    let layer = Linear::<f64>::new(3, 4, true, Init::KaimingUniform, &mut Rng::new(89))
        .expect("internal: small layer");
    let (w, b) = (
        layer.weight.detach(),
        layer.bias.clone().expect("has bias").detach(),
    );
    cases.push(case(
        "Linear (input, weight, bias)",
        vec![u(&[5, 3], 90), w, b],
        |t| Linear::from_tensors(t[1].clone(), Some(t[2].clone()))?.forward(&t[0]),
    ));
    cases.push(case(
        "Residual(Linear, tanh) (input, weight, bias)",
        vec![u(&[5, 3], 91), u(&[3, 3], 92), u(&[3], 93)],
        |t| {
            let inner = Sequential::new()
                .with(Linear::from_tensors(t[1].clone(), Some(t[2].clone()))?)
                .with(Activation::Tanh);
            Residual::new(inner).forward(&t[0])
        },
    ));
    cases
}

/// Runs every case of [`op_cases`] and [`module_cases`] with the default tolerances, through
/// [`gradcheck`] and [`gradgradcheck`].
pub fn run_op_gradchecks() -> Result<Vec<OpCheck>> {
    let opts = GradcheckOptions::default();
    op_cases()
        .into_iter()
        .chain(module_cases())
        .chain(super::image_cases::image_module_cases())
        .chain(super::sequence_cases::sequence_module_cases())
        .map(|c| {
            let report = gradcheck(&c.f, &c.inputs, &opts)?;
            let second = gradgradcheck(&c.f, &c.inputs, &opts)?;
            let leaves: Vec<Tensor<f64>> = c
                .inputs
                .iter()
                .map(|t| t.detach().requires_grad())
                .collect();
            let kinds = (c.f)(&leaves)?
                .graph_stats()
                .op_counts
                .into_keys()
                .collect();
            Ok(OpCheck {
                name: c.name,
                report,
                second,
                kinds,
            })
        })
        .collect()
}
