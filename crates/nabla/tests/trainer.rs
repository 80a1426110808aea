//! The library's `Trainer`: exact resume after an interruption, refusals on other settings
//! or data, early stopping, divergence, and all-or-nothing checkpoint loading.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nabla::data::{synthetic, DataFingerprint, TaskData};
use nabla::io::{load_training_state, read_tensor_file, write_tensor_file};
use nabla::nn::{MlpConfig, Module};
use nabla::optim::{AdamConfig, LrSchedule, SgdConfig};
use nabla::train::{
    Callback, EarlyStopping, OptimizerConfig, StepProgress, StopReason, TrainConfig, Trainer,
};

mod scratch;
use scratch::Scratch;

fn tmp(name: &str) -> Scratch {
    Scratch::new(name)
}

fn data(seed: u64) -> (TaskData, TaskData) {
    let all = TaskData::Class(synthetic::spiral(60, 3, 0.1, seed).unwrap());
    all.split(0.25, 1).unwrap()
}

fn config() -> TrainConfig {
    let mut model = MlpConfig::new(&[2, 16, 16, 3]);
    model.dropout = 0.1; // dropout's generator must resume too
    let mut c = TrainConfig::new(model, OptimizerConfig::Adam(AdamConfig::adam(0.01)));
    c.epochs = 6;
    c.batch_size = 16;
    c.checkpoint_every = Some(5);
    // A schedule, so that a resumed run must also restore the live learning rate (a run
    // resumed right after an epoch's last step writes that epoch's row before any step).
    c.schedule = LrSchedule::Cosine {
        total: 54,
        min_lr: 1e-4,
    };
    c
}

fn bits(model: &dyn Module<f32>) -> Vec<Vec<u32>> {
    model
        .parameters()
        .iter()
        .map(|p| p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Sets the stop flag after step `at`.
struct StopAt(u64, Arc<AtomicBool>);

impl Callback for StopAt {
    fn step(&mut self, p: &StepProgress) {
        if p.step == self.0 {
            self.1.store(true, Ordering::SeqCst);
        }
    }
}

fn without_time(t: &Trainer) -> Vec<(usize, u64, u64, u64, Option<u64>)> {
    t.history()
        .iter()
        .map(|m| {
            let acc = m.test_accuracy.map(f64::to_bits);
            (m.epoch, m.step, m.lr.to_bits(), m.train_loss.to_bits(), acc)
        })
        .collect()
}

#[test]
fn an_interrupted_run_resumes_to_bit_identical_weights_and_metrics() {
    let (train, test) = data(0);
    let mut reference = Trainer::new(config(), train.clone())
        .unwrap()
        .with_test(test.clone());
    assert_eq!(reference.fit(&mut ()).unwrap(), StopReason::Finished);

    // 135 training rows in batches of 16: 9 steps per epoch, 54 in all; stopping at the last
    // step leaves the last epoch's evaluation to the resumed run.
    for at in [1, 7, 9, 23, 27, 54] {
        let dir = tmp(&format!("stop{at}"));
        let ckpt = dir.join("ckpt.safetensors");
        let mut first = Trainer::new(config(), train.clone())
            .unwrap()
            .with_test(test.clone())
            .with_checkpoint(&ckpt);
        let mut stop = StopAt(at, first.stop_handle());
        assert_eq!(first.fit(&mut stop).unwrap(), StopReason::Interrupted);
        assert_eq!(first.step(), at);
        let mut second = Trainer::new(config(), train.clone())
            .unwrap()
            .with_test(test.clone())
            .with_checkpoint(&ckpt);
        second.resume(&ckpt).unwrap();
        assert_eq!(second.step(), at);
        second.fit(&mut ()).unwrap();
        assert_eq!(
            bits(second.model()),
            bits(reference.model()),
            "stopped at {at}"
        );
        assert_eq!(
            without_time(&second),
            without_time(&reference),
            "stopped at {at}"
        );
    }
}

#[test]
fn resume_refuses_other_settings_and_other_data_and_changes_nothing() {
    let (train, test) = data(0);
    let dir = tmp("refuse");
    let ckpt = dir.join("ckpt.safetensors");
    let fp = DataFingerprint::new("spiral", &[], &train).unwrap();
    let mut t = Trainer::new(config(), train.clone())
        .unwrap()
        .with_test(test.clone())
        .with_checkpoint(&ckpt)
        .with_fingerprint(fp.clone());
    t.fit(&mut ()).unwrap();

    let mut other = config();
    other.optimizer = OptimizerConfig::Sgd(SgdConfig::new(0.1));
    let mut t2 = Trainer::new(other, train.clone()).unwrap();
    let before = bits(t2.model());
    let err = t2.resume(&ckpt).unwrap_err().to_string();
    assert!(
        err.contains("optimizer") && err.contains("settings differ"),
        "{err}"
    );
    assert_eq!(bits(t2.model()), before);
    assert_eq!(t2.step(), 0);

    let (other_train, _) = data(5);
    let other_fp = DataFingerprint::new("spiral", &[], &other_train).unwrap();
    let mut t3 = Trainer::new(config(), other_train)
        .unwrap()
        .with_fingerprint(other_fp);
    let err = t3.resume(&ckpt).unwrap_err().to_string();
    assert!(err.contains("it was trained on spiral: content"), "{err}");
    assert!(err.contains("but these data are spiral: content"), "{err}");

    // More epochs is a change a resume allows.
    let mut more = config();
    more.epochs = 8;
    let mut t4 = Trainer::new(more, train)
        .unwrap()
        .with_test(test)
        .with_fingerprint(fp);
    t4.resume(&ckpt).unwrap();
    t4.fit(&mut ()).unwrap();
    assert_eq!(t4.history().len(), 8);
}

#[test]
fn early_stopping_stops_when_the_loss_stops_improving() {
    let (train, test) = data(0);
    let mut c = config();
    c.epochs = 500;
    c.optimizer = OptimizerConfig::Adam(AdamConfig::adam(0.05));
    c.early_stopping = Some(EarlyStopping {
        patience: 3,
        min_delta: 0.0,
    });
    let (val, test2) = test.split(0.5, 3).unwrap();
    let dir = tmp("early");
    let ckpt = dir.join("ckpt.safetensors");
    let mut t = Trainer::new(c.clone(), train.clone())
        .unwrap()
        .with_validation(val.clone())
        .with_test(test2)
        .with_checkpoint(&ckpt);
    let StopReason::EarlyStopped { best_epoch } = t.fit(&mut ()).unwrap() else {
        panic!("did not stop early in 500 epochs");
    };
    let h = t.history();
    assert_eq!(h.len(), best_epoch + 3);
    let best = h[best_epoch - 1].val_loss.unwrap();
    assert!(h[best_epoch..].iter().all(|m| m.val_loss.unwrap() >= best));
    // The test set, held back while validating, is evaluated once at the stop.
    assert!(h.last().unwrap().test_accuracy.is_some());
    // Resumed, a run that stopped early stays stopped.
    let mut again = Trainer::new(c, train).unwrap().with_validation(val);
    again.resume(&ckpt).unwrap();
    assert!(matches!(
        again.fit(&mut ()).unwrap(),
        StopReason::EarlyStopped { .. }
    ));
    assert_eq!(again.history().len(), best_epoch + 3);
}

#[test]
fn divergence_is_an_error_naming_the_step() {
    let (train, _) = data(0);
    let mut c = config();
    c.optimizer = OptimizerConfig::Sgd(SgdConfig::new(1e30));
    let mut t = Trainer::new(c, train).unwrap();
    let err = t.fit(&mut ()).unwrap_err();
    assert!(matches!(err, nabla::Error::Diverged { .. }), "{err}");
    assert!(
        err.to_string().contains("training diverged at step"),
        "{err}"
    );
}

#[test]
fn more_gradient_slices_than_rows_per_batch_are_refused() {
    let mut c = config();
    c.grad_shards = Some(c.batch_size + 1);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("between 1 and the batch size 16"), "{err}");
}

#[test]
fn a_config_that_does_not_fit_the_data_is_refused() {
    let (train, _) = data(0);
    let mut c = config();
    c.model = Some(MlpConfig::new(&[3, 8, 3]).into());
    let err = Trainer::new(c, train.clone()).err().unwrap().to_string();
    assert!(err.contains("the training data have 2 features"), "{err}");
    let mut c = config();
    c.loss = nabla::train::LossKind::Mse;
    let err = Trainer::new(c, train).err().unwrap().to_string();
    assert!(
        err.contains("the mse loss does not fit classification data"),
        "{err}"
    );
}

/// Rewrites the checkpoint with one part corrupted.
fn corrupt(src: &Path, dst: &Path, part: &str) {
    let file = read_tensor_file(src).unwrap();
    let mut meta: BTreeMap<String, String> = file.metadata.clone();
    let mut tensors: Vec<(String, nabla::Tensor)> = file.f32.clone().into_iter().collect();
    match part {
        "model tensor" => {
            let t = tensors
                .iter_mut()
                .find(|(n, _)| n == "model.layers.0.weight")
                .unwrap();
            t.1 = nabla::Tensor::zeros(&[3, 16]).unwrap();
        }
        "optimizer buffer" => {
            let n = tensors.len();
            tensors.retain(|(n, _)| !n.starts_with("optimizer.") || !n.ends_with("layers.3.bias"));
            assert_eq!(
                tensors.len(),
                n - 2,
                "exp_avg and exp_avg_sq of one bias removed"
            );
        }
        "dropout rng" => {
            let key = meta
                .keys()
                .rfind(|k| k.starts_with("module.") && k.ends_with(".rng"))
                .unwrap()
                .clone();
            meta.insert(key, "not a generator state".into());
        }
        "optimizer config" => {
            meta.insert("optimizer_config".into(), "{\"lr\": \"fast\"}".into());
        }
        "step counter" => {
            meta.insert("step".into(), "-3".into());
        }
        "shuffle rng" => {
            meta.insert("rng".into(), "1,2".into());
        }
        _ => unreachable!(),
    }
    write_tensor_file(dst, &tensors, &meta).unwrap();
}

#[test]
fn loading_training_state_is_all_or_nothing() {
    let (train, _) = data(0);
    let dir = tmp("corrupt");
    let ckpt = dir.join("ckpt.safetensors");
    let mut t = Trainer::new(config(), train)
        .unwrap()
        .with_checkpoint(&ckpt);
    t.fit(&mut ()).unwrap();
    for part in [
        "model tensor",
        "optimizer buffer",
        "dropout rng",
        "optimizer config",
        "step counter",
        "shuffle rng",
    ] {
        let bad = dir.join("bad.safetensors");
        corrupt(&ckpt, &bad, part);
        let mut model = config().model.unwrap().build::<f32>().unwrap();
        let mut opt = config().optimizer.build(model.named_parameters()).unwrap();
        // Give the optimizer state of its own so a partial load would show.
        let (w, s) = (bits(&model), opt.state());
        let module = model.extra_state();
        let err = load_training_state(&bad, &mut model, opt.as_mut());
        assert!(err.is_err(), "{part} was accepted");
        assert_eq!(bits(&model), w, "{part}: weights changed");
        assert_eq!(model.extra_state(), module, "{part}: dropout state changed");
        let after = opt.state();
        assert_eq!(
            (after.steps, after.config.clone()),
            (s.steps, s.config.clone()),
            "{part}"
        );
        assert_eq!(
            after.buffers.len(),
            s.buffers.len(),
            "{part}: optimizer buffers changed"
        );
    }
}

/// A linear map plus `0·√p` for a parameter `p = 0`: the loss stays finite while `p`'s
/// gradient is `0·∞ = NaN`.
struct NanGradient {
    w: nabla::Tensor,
    p: nabla::Tensor,
}

impl Module<f32> for NanGradient {
    fn forward(&self, x: &nabla::Tensor) -> nabla::Result<nabla::Tensor> {
        x.matmul(&self.w)?.add(&self.p.sqrt()?.mul_scalar(0.0)?)
    }
    fn named_parameters(&self) -> Vec<(String, nabla::Tensor)> {
        vec![("w".into(), self.w.clone()), ("p".into(), self.p.clone())]
    }
    fn describe(&self) -> String {
        "NanGradient".into()
    }
}

#[test]
fn a_non_finite_gradient_under_a_finite_loss_is_named_with_or_without_clipping() {
    for clip in [None, Some(1.0)] {
        let (train, _) = data(0);
        let mut c = TrainConfig::for_module(OptimizerConfig::Sgd(SgdConfig::new(0.1)));
        c.clip = clip;
        let model = NanGradient {
            w: nabla::Tensor::zeros(&[2, 3]).unwrap().requires_grad(),
            p: nabla::Tensor::zeros(&[1]).unwrap().requires_grad(),
        };
        let mut t = Trainer::with_module(c, Box::new(model), train).unwrap();
        let err = t.fit(&mut ()).unwrap_err().to_string();
        assert!(
            err.contains("the gradient of p is not finite") && err.contains("at step 0"),
            "clip {clip:?}: {err}"
        );
    }
}

/// Validation rows do not change training: a model with batch norm and dropout trained with
/// a validation row every 3 steps ends with the weights and running statistics of the same
/// run evaluated only at the ends of epochs (evaluation runs in evaluation mode: no mask is
/// drawn, no statistic updated — rows within an epoch used to run in training mode).
#[test]
fn validation_rows_within_an_epoch_do_not_change_training() {
    use nabla::nn::ModelSpec;
    let spec = ModelSpec::from_json(
        r#"{"input": [2], "layers": [{"type": "linear", "out_features": 16},
        {"type": "batch_norm1d"}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
        {"type": "linear", "out_features": 3}]}"#,
    )
    .unwrap();
    let (train, val) = data(4);
    let run = |eval_every: Option<u64>| {
        let mut c = TrainConfig::new(spec.clone(), OptimizerConfig::Adam(AdamConfig::adam(0.01)));
        c.epochs = 2;
        c.batch_size = 16;
        c.eval_every = eval_every;
        let mut t = Trainer::new(c, train.clone())
            .unwrap()
            .with_validation(val.clone());
        t.fit(&mut ()).unwrap();
        let buffers: Vec<Vec<f32>> = t
            .model()
            .named_buffers()
            .iter()
            .map(|(_, b)| b.to_vec().unwrap())
            .collect();
        assert!(!buffers.is_empty());
        (bits(t.model()), buffers, t.history().len())
    };
    let (w, b, rows) = run(None);
    let (w3, b3, rows3) = run(Some(3));
    assert!(rows3 > rows, "{rows3} rows vs {rows}");
    assert_eq!(w3, w, "weights");
    assert_eq!(b3, b, "running statistics");
}
