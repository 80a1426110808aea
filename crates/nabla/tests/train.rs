//! End-to-end learning: an MLP trained with the library's layers, losses and optimizers.

use nabla::data::synthetic::{spiral, xor};
use nabla::data::Classification;
use nabla::nn::loss::{self, accuracy, Reduction, Target};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::no_grad;
use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};

fn train(
    model: &Mlp,
    opt: &mut dyn Optimizer,
    data: &Classification,
    steps: u64,
    schedule: &LrSchedule,
    base_lr: f64,
) -> f64 {
    for step in 0..steps {
        opt.set_lr(schedule.lr_at(base_lr, step));
        let logits = model.forward(&data.x).unwrap();
        let l = loss::cross_entropy(&logits, Target::Classes(&data.labels), 0.0, Reduction::Mean)
            .unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
    }
    let logits = no_grad(|| model.forward(&data.x)).unwrap();
    accuracy(&loss::predict_class(&logits).unwrap(), &data.labels)
}

#[test]
fn mlp_learns_xor_perfectly() {
    let data = xor();
    let mut cfg = MlpConfig::new(&[2, 8, 2]);
    cfg.activation = Activation::Tanh;
    cfg.seed = 3;
    let model = Mlp::new(&cfg).unwrap();
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.05)).unwrap();
    let acc = train(&model, &mut opt, &data, 300, &LrSchedule::Constant, 0.05);
    assert_eq!(acc, 1.0);
}

#[test]
fn mlp_reaches_98_percent_on_the_spiral() {
    let data = spiral(200, 3, 0.2, 7).unwrap();
    let model = Mlp::new(&MlpConfig::new(&[2, 64, 64, 3])).unwrap();
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.01)).unwrap();
    let sched = LrSchedule::Cosine {
        total: 800,
        min_lr: 1e-4,
    };
    let acc = train(&model, &mut opt, &data, 800, &sched, 0.01);
    assert!(acc >= 0.98, "training accuracy {acc}");
}

#[test]
fn sgd_with_nesterov_momentum_also_learns_the_spiral() {
    let data = spiral(200, 3, 0.2, 8).unwrap();
    let model = Mlp::new(&MlpConfig::new(&[2, 64, 64, 3])).unwrap();
    let cfg = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    let mut opt = Sgd::new(model.named_parameters(), cfg).unwrap();
    let sched = LrSchedule::Warmup {
        steps: 50,
        then: Box::new(LrSchedule::Constant),
    };
    let acc = train(&model, &mut opt, &data, 1500, &sched, 0.1);
    assert!(acc >= 0.98, "training accuracy {acc}");
}

#[test]
fn a_linear_model_cannot_learn_xor() {
    // Without a hidden layer the decision boundary is a line: at most 3 of 4 XOR points.
    let data = xor();
    let model = Mlp::new(&MlpConfig::new(&[2, 2])).unwrap();
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.05)).unwrap();
    let acc = train(&model, &mut opt, &data, 300, &LrSchedule::Constant, 0.05);
    assert!(acc <= 0.75, "{acc}");
}
