//! Checkpoints: weights round-trip, loading errors that name every problem, atomic writes,
//! exact resume from full training state, and interop with Python's safetensors.

use std::collections::BTreeMap;

use nabla::data::synthetic::spiral;
use nabla::io::{
    load_training_state, load_weights, read_tensor_file, save_training_state, save_weights,
    write_tensor_file, TrainingState,
};
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer};
use nabla::{no_grad, Rng, Tensor};

mod pyenv;
mod scratch;
use pyenv::python_available;
use scratch::Scratch;

fn tmpdir(name: &str) -> Scratch {
    Scratch::new(name)
}

fn meta(cfg: &MlpConfig) -> BTreeMap<String, String> {
    BTreeMap::from([("model_config".to_string(), cfg.to_json())])
}

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let dir = tmpdir("roundtrip");
    let cfg = MlpConfig::new(&[5, 7, 3]);
    let a = Mlp::<f32>::new(&cfg).unwrap();
    let path = dir.join("w.safetensors");
    save_weights(&path, &a, &meta(&cfg)).unwrap();
    let other = MlpConfig {
        seed: 99,
        ..cfg.clone()
    };
    let b = Mlp::<f32>::new(&other).unwrap();
    let x = Tensor::<f32>::randn(&[4, 5], 0.0, 1.0, 1).unwrap();
    assert_ne!(
        a.forward(&x).unwrap().to_vec(),
        b.forward(&x).unwrap().to_vec()
    );
    let m = load_weights(&path, &b).unwrap();
    assert_eq!(m["format"], "nabla-weights");
    assert_eq!(MlpConfig::from_json(&m["model_config"]).unwrap(), cfg);
    let (ya, yb) = (a.forward(&x).unwrap(), b.forward(&x).unwrap());
    let bits = |t: &Tensor<f32>| {
        t.to_vec()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&ya), bits(&yb));
    // no temporary files left behind
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn loading_names_every_missing_unexpected_and_mismatched_tensor() {
    let dir = tmpdir("mismatch");
    let path = dir.join("bad.safetensors");
    let model = Mlp::<f32>::new(&MlpConfig::new(&[4, 3, 2])).unwrap();
    let before = model.parameters()[0].to_vec().unwrap();
    let tensors = vec![
        (
            "layers.0.weight".to_string(),
            Tensor::<f32>::zeros(&[3, 4]).unwrap(),
        ), // transposed
        (
            "layers.2.weight".to_string(),
            Tensor::<f32>::zeros(&[3, 2]).unwrap(),
        ),
        (
            "layers.9.weight".to_string(),
            Tensor::<f32>::zeros(&[1]).unwrap(),
        ),
    ];
    write_tensor_file(&path, &tensors, &BTreeMap::new()).unwrap();
    let f64_path = dir.join("f64.safetensors");
    let f64_tensors = vec![(
        "layers.0.bias".to_string(),
        Tensor::<f64>::zeros(&[3]).unwrap(),
    )];
    write_tensor_file(&f64_path, &f64_tensors, &BTreeMap::new()).unwrap();

    let err = load_weights(&path, &model).unwrap_err().to_string();
    for needle in [
        "bad.safetensors",
        "missing layers.0.bias, layers.2.bias",
        "unexpected layers.9.weight",
        "layers.0.weight is [3, 4] in the file, [4, 3] in the model",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    let err = load_weights(&f64_path, &model).unwrap_err().to_string();
    assert!(
        err.contains("layers.0.bias is F64, the model uses F32"),
        "{err}"
    );
    assert_eq!(
        model.parameters()[0].to_vec().unwrap(),
        before,
        "nothing loaded on error"
    );

    // not a safetensors file at all; a missing file
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"<html>not found</html>").unwrap();
    let err = load_weights(&junk, &model).unwrap_err().to_string();
    assert!(err.starts_with(&junk.display().to_string()), "{err}");
    let err = load_weights(dir.join("nope.safetensors"), &model)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.safetensors") && err.contains("cannot read"),
        "{err}"
    );
    // truncated copy of a good file
    let good = dir.join("good.safetensors");
    save_weights(&good, &model, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(load_weights(&cut, &model).is_err());
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint() {
    let dir = tmpdir("atomic");
    let path = dir.join("w.safetensors");
    let model = Mlp::<f32>::new(&MlpConfig::new(&[3, 2])).unwrap();
    save_weights(&path, &model, &BTreeMap::new()).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A save that fails (duplicate tensor names) must not touch the existing file.
    let dup = vec![
        ("a".to_string(), Tensor::<f32>::zeros(&[1]).unwrap()),
        ("a".to_string(), Tensor::<f32>::zeros(&[1]).unwrap()),
    ];
    assert!(write_tensor_file(&path, &dup, &BTreeMap::new()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Overwriting replaces the whole file at once.
    let bigger = Mlp::<f32>::new(&MlpConfig::new(&[30, 20])).unwrap();
    save_weights(&path, &bigger, &BTreeMap::new()).unwrap();
    assert!(read_tensor_file(&path).unwrap().f32["nabla.layers.0.weight"].shape() == [30, 20]);
}

/// Trains with minibatches shuffled by `rng`, dropout, Adam and a cosine schedule, from
/// `start` to `end` steps.
fn run(model: &Mlp, opt: &mut Adam, rng: &mut Rng, start: u64, end: u64) {
    let data = spiral(64, 3, 0.2, 5).unwrap();
    let sched = LrSchedule::Cosine {
        total: 40,
        min_lr: 1e-4,
    };
    let n = data.len();
    let batch = 32;
    for step in start..end {
        let mut idx: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut idx);
        let idx = &idx[..batch];
        let x = data.x.index_select(0, idx).unwrap();
        let y: Vec<usize> = idx.iter().map(|&i| data.labels[i]).collect();
        opt.set_lr(sched.lr_at(0.01, step));
        let l = loss::cross_entropy(
            &model.forward(&x).unwrap(),
            Target::Classes(&y),
            0.1,
            Reduction::Mean,
        )
        .unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
    }
}

fn weight_bits(m: &Mlp) -> Vec<u32> {
    m.parameters()
        .iter()
        .flat_map(|p| p.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn resuming_from_full_state_is_bit_identical() {
    let dir = tmpdir("resume");
    let mut cfg = MlpConfig::new(&[2, 32, 32, 3]);
    cfg.dropout = 0.2;
    let (k, n) = (15, 40);

    let straight = Mlp::new(&cfg).unwrap();
    let mut opt = Adam::new(straight.named_parameters(), AdamConfig::adamw(0.01)).unwrap();
    let mut rng = Rng::new(11);
    run(&straight, &mut opt, &mut rng, 0, n);

    let first = Mlp::new(&cfg).unwrap();
    let mut opt1 = Adam::new(first.named_parameters(), AdamConfig::adamw(0.01)).unwrap();
    let mut rng1 = Rng::new(11);
    run(&first, &mut opt1, &mut rng1, 0, k);
    let path = dir.join("state.safetensors");
    let state = TrainingState {
        step: k,
        epoch: 0,
        rng: rng1.state(),
        model_config: cfg.to_json(),
        extra: BTreeMap::from([("note".to_string(), "test".to_string())]),
    };
    save_training_state(&path, &first, &opt1, &state).unwrap();
    assert_ne!(opt1.lr(), 0.01, "the schedule moved the live rate");
    drop((first, opt1, rng1));

    // A fresh process would rebuild the model from the saved config (with another seed here,
    // to prove the weights come from the file).
    let file = read_tensor_file(&path).unwrap();
    let mut cfg2 = MlpConfig::from_json(&file.metadata["model_config"]).unwrap();
    cfg2.seed = 1234;
    let mut resumed = Mlp::new(&cfg2).unwrap();
    let mut opt2 = Adam::new(resumed.named_parameters(), AdamConfig::adamw(0.5)).unwrap();
    let loaded = load_training_state(&path, &mut resumed, &mut opt2).unwrap();
    assert_eq!(loaded, state);
    assert_eq!(opt2.steps(), k);
    // Hyper-parameters come from the file: the base rate (stored once; the schedule gives
    // each step's live rate).
    assert_eq!(opt2.config().lr, 0.01);
    assert_eq!(opt2.lr(), 0.01);
    let mut rng2 = Rng::from_state(loaded.rng);
    run(&resumed, &mut opt2, &mut rng2, loaded.step, n);
    assert_eq!(weight_bits(&resumed), weight_bits(&straight));

    // the state refuses a model of another shape, naming the tensor
    let mut wrong = Mlp::<f32>::new(&MlpConfig::new(&[2, 16, 3])).unwrap();
    let mut wopt = Adam::new(wrong.named_parameters(), AdamConfig::adamw(0.01)).unwrap();
    let err = load_training_state(&path, &mut wrong, &mut wopt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.0.weight"), "{err}");
    // and a weights-only file is not a training state
    let w = dir.join("w.safetensors");
    save_weights(&w, &straight, &BTreeMap::new()).unwrap();
    assert!(load_training_state(&w, &mut resumed, &mut opt2).is_err());
}

#[test]
fn python_safetensors_reads_nabla_weights_and_reproduces_logits() {
    if !python_available() {
        return;
    }
    let dir = tmpdir("python");
    let cfg = MlpConfig::new(&[6, 16, 8, 4]);
    let model = Mlp::<f32>::new(&cfg).unwrap();
    let weights = dir.join("model.safetensors");
    save_weights(&weights, &model, &meta(&cfg)).unwrap();
    let x = Tensor::<f32>::randn(&[10, 6], 0.0, 1.0, 2).unwrap();
    let logits = no_grad(|| model.forward(&x)).unwrap();
    let reference = dir.join("reference.safetensors");
    let tensors = vec![("input".to_string(), x), ("logits".to_string(), logits)];
    write_tensor_file(&reference, &tensors, &BTreeMap::new()).unwrap();

    let stdout = pyenv::run("check_weights.py", &[&weights, &reference]);
    assert!(stdout.contains("max |numpy − nabla|"), "{stdout}");
}
