//! Dropout inside sequence models (a GPT, a transformer block, attention): it drops in
//! training mode only, nowhere else, with masks that come back from a saved generator state;
//! it changes training; a spec, the CLI's model files and the exporters carry it. (Gradients
//! with masks fixed: the catalogue's `sequence_module_cases`; resume and data parallelism:
//! `tests/sequence.rs`.)

use nabla::data::text::{TextData, Vocab};
use nabla::data::TaskData;
use nabla::nn::{
    forward_with_cache, Gpt, GptConfig, KvCache, LayerSpec, ModelSpec, Module, MultiHeadAttention,
    TransformerBlock,
};
use nabla::optim::AdamConfig;
use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
use nabla::{Rng, Tensor};

fn config(dropout: f64) -> GptConfig {
    GptConfig {
        vocab: 9,
        context: 10,
        width: 16,
        depth: 2,
        heads: 4,
        bias: true,
        tied: false,
        dropout,
    }
}

fn ids(v: &[u32]) -> Tensor<f32> {
    let data = v.iter().map(|&i| i as f32).collect();
    Tensor::from_vec(data, &[2, v.len() / 2]).unwrap()
}

fn values(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().unwrap().into_iter().map(f32::to_bits).collect()
}

/// Training mode drops (each call its own masks); evaluation mode is exactly the model
/// without dropout — whose weights are the same, the masks' seed being drawn after them.
#[test]
fn a_gpt_drops_in_training_only() {
    let x = ids(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7]);
    let plain = Gpt::<f32>::new(config(0.0), &mut Rng::new(4)).unwrap();
    let mut gpt = Gpt::<f32>::new(config(0.3), &mut Rng::new(4)).unwrap();
    for ((n, a), (_, b)) in plain.named_parameters().iter().zip(gpt.named_parameters()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{n}");
    }
    let want = values(&plain.forward(&x).unwrap());
    let (a, b) = (gpt.forward(&x).unwrap(), gpt.forward(&x).unwrap());
    assert_ne!(values(&a), want, "training mode must drop");
    assert_ne!(values(&a), values(&b), "each call draws new masks");
    gpt.set_training(false);
    assert_eq!(values(&gpt.forward(&x).unwrap()), want);
    gpt.set_training(true);
    assert_ne!(values(&gpt.forward(&x).unwrap()), want);
}

/// Generation with the key/value cache drops nothing, even in training mode: piece by piece
/// it gives the evaluation-mode logits.
#[test]
fn the_cached_path_never_drops() {
    let seq = [3u32, 1, 4, 1, 5, 2, 6, 5];
    let gpt = Gpt::<f32>::new(config(0.5), &mut Rng::new(5)).unwrap();
    let mut eval = Gpt::<f32>::new(config(0.5), &mut Rng::new(5)).unwrap();
    eval.set_training(false);
    let all = Tensor::from_vec(seq.iter().map(|&i| i as f32).collect(), &[1, 8]).unwrap();
    let want = eval.forward(&all).unwrap().to_vec().unwrap();
    let mut cache = KvCache::new();
    let mut got = Vec::new();
    for piece in [&seq[..3], &seq[3..4], &seq[4..]] {
        let x =
            Tensor::from_vec(piece.iter().map(|&i| i as f32).collect(), &[1, piece.len()]).unwrap();
        got.extend(
            forward_with_cache(&gpt, &x, &mut cache)
                .unwrap()
                .to_vec()
                .unwrap(),
        );
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "logit {i}: {g} vs {w}"
        );
    }
}

/// The generator's state is the layer's `rng` extra state: restoring it brings the same
/// masks back. A model without dropout has no such state (its checkpoints are as before).
#[test]
fn restoring_the_generator_state_replays_the_masks() {
    let x = ids(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3]);
    let mut gpt = Gpt::<f32>::new(config(0.3), &mut Rng::new(6)).unwrap();
    let state = gpt.extra_state();
    assert_eq!(state.keys().collect::<Vec<_>>(), ["rng"]);
    let first = values(&gpt.forward(&x).unwrap());
    assert_ne!(gpt.extra_state(), state, "a forward pass draws");
    gpt.load_extra_state(&state).unwrap();
    assert_eq!(values(&gpt.forward(&x).unwrap()), first);
    assert!(Gpt::<f32>::new(config(0.0), &mut Rng::new(6))
        .unwrap()
        .extra_state()
        .is_empty());
}

/// The standalone layers drop too, and a bad probability is an error naming the layer.
#[test]
fn attention_and_blocks_drop_and_check_their_probability() {
    let x = Tensor::<f32>::randn(&[2, 5, 8], 0.0, 1.0, 7).unwrap();
    let mut attn = MultiHeadAttention::<f32>::new(8, 2, true, true, (0.3, 0.3), &mut Rng::new(8))
        .unwrap()
        .with_dropout(0.4, 9)
        .unwrap();
    let mut block = TransformerBlock::<f32>::new(8, 2, true, true, (0.3, 0.3), &mut Rng::new(10))
        .unwrap()
        .with_dropout(0.4, 11)
        .unwrap();
    assert_eq!((attn.dropout(), block.dropout()), (0.4, 0.4));
    for m in [&mut attn as &mut dyn Module<f32>, &mut block] {
        let train = values(&m.forward(&x).unwrap());
        m.set_training(false);
        let eval = values(&m.forward(&x).unwrap());
        assert_ne!(train, eval, "{}", m.describe());
        assert_eq!(eval, values(&m.forward(&x).unwrap()));
        assert!(m.describe().contains("dropout 0.4"), "{}", m.describe());
    }
    let err = MultiHeadAttention::<f32>::new(8, 2, true, true, (0.3, 0.3), &mut Rng::new(8))
        .unwrap()
        .with_dropout(1.0, 9)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("MultiHeadAttention") && err.contains("drop probability 1 is not in [0, 1)"),
        "{err}"
    );
    let err = Gpt::<f32>::new(config(-0.1), &mut Rng::new(1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Gpt") && err.contains("-0.1"), "{err}");
}

/// In a spec: `dropout` is optional (0 when absent, and not written when 0, so specs without
/// it read and write as before), checked, and shown in the summary.
#[test]
fn specs_carry_dropout() {
    let json = r#"{"input": [8], "layers": [{"type": "gpt", "vocab": 5, "context": 8,
        "width": 8, "depth": 1, "heads": 2, "dropout": 0.2}]}"#;
    let spec = ModelSpec::from_json(json).unwrap();
    assert_eq!(spec.layers[0].gpt_config().unwrap().dropout, 0.2);
    assert!(spec.to_json().contains("\"dropout\":0.2"));
    let summary = format!("{:?}", spec.summary(1).unwrap());
    assert!(summary.contains("dropout 0.2"), "{summary}");
    let plain = json.replace(", \"dropout\": 0.2", "");
    let spec = ModelSpec::from_json(&plain).unwrap();
    assert_eq!(spec.layers[0].gpt_config().unwrap().dropout, 0.0);
    assert!(!spec.to_json().contains("dropout"));
    for (kind, extra) in [
        (
            "gpt",
            r#""vocab": 5, "context": 8, "width": 8, "depth": 1, "heads": 2"#,
        ),
        ("transformer_block", r#""heads": 2"#),
        ("multi_head_attention", r#""heads": 2"#),
    ] {
        let json = format!(
            r#"{{"input": [8, 8], "layers": [{{"type": "{kind}", {extra}, "dropout": 1.5}}]}}"#
        );
        let json = if kind == "gpt" {
            json.replace("[8, 8]", "[8]")
        } else {
            json
        };
        let err = ModelSpec::from_json(&json)
            .unwrap()
            .summary(1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dropout 1.5"), "{kind}: {err}");
    }
}

/// A one-block GPT on a short text with `dropout`, trained `steps` steps (a validation row
/// every `eval_every`), and its validation data.
fn trained(dropout: f64, steps: u64, eval_every: Option<u64>) -> (Trainer, TaskData) {
    let text = "a rose by any other name would smell as sweet. ".repeat(20);
    let vocab = Vocab::from_text(&text).unwrap();
    let (train, val) = TextData::split(vocab.encode(&text).unwrap(), vocab.len(), 8, 0.2).unwrap();
    let spec = ModelSpec {
        input: vec![8],
        layers: vec![LayerSpec::Gpt {
            vocab: vocab.len(),
            context: 8,
            width: 16,
            depth: 1,
            heads: 2,
            bias: false,
            tied: true,
            dropout,
        }],
        init: nabla::nn::Init::KaimingUniform,
        seed: 2,
    };
    let mut cfg = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adamw(1e-2)));
    cfg.batch_size = 4;
    cfg.max_steps = Some(steps);
    cfg.eval_every = eval_every;
    let val = TaskData::Text(val);
    let mut t = Trainer::new(cfg, TaskData::Text(train))
        .unwrap()
        .with_validation(val.clone());
    t.fit(&mut ()).unwrap();
    (t, val)
}

/// Dropout changes training (the same seed without it trains differently), and the model
/// `fit` returns is in evaluation mode: it drops nothing (its last validation row — on the
/// run's last step, within the epoch — is its loss without dropout).
#[test]
fn dropout_changes_training_and_not_evaluation() {
    use nabla::train::{evaluate, LossKind};
    let last = |t: &Trainer| {
        let row = t.history().last().unwrap().clone();
        (row.train_loss, row.val_loss.unwrap())
    };
    let (plain_train, plain_val) = last(&trained(0.0, 20, None).0);
    let (t, val) = trained(0.3, 20, Some(10));
    let (train_loss, val_loss) = last(&t);
    assert_ne!(train_loss, plain_train);
    assert_ne!(val_loss, plain_val);
    assert!(val_loss.is_finite() && train_loss.is_finite());
    let again = evaluate(t.model(), &val, LossKind::CrossEntropy)
        .unwrap()
        .loss;
    assert_eq!(val_loss, again);
    let x = Tensor::from_vec(vec![1.0; 8], &[1, 8]).unwrap();
    let a = t.model().forward(&x).unwrap().to_vec().unwrap();
    assert_eq!(a, t.model().forward(&x).unwrap().to_vec().unwrap());
}

/// A validation row written within an epoch (`eval_every`) evaluates in evaluation mode, as
/// the end-of-epoch row does: its loss is the model's loss without dropout. (It used to run in
/// training mode: with dropout 0.2 the baby GPT's validation loss read 2.22 instead of 2.12
/// nats/char.)
#[test]
fn validation_within_an_epoch_runs_in_evaluation_mode() {
    use nabla::train::{evaluate, LossKind};
    let (mut t, val) = trained(0.5, 10, Some(5));
    let rows = t.history().to_vec();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [5, 10]);
    assert!(rows.iter().all(|r| r.epoch == 1), "rows within the epoch");
    t.model_mut().set_training(false);
    let want = evaluate(t.model(), &val, LossKind::CrossEntropy)
        .unwrap()
        .loss;
    assert_eq!(rows[1].val_loss, Some(want));
}

/// In a spec, turning dropout on changes no weight — of the layer or of any layer after it:
/// the masks' seeds come from the model's seed and the layer's place.
#[test]
fn dropout_in_a_spec_changes_no_weight() {
    let spec = |d: f64| {
        format!(
            r#"{{"input": [6], "layers": [{{"type": "gpt", "vocab": 7, "context": 6, "width": 8,
            "depth": 1, "heads": 2, "dropout": {d}}},
            {{"type": "transformer_block", "heads": 7, "dropout": {d}}},
            {{"type": "multi_head_attention", "heads": 7, "dropout": {d}}},
            {{"type": "linear", "out_features": 3}}]}}"#
        )
    };
    let weights = |d: f64| -> Vec<Vec<f32>> {
        let m = ModelSpec::from_json(&spec(d))
            .unwrap()
            .build::<f32>()
            .unwrap();
        m.parameters().iter().map(|p| p.to_vec().unwrap()).collect()
    };
    assert_eq!(weights(0.0), weights(0.3));
}

/// `x`'s gradient of `Σ up ⊙ attn(x)` for a fresh attention layer dropping with probability
/// `p` (the same weights and the same first mask every call), by plain backward or through
/// `create_graph`.
fn attention_grad<T: nabla::Float>(
    p: f64,
    (x, up): (&Tensor<T>, &Tensor<T>),
    create_graph: bool,
) -> Vec<T> {
    use nabla::autograd::{grad, GradOptions};
    let attn = MultiHeadAttention::<T>::new(8, 2, true, true, (0.5, 0.5), &mut Rng::new(13))
        .unwrap()
        .with_dropout(p, 14)
        .unwrap();
    let x = x.clone().requires_grad();
    let loss = attn
        .forward(&x)
        .unwrap()
        .mul(up)
        .unwrap()
        .sum_all()
        .unwrap();
    let opts = GradOptions {
        create_graph,
        ..GradOptions::default()
    };
    let g = grad(&[loss], std::slice::from_ref(&x), opts).unwrap();
    g[0].to_vec().unwrap()
}

/// Attention drops its probabilities inside the fused kernel (forward and backward make each
/// tile's mask values where they need them) with the mask the composed attention applies —
/// the path `create_graph` backward differentiates: the two give the same gradients, in f64
/// and f32, over three tiles of queries (the last partial), and on one thread or two the same
/// bits. The masks matter: without them the gradient is another.
#[test]
fn fused_dropout_attention_matches_its_composition() {
    fn check<T: nabla::Float>(tol: f64) {
        let x = Tensor::<T>::randn(&[2, 37, 8], 0.0, 1.0, 11).unwrap();
        let up = Tensor::<T>::randn(&[2, 37, 8], 0.0, 1.0, 12).unwrap();
        let fused = attention_grad(0.4, (&x, &up), false);
        let composed = attention_grad(0.4, (&x, &up), true);
        let undropped = attention_grad(0.0, (&x, &up), false);
        let scale = fused.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
        let far = |a: &[T], b: &[T]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a.to_f64() - b.to_f64()).abs())
                .fold(0.0, f64::max)
                / scale
        };
        assert!(far(&fused, &composed) < tol, "{}", far(&fused, &composed));
        assert!(far(&fused, &undropped) > 0.01, "the masks must matter");
        let on = |n: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            pool.install(|| attention_grad(0.4, (&x, &up), false))
        };
        assert!(on(1) == fused && on(2) == fused, "thread counts");
    }
    check::<f64>(1e-12);
    check::<f32>(1e-5);
}
