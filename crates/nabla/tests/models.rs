//! Models as data: `ModelSpec` shapes and errors, the MLP as one case of it, and the `Trainer`
//! on a convolutional network with batch norm — evaluation mode, exact resume with buffers,
//! bit-identical sliced steps on 1, 2 and 4 ranks, the sentinel naming the layer, hand-built
//! modules — and the library's model files.

use std::collections::BTreeMap;

use nabla::data::{Classification, TaskData};
use nabla::io::{load_model, save_model, ModelCard, Task};
use nabla::nn::{
    named_state, Activation, Init, Linear, MlpConfig, ModelSpec, Module, Network, Sequential,
};
use nabla::optim::AdamConfig;
use nabla::train::{
    Collective, OptimizerConfig, ThreadGroup, TrainConfig, Trainer, TRAIN_CONFIG_VERSION,
};
use nabla::{Rng, Tensor};

mod scratch;
use scratch::Scratch;

/// 8×8 images whose class (0–3) is the bright band of two rows (a class mirroring keeps),
/// pixels in [0, 1].
fn images(n: usize, seed: u64) -> TaskData {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 4;
        for r in 0..8 {
            for _ in 0..8 {
                let base = if r / 2 == class { 0.7 } else { 0.1 };
                x.push(base + 0.3 * rng.uniform() as f32);
            }
        }
        labels.push(class);
    }
    TaskData::Class(Classification {
        x: Tensor::from_vec(x, &[n, 64]).unwrap(),
        labels,
        classes: 4,
    })
}

const CNN: &str = r#"{
    "input": [1, 8, 8],
    "layers": [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": false},
        {"type": "batch_norm2d"},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.1},
        {"type": "linear", "out_features": 4}
    ],
    "seed": 5
}"#;

fn cnn_config() -> TrainConfig {
    let spec = ModelSpec::from_json(CNN).unwrap();
    let mut c = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adam(0.01)));
    c.epochs = 3;
    c.batch_size = 20;
    c.checkpoint_every = Some(4);
    c.hflip = true; // drawn per (step, row): resumed and sliced runs must flip the same images
    c
}

/// Parameters and buffers, as bits.
fn state_bits(m: &dyn Module<f32>) -> Vec<(String, Vec<u32>)> {
    named_state(m)
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn shapes_are_inferred_and_a_layer_that_does_not_fit_is_named_with_both_shapes() {
    let spec = ModelSpec::from_json(CNN).unwrap();
    let rows = spec.summary(32).unwrap();
    let shapes: Vec<Vec<usize>> = rows.iter().map(|r| r.output.clone()).collect();
    assert_eq!(shapes[0], [32, 4, 8, 8]);
    assert_eq!(shapes[3], [32, 4, 4, 4]);
    assert_eq!(shapes[4], [32, 64]);
    assert_eq!(shapes[6], [32, 4]);
    assert_eq!(rows[0].layer, "Conv2d(1 → 4, 3×3, padding 1)");
    assert_eq!(spec.parameter_count().unwrap(), 36 + 8 + 64 * 4 + 4);
    // JSON round trip.
    assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);

    let err = |s: &ModelSpec| s.build::<f32>().err().unwrap().to_string();
    let mut flat = spec.clone();
    flat.input = vec![64];
    let e = err(&flat);
    assert!(
        e.contains("layers.0") && e.contains("[N, C, H, W]") && e.contains("[N, 64]"),
        "{e}"
    );
    let mut no_flatten = spec.clone();
    no_flatten.layers.remove(4);
    let e = err(&no_flatten);
    assert!(e.contains("layers.5") && e.contains("[N, 4, 4, 4]"), "{e}");
    let mut big_kernel = spec.clone();
    big_kernel.layers[0] = ModelSpec::from_json(
        r#"{"input": [1], "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 11}]}"#,
    )
    .unwrap()
    .layers[0]
        .clone();
    let e = err(&big_kernel);
    assert!(e.contains("layers.0") && e.contains("[N, 1, 8, 8]"), "{e}");
    let residual = ModelSpec::from_json(
        r#"{"input": [6], "layers": [{"type": "residual", "layers": [{"type": "linear", "out_features": 5}]}]}"#,
    )
    .unwrap();
    let e = err(&residual);
    assert!(
        e.contains("layers.0 (Residual)") && e.contains("[N, 5]"),
        "{e}"
    );
    let e = ModelSpec::from_json(r#"{"input": [6], "layers": [{"type": "lstm"}]}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lstm"), "{e}");
}

#[test]
fn an_mlp_is_the_network_of_its_spec_and_old_configs_read_as_specs() {
    let mut config = MlpConfig::new(&[5, 7, 3]);
    config.dropout = 0.2;
    config.activation = Activation::Tanh;
    config.seed = 11;
    let mlp = nabla::nn::Mlp::<f32>::new(&config).unwrap();
    let spec = ModelSpec::mlp(&config);
    let net: Network = spec.build().unwrap();
    assert_eq!(state_bits(&mlp), state_bits(&net));
    assert_eq!(spec.as_mlp(), Some(config.clone()));
    // An MlpConfig's JSON (what files before specs hold) reads as its spec.
    assert_eq!(ModelSpec::from_json(&config.to_json()).unwrap(), spec);
    // A version-1 TrainConfig (model: MlpConfig) still reads.
    let c = TrainConfig::new(config.clone(), OptimizerConfig::Adam(AdamConfig::adam(0.1)));
    let mut v = serde_json::to_value(&c).unwrap();
    v["model"] = serde_json::from_str(&config.to_json()).unwrap();
    v["version"] = 1.into();
    let old: TrainConfig = serde_json::from_value(v).unwrap();
    assert_eq!(old.model, Some(spec));
    assert_eq!(TRAIN_CONFIG_VERSION, 2);
}

#[test]
fn a_cnn_with_batch_norm_trains_evaluates_in_eval_mode_and_resumes_bit_exactly() {
    let dir = Scratch::new("models-resume");
    let (train, test) = (images(160, 1), images(40, 2));
    let mut full = Trainer::new(cnn_config(), train.clone())
        .unwrap()
        .with_test(test.clone());
    full.fit(&mut ()).unwrap();
    let last = full.history().last().unwrap().clone();
    assert!(last.test_accuracy.unwrap() > 0.9, "{last:?}");
    // The running statistics moved away from their start (mean 0, var 1, 0 batches).
    let buffers = full.model().named_buffers();
    assert_eq!(buffers.len(), 3);
    assert_eq!(buffers[2].1.to_vec().unwrap(), [24.0]); // 3 epochs × 8 batches
                                                        // Evaluation used eval mode: evaluating again (eval mode, no dropout) gives the same loss.
    let again =
        nabla::train::evaluate(full.model(), &test, nabla::train::LossKind::CrossEntropy).unwrap();
    assert_eq!(again.loss.to_bits(), last.test_loss.unwrap().to_bits());

    // Interrupted after 10 steps (mid-epoch), then resumed: the same weights, buffers and
    // metrics.
    let ckpt = dir.join("ckpt.safetensors");
    let mut a = Trainer::new(cnn_config(), train.clone())
        .unwrap()
        .with_test(test.clone())
        .with_checkpoint(&ckpt);
    let mut stop = StopAt(a.stop_handle(), 10);
    assert_eq!(
        a.fit(&mut stop).unwrap(),
        nabla::train::StopReason::Interrupted
    );
    let mut b = Trainer::new(cnn_config(), train)
        .unwrap()
        .with_test(test)
        .with_checkpoint(&ckpt);
    b.resume(&ckpt).unwrap();
    assert_eq!(b.step(), 10);
    b.fit(&mut ()).unwrap();
    assert_eq!(state_bits(b.model()), state_bits(full.model()));
    let metrics = |t: &Trainer| -> Vec<(u64, u64)> {
        t.history()
            .iter()
            .map(|m| (m.train_loss.to_bits(), m.test_loss.unwrap().to_bits()))
            .collect()
    };
    assert_eq!(metrics(&b), metrics(&full));
}

/// Sets the stop flag after step `.1` (as Ctrl-C would).
struct StopAt(std::sync::Arc<std::sync::atomic::AtomicBool>, u64);

impl nabla::train::Callback for StopAt {
    fn step(&mut self, p: &nabla::train::StepProgress) {
        if p.step == self.1 {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[test]
fn sliced_steps_with_batch_norm_are_bit_identical_on_one_two_and_four_ranks() {
    let train = images(100, 3);
    let run = |ranks: usize| -> Vec<Vec<(String, Vec<u32>)>> {
        let handles: Vec<_> = ThreadGroup::ranks(ranks)
            .into_iter()
            .map(|rank| {
                let data = train.clone();
                std::thread::spawn(move || {
                    let mut c = cnn_config();
                    c.grad_shards = Some(4);
                    c.batch_size = 30; // slices of 8, 8, 7, 7 rows; the last batch has 10
                    let group: Box<dyn Collective> = Box::new(rank);
                    let mut t = Trainer::new(c, data)
                        .unwrap()
                        .with_collective(group)
                        .unwrap();
                    t.fit(&mut ()).unwrap();
                    state_bits(t.model())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let one = run(1).remove(0);
    // The running statistics are part of what must agree.
    assert!(one.iter().any(|(n, _)| n.ends_with("running_var")));
    for ranks in [2, 4] {
        for (r, got) in run(ranks).iter().enumerate() {
            assert_eq!(got, &one, "{ranks} ranks, rank {r}");
        }
    }
}

#[test]
fn gradient_checkpointing_of_a_network_changes_memory_not_results() {
    let data = images(60, 7);
    let run = |blocks: Option<usize>| {
        let mut c = cnn_config();
        c.checkpoint_activations = blocks;
        let mut t = Trainer::new(c, data.clone()).unwrap();
        t.fit(&mut ()).unwrap();
        state_bits(t.model())
    };
    assert_eq!(run(Some(1)), run(None));
    // Blocks start at each weighted layer: the spec's conv and linear layers.
    assert_eq!(ModelSpec::from_json(CNN).unwrap().blocks(), [0, 6]);
}

#[test]
fn hflip_mirrors_training_images_and_only_images() {
    let data = images(80, 6);
    let run = |hflip: bool| {
        let mut c = cnn_config();
        c.hflip = hflip;
        c.epochs = 1;
        let mut t = Trainer::new(c, data.clone()).unwrap();
        t.fit(&mut ()).unwrap();
        state_bits(t.model())
    };
    assert_eq!(run(true), run(true), "seeded");
    assert_ne!(run(true), run(false), "it changes what is trained on");
    let mut flat = TrainConfig::new(
        MlpConfig::new(&[64, 8, 4]),
        OptimizerConfig::Adam(AdamConfig::adam(0.01)),
    );
    flat.hflip = true;
    let e = flat.validate().unwrap_err().to_string();
    assert!(e.contains("hflip") && e.contains("[C, H, W]"), "{e}");
}

#[test]
fn the_sentinel_names_the_layer_that_made_the_first_non_finite_value() {
    let mut t = Trainer::new(cnn_config(), images(40, 4)).unwrap();
    let (name, w) = t.model().named_parameters().remove(0);
    assert_eq!(name, "layers.0.weight");
    w.update_data(|d| d[0] = f32::NAN).unwrap();
    let e = t.fit(&mut ()).err().unwrap().to_string();
    assert!(e.contains("layers.0") && e.contains("conv2d"), "{e}");
}

#[test]
fn a_hand_built_module_trains_and_a_spec_that_does_not_describe_it_is_refused() {
    let data = images(80, 5);
    let build = || {
        let mut rng = Rng::new(0);
        Sequential::<f32>::new()
            .with(Linear::new(64, 16, true, Init::KaimingUniform, &mut rng).unwrap())
            .with(Activation::Relu)
            .with(Linear::new(16, 4, true, Init::KaimingUniform, &mut rng).unwrap())
    };
    let mut c = TrainConfig::for_module(OptimizerConfig::Adam(AdamConfig::adam(0.01)));
    c.epochs = 5;
    c.batch_size = 16;
    let mut t = Trainer::with_module(c.clone(), Box::new(build()), data.clone()).unwrap();
    t.fit(&mut ()).unwrap();
    assert!(t.history().last().unwrap().train_accuracy.unwrap() > 0.9);
    // Trainer::new needs a spec.
    let e = Trainer::new(c.clone(), data.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("with_module"), "{e}");
    // A spec that is not the module's.
    c.model = Some(ModelSpec::mlp(&MlpConfig::new(&[64, 8, 4])));
    let e = Trainer::with_module(c, Box::new(build()), data)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("does not describe the module") && e.contains("[64, 8]"),
        "{e}"
    );
}

#[test]
fn a_model_file_written_by_the_library_reads_back_with_its_card() {
    let dir = Scratch::new("models-file");
    let spec = ModelSpec::from_json(CNN).unwrap();
    let mut net: Network = spec.build().unwrap();
    net.set_training(false);
    let mut card = ModelCard::new(spec.clone(), Task::Classification);
    card.input_scale = 1.0 / 255.0;
    card.class_names = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    card.extra = BTreeMap::from([("note".to_string(), "kept".to_string())]);
    let path = dir.join("model.safetensors");
    save_model(&path, &net, &card).unwrap();
    let (back, read) = load_model(&path).unwrap();
    assert_eq!(read.spec, spec);
    assert_eq!(read.class_names, card.class_names);
    assert_eq!(read.extra["note"], "kept");
    assert_eq!(read.input_scale, card.input_scale);
    let raw = Tensor::<f32>::rand_uniform(&[3, 64], 0.0, 255.0, 1).unwrap();
    let x = read.prepare(&raw).unwrap();
    assert_eq!(
        back.forward(&x).unwrap().to_vec().unwrap(),
        net.forward(&raw.mul_scalar(1.0 / 255.0).unwrap())
            .unwrap()
            .to_vec()
            .unwrap()
    );
    assert!(
        read.input_units().contains("0–255"),
        "{}",
        read.input_units()
    );
}
