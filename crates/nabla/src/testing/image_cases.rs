//! Gradient-check cases of the image ops (convolutions, pooling, batch normalisation) and of
//! their layers, first and second order: stride, padding, dilation, groups, overlapping
//! windows, batch normalisation in both modes, and the convolution's two adjoint ops.

use super::cases::{case, distinct, u, OpCase};
use crate::nn::{AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, Module};
use crate::ops::{Conv1dOptions, Conv2dOptions, PoolOptions};
use crate::tensor::kernels::conv::ConvGeom;
use crate::tensor::Tensor;

fn conv(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dOptions {
    Conv2dOptions {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// Every image op, as functions of all their differentiable inputs.
pub(super) fn image_op_cases() -> Vec<OpCase> {
    let plain = Conv2dOptions::default();
    let mixed = conv((2, 1), (1, 2), (1, 2), 2);
    let mut cases = vec![
        case(
            "conv2d 3x3 pad 1 (x, w, b)",
            vec![u(&[2, 2, 4, 4], 200), u(&[3, 2, 3, 3], 201), u(&[3], 202)],
            |t| t[0].conv2d(&t[1], Some(&t[2]), conv((1, 1), (1, 1), (1, 1), 1)),
        ),
        case(
            "conv2d stride 2, dilation, groups 2, padding",
            vec![u(&[1, 4, 5, 6], 203), u(&[4, 2, 2, 3], 204)],
            move |t| t[0].conv2d(&t[1], None, mixed),
        ),
        case(
            "conv2d 1x1 (direct)",
            vec![u(&[2, 3, 2, 3], 205), u(&[2, 3, 1, 1], 206)],
            move |t| t[0].conv2d(&t[1], None, plain),
        ),
        case(
            "conv2d depthwise stride 2",
            vec![u(&[1, 3, 5, 5], 207), u(&[3, 1, 3, 3], 208)],
            |t| t[0].conv2d(&t[1], None, conv((2, 2), (1, 1), (1, 1), 3)),
        ),
        case(
            "conv1d stride 2 pad 1 (x, w, b)",
            vec![u(&[2, 2, 7], 209), u(&[3, 2, 3], 210), u(&[3], 211)],
            |t| {
                let o = Conv1dOptions {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                };
                t[0].conv1d(&t[1], Some(&t[2]), o)
            },
        ),
    ];
    // The adjoint ops on their own (they are what conv2d's gradient records).
    for (name, o) in [("plain", conv((1, 1), (1, 1), (1, 1), 1)), ("mixed", mixed)] {
        let w = [4, 4 / o.groups, 2, 3];
        let geom = ConvGeom::new("case", &[2, 4, 5, 6], &w, o).expect("internal: valid");
        let out = geom.out_shape().to_vec();
        cases.push(case(
            &format!("conv2d_input {name} (g, w)"),
            vec![u(&out, 212), u(&w, 213)],
            move |t| t[0].conv2d_input(&t[1], o, (5, 6)),
        ));
        cases.push(case(
            &format!("conv2d_weight {name} (x, g)"),
            vec![u(&[2, 4, 5, 6], 214), u(&out, 215)],
            move |t| t[0].conv2d_weight(&t[1], o, (2, 3)),
        ));
    }
    let overlapping = PoolOptions {
        kernel: (3, 3),
        stride: (2, 2),
        padding: (1, 1),
    };
    cases.extend([
        case(
            "max_pool2d 3x3 stride 2 pad 1 (overlapping)",
            vec![distinct(&[2, 2, 5, 5], 216)],
            |t| t[0].max_pool2d((3, 3), (2, 2), (1, 1)),
        ),
        case("max_pool2d 2x2", vec![distinct(&[1, 2, 4, 6], 217)], |t| {
            t[0].max_pool2d((2, 2), (2, 2), (0, 0))
        }),
        case(
            "avg_pool2d 3x3 stride 2 pad 1 (overlapping)",
            vec![u(&[2, 2, 5, 5], 218)],
            |t| t[0].avg_pool2d((3, 3), (2, 2), (1, 1)),
        ),
        case(
            "avg_pool2d_adjoint",
            vec![u(&[2, 2, 3, 3], 219)],
            move |t| t[0].avg_pool2d_adjoint(overlapping, (5, 5)),
        ),
        case(
            "adaptive_avg_pool2d (1, 1)",
            vec![u(&[2, 3, 3, 2], 220)],
            |t| t[0].adaptive_avg_pool2d((1, 1)),
        ),
        case("flatten(1)", vec![u(&[2, 3, 2, 2], 221)], |t| {
            t[0].flatten(1)?.tanh()
        }),
        case(
            "batch_norm training 4-D (x, weight, bias)",
            vec![u(&[3, 2, 2, 3], 222), u(&[2], 223), u(&[2], 224)],
            |t| t[0].batch_norm(None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5),
        ),
        case(
            "batch_norm training 2-D, running stats (x, weight, bias)",
            vec![u(&[4, 3], 225), u(&[3], 226), u(&[3], 227)],
            |t| {
                let (rm, rv) = (Tensor::zeros(&[3])?, Tensor::ones(&[3])?);
                t[0].batch_norm(
                    Some(&rm),
                    Some(&rv),
                    Some(&t[1]),
                    Some(&t[2]),
                    true,
                    0.1,
                    1e-5,
                )
            },
        ),
        case(
            "batch_norm evaluation (x, weight, bias)",
            vec![u(&[2, 3, 2, 2], 228), u(&[3], 229), u(&[3], 230)],
            |t| {
                let rm = Tensor::from_vec(vec![0.1, -0.2, 0.3], &[3])?;
                let rv = Tensor::from_vec(vec![0.5, 1.5, 2.0], &[3])?;
                t[0].batch_norm(
                    Some(&rm),
                    Some(&rv),
                    Some(&t[1]),
                    Some(&t[2]),
                    false,
                    0.1,
                    1e-5,
                )
            },
        ),
    ]);
    cases
}

/// The image layers, as functions of their input and parameters, and a small CNN.
pub fn image_module_cases() -> Vec<OpCase> {
    vec![
        case(
            "Conv2d (input, weight, bias)",
            vec![u(&[2, 2, 4, 4], 240), u(&[3, 2, 3, 3], 241), u(&[3], 242)],
            |t| {
                let o = conv((1, 1), (1, 1), (1, 1), 1);
                Conv2d::from_tensors(t[1].clone(), Some(t[2].clone()), o)?.forward(&t[0])
            },
        ),
        case(
            "BatchNorm2d training (input)",
            vec![u(&[2, 3, 2, 2], 243)],
            |t| BatchNorm2d::<f64>::new(3)?.forward(&t[0]),
        ),
        case(
            "BatchNorm1d evaluation after a training step (input)",
            vec![u(&[4, 3], 246)],
            |t| {
                let mut bn = BatchNorm1d::<f64>::new(3)?;
                bn.forward(&u(&[5, 3], 247))?;
                bn.set_training(false);
                bn.forward(&t[0])
            },
        ),
        case(
            "small CNN: Conv2d, BatchNorm2d, relu, MaxPool2d, AvgPool2d, Flatten (input)",
            vec![u(&[2, 1, 6, 6], 248)],
            |t| {
                let w = u(&[2, 1, 3, 3], 249);
                let conv1 = Conv2d::from_tensors(w, None, conv((1, 1), (1, 1), (1, 1), 1))?;
                let h = conv1.forward(&t[0])?;
                let h = BatchNorm2d::<f64>::new(2)?.forward(&h)?.softplus()?;
                let h = MaxPool2d::new((2, 2)).forward(&h)?;
                let h = AvgPool2d::with((2, 2), (1, 1), (0, 0)).forward(&h)?;
                Module::<f64>::forward(&Flatten::new(), &h)
            },
        ),
    ]
}
