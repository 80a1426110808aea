//! Layers, the MLP builder, summaries, and losses by hand.

use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Activation, Dropout, Init, Linear, Mlp, MlpConfig, Module, Sequential};
use nabla::testing::assert_close;
use nabla::{Rng, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

#[test]
fn linear_is_xw_plus_b_with_w_stored_in_by_out() {
    let w = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]); // 3 inputs → 2 outputs
    let b = t(&[0.5, -0.5], &[2]);
    let layer = Linear::from_tensors(w, Some(b)).unwrap();
    assert_eq!((layer.in_features(), layer.out_features()), (3, 2));
    let x = t(&[1.0, 0.0, -1.0, 2.0, 1.0, 0.0], &[2, 3]);
    let o = layer.forward(&x).unwrap();
    // row 0: [1·1 + 0·3 − 1·5, 1·2 + 0·4 − 1·6] + b = [−4, −4] + b
    assert_eq!(o.to_vec().unwrap(), vec![-3.5, -4.5, 5.5, 7.5]);
    let names: Vec<String> = layer
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["weight", "bias"]);
    let err = layer
        .forward(&Tensor::zeros(&[2, 4]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Linear(3 → 2)") && err.contains("[2, 4]"),
        "{err}"
    );
    assert!(Linear::from_tensors(t(&[1.0; 6], &[3, 2]), Some(t(&[0.0; 3], &[3]))).is_err());
}

#[test]
fn initialisations_have_their_documented_scale() {
    let mut rng = Rng::new(0);
    let (fi, fo) = (400, 300);
    let std = |t: Tensor<f64>| {
        let v = t.to_vec().unwrap();
        (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
    };
    let kaiming = (2.0 / fi as f64).sqrt();
    let xavier = (2.0 / (fi + fo) as f64).sqrt();
    for (init, want) in [
        (Init::KaimingUniform, kaiming),
        (Init::KaimingNormal, kaiming),
        (Init::XavierUniform, xavier),
        (Init::XavierNormal, xavier),
    ] {
        let got = std(init.weight(fi, fo, &mut rng).unwrap());
        assert!((got / want - 1.0).abs() < 0.02, "{init}: {got} vs {want}");
        assert_eq!(init.to_string().parse::<Init>().unwrap(), init);
    }
    let bound = (6.0 / fi as f64).sqrt();
    let w: Tensor<f64> = Init::KaimingUniform.weight(fi, fo, &mut rng).unwrap();
    assert!(w.to_vec().unwrap().iter().all(|v| v.abs() <= bound));
    assert!("he".parse::<Init>().is_err());
}

#[test]
fn activations_parse_and_apply() {
    for s in [
        "relu",
        "leaky_relu:0.2",
        "sigmoid",
        "tanh",
        "gelu",
        "softplus",
        "identity",
    ] {
        let a: Activation = s.parse().unwrap();
        assert_eq!(a.to_string(), s);
        let y = Module::<f64>::forward(&a, &t(&[-1.0, 2.0], &[2])).unwrap();
        assert_eq!(y.shape(), &[2]);
    }
    assert_eq!(
        "leaky_relu".parse::<Activation>().unwrap(),
        Activation::LeakyRelu(0.01)
    );
    assert!("swish".parse::<Activation>().is_err());
    assert!("leaky_relu:x".parse::<Activation>().is_err());
    let y = Activation::LeakyRelu(0.2).apply(&t(&[-1.0, 2.0], &[2]));
    assert_eq!(y.unwrap().to_vec().unwrap(), vec![-0.2, 2.0]);
}

#[test]
fn dropout_only_in_training_and_preserves_expectation() {
    let mut d = Dropout::new(0.25, 3).unwrap();
    let x = Tensor::<f64>::ones(&[100_000]).unwrap();
    let y = d.forward(&x).unwrap().to_vec().unwrap();
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    assert!((mean - 1.0).abs() < 0.01, "{mean}");
    assert!(y
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-12));
    Module::<f64>::set_training(&mut d, false);
    assert_eq!(d.forward(&x).unwrap().to_vec(), x.to_vec());
    assert!(Dropout::new(1.0, 0).is_err());
    assert!(Dropout::new(-0.1, 0).is_err());
}

#[test]
fn mlp_names_summary_and_modes() {
    let mut cfg = MlpConfig::new(&[784, 512, 256, 10]);
    cfg.dropout = 0.1;
    let mut mlp = Mlp::<f32>::new(&cfg).unwrap();
    let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.3.weight",
            "layers.3.bias",
            "layers.6.weight",
            "layers.6.bias"
        ]
    );
    let s = mlp.summary(128).unwrap();
    assert_eq!(
        s.total_params,
        784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    );
    assert_eq!(s.total_bytes, 4 * s.total_params);
    assert_eq!(s.rows.last().unwrap().output_shape, vec![128, 10]);
    let text = s.to_string();
    assert!(
        text.contains("Linear(784 → 512)") && text.contains("Dropout(p=0.1)"),
        "{text}"
    );
    // eval mode is deterministic, train mode is not (dropout)
    let x = Tensor::<f32>::randn(&[4, 784], 0.0, 1.0, 1).unwrap();
    let a = mlp.forward(&x).unwrap().to_vec().unwrap();
    assert_ne!(a, mlp.forward(&x).unwrap().to_vec().unwrap());
    mlp.set_training(false);
    assert_eq!(
        mlp.forward(&x).unwrap().to_vec(),
        mlp.forward(&x).unwrap().to_vec()
    );
    // same seed → same weights; config round-trips through JSON
    let again = Mlp::<f32>::new(&MlpConfig::from_json(&cfg.to_json()).unwrap()).unwrap();
    assert_eq!(again.parameters()[0].to_vec(), mlp.parameters()[0].to_vec());
    assert!(Mlp::<f32>::new(&MlpConfig::new(&[3])).is_err());
    assert!(Mlp::<f32>::new(&MlpConfig::new(&[3, 0, 2])).is_err());
}

#[test]
fn sequential_builds_by_hand() {
    let mut rng = Rng::new(1);
    let net = Sequential::<f64>::new()
        .with(Linear::new(2, 3, true, Init::XavierNormal, &mut rng).unwrap())
        .with(Activation::Tanh)
        .with(Linear::new(3, 1, false, Init::XavierNormal, &mut rng).unwrap());
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
    assert_eq!(net.output_shape(&[5, 2]).unwrap(), vec![5, 1]);
    assert!(net.output_shape(&[5, 3]).is_err());
}

#[test]
fn regression_losses_by_hand() {
    let p = t(&[1.0, 2.0, 3.0, 10.0], &[4]);
    let y = t(&[1.5, 2.0, 1.0, 0.0], &[4]);
    // residuals −0.5, 0, 2, 10
    let mse = loss::mse(&p, &y, Reduction::Sum).unwrap().item().unwrap();
    assert_eq!(mse, 0.25 + 0.0 + 4.0 + 100.0);
    let l1 = loss::l1(&p, &y, Reduction::Mean).unwrap().item().unwrap();
    assert_eq!(l1, (0.5 + 0.0 + 2.0 + 10.0) / 4.0);
    let hub = loss::huber(&p, &y, 1.0, Reduction::None)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(hub, vec![0.125, 0.0, 1.5, 9.5]);
    assert!(loss::mse(&p, &t(&[1.0; 3], &[3]), Reduction::Mean).is_err());
    assert!(loss::huber(&p, &y, 0.0, Reduction::Mean).is_err());
}

#[test]
fn cross_entropy_by_hand_and_stable() {
    let z = t(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 3]);
    let ce = loss::cross_entropy(&z, Target::Classes(&[2, 0]), 0.0, Reduction::None).unwrap();
    let lse0 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let want = [lse0 - 3.0, 3f64.ln()];
    assert_close(&ce, &t(&want, &[2]), 1e-12, 1e-12).unwrap();
    // label smoothing ε: (1 − ε)·nll + ε·mean over classes of −log p
    let eps = 0.3;
    let sm = loss::cross_entropy(&z, Target::Classes(&[2, 0]), eps, Reduction::None).unwrap();
    let mean_nll0 = (3.0 * lse0 - 6.0) / 3.0;
    assert!((sm.to_vec().unwrap()[0] - ((1.0 - eps) * want[0] + eps * mean_nll0)).abs() < 1e-12);
    // probability targets equal to one-hot give the same loss
    let oh = Tensor::<f64>::one_hot(&[2, 0], 3).unwrap();
    let cp = loss::cross_entropy(&z, Target::Probs(&oh), 0.0, Reduction::Mean).unwrap();
    assert!((cp.item().unwrap() - (want[0] + want[1]) / 2.0).abs() < 1e-12);
    // huge logits stay finite in f32
    let big = Tensor::<f32>::from_vec(vec![1e8, -1e8, 0.0, 1e4, 2e4, -3e4], &[2, 3]).unwrap();
    let l = loss::cross_entropy(
        &big.requires_grad(),
        Target::Classes(&[1, 0]),
        0.0,
        Reduction::Mean,
    )
    .unwrap();
    assert!(l.item().unwrap().is_finite());
    assert!(l.backward().unwrap().iter().all(|(_, g)| g.all_finite()));
    // errors
    assert!(loss::cross_entropy(&z, Target::Classes(&[3, 0]), 0.0, Reduction::Mean).is_err());
    assert!(loss::cross_entropy(&z, Target::Classes(&[0]), 0.0, Reduction::Mean).is_err());
    assert!(loss::cross_entropy(&z, Target::Classes(&[0, 0]), 1.0, Reduction::Mean).is_err());
}

#[test]
fn bce_and_prediction_helpers() {
    let z = t(&[0.0, 2.0, -800.0, 800.0], &[4]);
    let y = t(&[1.0, 0.0, 0.0, 1.0], &[4]);
    let l = loss::bce_with_logits(&z, &y, Reduction::None)
        .unwrap()
        .to_vec()
        .unwrap();
    assert!((l[0] - 2f64.ln()).abs() < 1e-15);
    assert!((l[1] - (1.0 + 2f64.exp()).ln()).abs() < 1e-12);
    assert_eq!((l[2], l[3]), (0.0, 0.0));
    let logits = t(&[0.1, 2.0, -1.0, 3.0, 0.0, 1.0], &[2, 3]);
    let p = loss::predict_proba(&logits).unwrap();
    assert_eq!(loss::predict_class(&logits).unwrap(), vec![1, 0]);
    assert_eq!(
        p.argmax(1).unwrap(),
        vec![1, 0],
        "softmax keeps the arg-max"
    );
    assert_eq!(loss::accuracy(&[1, 0, 2], &[1, 1, 2]), 2.0 / 3.0);
}

/// Class targets take a shortcut (their one-hot rows are known to sum to 1 and are not
/// copied again): the same loss and gradient bits as the same one-hot rows given as
/// probabilities, which are copied and checked.
#[test]
fn class_targets_give_the_bits_of_their_one_hot_rows() {
    for (n, k) in [(3, 5), (50, 84), (400, 90)] {
        let z = Tensor::<f32>::randn(&[n, k], 0.0, 2.0, 4)
            .unwrap()
            .requires_grad();
        let labels: Vec<usize> = (0..n).map(|i| (i * 7) % k).collect();
        let hot: Vec<f32> = (0..n * k)
            .map(|i| f32::from(u8::from(labels[i / k] == i % k)))
            .collect();
        let hot = Tensor::from_vec(hot, &[n, k]).unwrap();
        let run = |t: Target<'_, f32>| {
            let l = loss::cross_entropy(&z, t, 0.0, Reduction::Mean).unwrap();
            let g = l.backward().unwrap().get(&z).unwrap().to_vec().unwrap();
            (l.to_vec().unwrap(), g)
        };
        assert_eq!(run(Target::Classes(&labels)), run(Target::Probs(&hot)));
    }
}
