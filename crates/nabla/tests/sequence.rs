//! Sequence models: the key/value cache against full recomputation, a GPT trained by the
//! Trainer on text, text data and vocabulary errors, and the layers in model specs.

use nabla::data::text::{read_text, TextData, Vocab, MAX_VOCAB};
use nabla::data::TaskData;
use nabla::nn::{
    forward_with_cache, generate, Gpt, GptConfig, KvCache, LayerSpec, ModelSpec, Module,
    SampleOptions,
};
use nabla::optim::AdamConfig;
use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
use nabla::{Rng, Tensor};

fn config(tied: bool) -> GptConfig {
    GptConfig {
        vocab: 7,
        context: 12,
        width: 16,
        depth: 2,
        heads: 4,
        bias: true,
        tied,
        dropout: 0.0,
    }
}

fn ids<T: nabla::Float>(v: &[u32]) -> Tensor<T> {
    let data = v.iter().map(|&i| T::from_f64(f64::from(i))).collect();
    Tensor::from_vec(data, &[1, v.len()]).unwrap()
}

/// Feeding a sequence in pieces through the cache gives the logits of the whole sequence run
/// at once, at every position (f64: to rounding; f32: to 1e-5).
#[test]
fn cached_logits_equal_full_context_logits() {
    let seq: Vec<u32> = vec![3, 1, 4, 1, 5, 6, 2, 6, 5, 3, 5, 0];
    for tied in [true, false] {
        let gpt = Gpt::<f64>::new(config(tied), &mut Rng::new(7)).unwrap();
        let full = gpt.forward(&ids(&seq)).unwrap().to_vec().unwrap();
        // pieces: a 3-token prompt, then single tokens, then a 2-token piece
        let mut cache = KvCache::new();
        let mut at = 0;
        for len in [3, 1, 1, 1, 2, 1, 1, 1, 1] {
            let y = forward_with_cache(&gpt, &ids(&seq[at..at + len]), &mut cache).unwrap();
            let y = y.to_vec().unwrap();
            for (k, v) in y.iter().enumerate() {
                let want = full[at * 7 + k];
                assert!(
                    (v - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "position {} logit {}: cached {v} vs full {want}",
                    at + k / 7,
                    k % 7
                );
            }
            at += len;
        }
        assert_eq!(cache.position(), seq.len());
        // past the context: an error naming the positions
        let err = forward_with_cache(&gpt, &ids(&[1]), &mut cache).unwrap_err();
        assert!(
            err.to_string().contains("exceed the model's context of 12"),
            "{err}"
        );
    }
    let gpt = Gpt::<f32>::new(config(true), &mut Rng::new(8)).unwrap();
    let full = gpt.forward(&ids(&seq)).unwrap().to_vec().unwrap();
    let mut cache = KvCache::new();
    forward_with_cache(&gpt, &ids(&seq[..5]), &mut cache).unwrap();
    for (p, &t) in seq.iter().enumerate().skip(5) {
        let y = forward_with_cache(&gpt, &ids(&[t]), &mut cache)
            .unwrap()
            .to_vec()
            .unwrap();
        for (k, v) in y.iter().enumerate() {
            assert!((v - full[p * 7 + k]).abs() < 1e-5, "f32 position {p}");
        }
    }
}

/// Generation with and without the cache draws the same tokens (the same logits to rounding, the same
/// seeded sampler), including past the context, where both continue from its last half.
#[test]
fn generation_with_and_without_cache_agree() {
    let gpt = Gpt::<f32>::new(config(true), &mut Rng::new(9)).unwrap();
    // 40 tokens after a prompt of 3: the context of 12 fills four times over.
    for temperature in [0.0, 1.0] {
        let mut opts = SampleOptions {
            tokens: 40,
            temperature,
            seed: 5,
            ..SampleOptions::default()
        };
        let cached = generate(&gpt, 12, &[1, 2, 3], &opts, &mut |_| Ok(())).unwrap();
        opts.cache = false;
        let plain = generate(&gpt, 12, &[1, 2, 3], &opts, &mut |_| Ok(())).unwrap();
        assert_eq!(cached.tokens, plain.tokens, "temperature {temperature}");
        assert!(cached.cache_bytes > 0 && plain.cache_bytes == 0);
    }
    let opts = SampleOptions::default();
    let bad = SampleOptions {
        temperature: -1.0,
        ..SampleOptions::default()
    };
    assert!(generate(&gpt, 12, &[1], &bad, &mut |_| Ok(())).is_err());
    assert!(generate(&gpt, 12, &[], &opts, &mut |_| Ok(())).is_err());
}

/// A GPT as a model spec, trained by the Trainer on a repeating text, learns it: the
/// validation loss (nats per character) falls far below the uniform guess ln 7 ≈ 1.95.
#[test]
fn trainer_trains_a_gpt_on_text() {
    let text = "the cat sat on the mat. ".repeat(40);
    let vocab = Vocab::from_text(&text).unwrap();
    let tokens = vocab.encode(&text).unwrap();
    let (train, val) = TextData::split(tokens, vocab.len(), 16, 0.1).unwrap();
    assert_eq!(val.stride, 16);
    let spec = ModelSpec {
        input: vec![16],
        layers: vec![LayerSpec::Gpt {
            vocab: vocab.len(),
            context: 16,
            width: 32,
            depth: 1,
            heads: 4,
            bias: true,
            tied: true,
            dropout: 0.0,
        }],
        init: nabla::nn::Init::KaimingUniform,
        seed: 1,
    };
    let rows = spec.summary(1).unwrap();
    let built = spec.build::<f32>().unwrap();
    assert_eq!(rows[0].params, nabla::nn::parameter_count(&built));
    let mut cfg = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adamw(3e-3)));
    cfg.batch_size = 8;
    cfg.epochs = 1;
    cfg.max_steps = Some(150);
    let mut trainer = Trainer::new(cfg, TaskData::Text(train))
        .unwrap()
        .with_validation(TaskData::Text(val));
    trainer.fit(&mut ()).unwrap();
    let last = trainer.history().last().unwrap();
    let val_loss = last.val_loss.unwrap();
    assert!(val_loss < 0.5, "validation loss {val_loss} nats/char");
    assert!(last.val_accuracy.unwrap() > 0.8);
}

#[test]
fn text_and_vocabulary_errors_name_the_problem() {
    let v = Vocab::from_text("abc").unwrap();
    let err = v.encode("abxyx").unwrap_err().to_string();
    assert!(err.contains("'x', 'y'"), "{err}");
    let many: String = (0..(MAX_VOCAB as u32 + 10))
        .filter_map(|i| char::from_u32(0x4e00 + i))
        .collect();
    let err = Vocab::from_text(&many).unwrap_err().to_string();
    assert!(err.contains("over the limit of 4096"), "{err}");
    assert!(Vocab::from_text("").is_err());
    let dir = std::env::temp_dir().join(format!("nabla_text_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    assert!(read_text(&empty).unwrap_err().to_string().contains("empty"));
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let err = read_text(&latin1).unwrap_err().to_string();
    assert!(
        err.contains("not UTF-8") && err.contains("offset 3"),
        "{err}"
    );
    assert!(read_text(dir.join("missing.txt")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    // a text shorter than one window
    assert!(TextData::split(vec![0, 1, 2], 3, 8, 0.1).is_err());
    // an input id outside the embedding table
    let gpt = Gpt::<f32>::new(config(true), &mut Rng::new(1)).unwrap();
    let err = gpt.forward(&ids(&[1, 9])).unwrap_err().to_string();
    assert!(err.contains("9 is not an id of the 7-row table"), "{err}");
    let err = gpt.forward(&ids(&[1; 13])).unwrap_err().to_string();
    assert!(err.contains("context of 12"), "{err}");
}

#[test]
fn sequence_layers_compose_in_a_spec() {
    let json = r#"{"input": [10], "layers": [
        {"type": "embedding", "num_embeddings": 20, "embedding_dim": 8},
        {"type": "transformer_block", "heads": 2},
        {"type": "multi_head_attention", "heads": 4, "causal": false},
        {"type": "layer_norm"},
        {"type": "linear", "out_features": 20}]}"#;
    let spec = ModelSpec::from_json(json).unwrap();
    assert_eq!(spec.output_shape(3).unwrap(), [3, 10, 20]);
    let net = spec.build::<f32>().unwrap();
    let total: usize = spec.summary(1).unwrap().iter().map(|r| r.params).sum();
    assert_eq!(total, nabla::nn::parameter_count(&net));
    let x = Tensor::from_vec((0..30).map(|i| (i % 20) as f32).collect(), &[3, 10]).unwrap();
    assert_eq!(net.forward(&x).unwrap().shape(), [3, 10, 20]);
    let bad = r#"{"input": [10], "layers": [
        {"type": "embedding", "num_embeddings": 20, "embedding_dim": 6},
        {"type": "transformer_block", "heads": 4}]}"#;
    let err = ModelSpec::from_json(bad)
        .unwrap()
        .summary(1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("width 6 must be a multiple of the heads"),
        "{err}"
    );
    let bad = r#"{"input": [10], "layers": [{"type": "transformer_block", "heads": 2}]}"#;
    let err = ModelSpec::from_json(bad)
        .unwrap()
        .summary(1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, T, C]"), "{err}");
}

/// Evaluation every k steps within an epoch, checkpoints and resume: a GPT run stopped and
/// resumed ends with the same history and weights as one run straight through.
#[test]
fn evaluation_within_an_epoch_resumes_exactly() {
    resumes_exactly(0.0);
}

/// The same with dropout: the checkpoint carries the masks' generator.
#[test]
fn a_gpt_with_dropout_resumes_exactly() {
    resumes_exactly(0.25);
}

fn resumes_exactly(dropout: f64) {
    let text = "to be or not to be, that is the question. ".repeat(30);
    let vocab = Vocab::from_text(&text).unwrap();
    let (train, val) = TextData::split(vocab.encode(&text).unwrap(), vocab.len(), 8, 0.2).unwrap();
    let val = val.spread(5);
    assert!(val.len() <= 5 && val.len() >= 4, "{}", val.len());
    let spec = ModelSpec {
        input: vec![8],
        layers: vec![LayerSpec::Gpt {
            vocab: vocab.len(),
            context: 8,
            width: 16,
            depth: 1,
            heads: 2,
            bias: false,
            tied: false,
            dropout,
        }],
        init: nabla::nn::Init::KaimingUniform,
        seed: 3,
    };
    let mut cfg = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adamw(1e-2)));
    cfg.batch_size = 4;
    cfg.max_steps = Some(60);
    cfg.eval_every = Some(20);
    cfg.checkpoint_every = Some(30);
    let dir =
        std::env::temp_dir().join(format!("nabla_gpt_resume_{}_{dropout}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("state.safetensors");
    let make = |c: TrainConfig| {
        Trainer::new(c, TaskData::Text(train.clone()))
            .unwrap()
            .with_validation(TaskData::Text(val.clone()))
            .with_checkpoint(&ckpt)
    };
    let mut straight = make(cfg.clone());
    straight.fit(&mut ()).unwrap();
    let rows = straight.history();
    assert_eq!(
        rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        [20, 40, 60]
    );
    assert!(rows.iter().all(|r| r.val_loss.is_some() && r.epoch == 1));
    let mut first = cfg.clone();
    first.max_steps = Some(30);
    make(first).fit(&mut ()).unwrap();
    let mut resumed = make(cfg);
    resumed.resume(&ckpt).unwrap();
    resumed.fit(&mut ()).unwrap();
    let strip = |h: &[nabla::train::EpochMetrics]| -> Vec<(u64, f64, Option<f64>)> {
        h.iter()
            .map(|r| (r.step, r.train_loss, r.val_loss))
            .collect()
    };
    assert_eq!(strip(resumed.history()), strip(straight.history()));
    for ((n, a), (_, b)) in straight
        .model()
        .named_parameters()
        .iter()
        .zip(resumed.model().named_parameters())
    {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{n}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A GPT trained data-parallel (ranks as threads, 4 gradient slices): 1, 2 and 4 ranks give
/// bit-identical weights and losses, the same as the sliced step in one process.
#[test]
fn a_gpt_trains_bit_identically_on_one_two_and_four_ranks() {
    trains_bit_identically_on_any_ranks(0.0);
}

/// The same with dropout: a slice draws the same masks whichever rank computes it.
#[test]
fn a_gpt_with_dropout_trains_bit_identically_on_any_ranks() {
    trains_bit_identically_on_any_ranks(0.25);
}

fn trains_bit_identically_on_any_ranks(dropout: f64) {
    use nabla::train::{Collective, ThreadGroup};
    let text = "all the world's a stage, and all the men and women merely players. ".repeat(10);
    let vocab = Vocab::from_text(&text).unwrap();
    let (train, _) = TextData::split(vocab.encode(&text).unwrap(), vocab.len(), 8, 0.1).unwrap();
    let spec = ModelSpec {
        input: vec![8],
        layers: vec![LayerSpec::Gpt {
            vocab: vocab.len(),
            context: 8,
            width: 16,
            depth: 1,
            heads: 2,
            bias: true,
            tied: true,
            dropout,
        }],
        init: nabla::nn::Init::KaimingUniform,
        seed: 5,
    };
    let mut cfg = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adamw(3e-3)));
    cfg.batch_size = 12;
    cfg.max_steps = Some(12);
    cfg.grad_shards = Some(4);
    let data = TaskData::Text(train);
    let run = |ranks: usize| -> Vec<(Vec<u32>, Vec<u64>)> {
        let handles: Vec<_> = ThreadGroup::ranks(ranks)
            .into_iter()
            .map(|rank| {
                let (cfg, data) = (cfg.clone(), data.clone());
                std::thread::spawn(move || {
                    let group: Box<dyn Collective> = Box::new(rank);
                    let mut t = Trainer::new(cfg, data)
                        .unwrap()
                        .with_collective(group)
                        .unwrap();
                    t.fit(&mut ()).unwrap();
                    let w: Vec<u32> = t
                        .model()
                        .parameters()
                        .iter()
                        .flat_map(|p| p.to_vec().unwrap())
                        .map(f32::to_bits)
                        .collect();
                    (
                        w,
                        t.history().iter().map(|m| m.train_loss.to_bits()).collect(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let one = run(1);
    for ranks in [2, 4] {
        for (r, got) in run(ranks).iter().enumerate() {
            assert_eq!(got, &one[0], "{ranks} ranks, rank {r}");
        }
    }
    let mut t = Trainer::new(cfg, data).unwrap();
    t.fit(&mut ()).unwrap();
    let w: Vec<u32> = t
        .model()
        .parameters()
        .iter()
        .flat_map(|p| p.to_vec().unwrap())
        .map(f32::to_bits)
        .collect();
    assert_eq!(w, one[0].0);
}

/// The row kernels (layer norm, the attention softmax and its backward) share rows among
/// threads above 32,768 values: the same bits on one thread as on all of them.
#[test]
fn sequence_kernels_give_the_same_bits_on_any_thread_count() {
    let run = || -> Vec<u32> {
        let x = Tensor::<f32>::rand_uniform(&[512, 128], -2.0, 2.0, 11)
            .unwrap()
            .requires_grad();
        let w = Tensor::<f32>::rand_uniform(&[128], 0.5, 1.5, 12)
            .unwrap()
            .requires_grad();
        let s = Tensor::<f32>::rand_uniform(&[16, 64, 64], -3.0, 3.0, 13)
            .unwrap()
            .requires_grad();
        // Rows of 100: the weight and bias gradients' columns split into unequal parts.
        let x2 = Tensor::<f32>::rand_uniform(&[400, 100], -2.0, 2.0, 14)
            .unwrap()
            .requires_grad();
        let w2 = Tensor::<f32>::rand_uniform(&[100], 0.5, 1.5, 15)
            .unwrap()
            .requires_grad();
        let b2 = Tensor::<f32>::rand_uniform(&[100], -0.5, 0.5, 16)
            .unwrap()
            .requires_grad();
        let y = x.layer_norm(&[128], Some(&w), None, 1e-5).unwrap();
        let y2 = x2.layer_norm(&[100], Some(&w2), Some(&b2), 1e-5).unwrap();
        let p = s.attention_softmax(0.3, true).unwrap();
        let loss = y
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&p.square().unwrap().sum_all().unwrap())
            .unwrap()
            .add(&y2.pow_scalar(3.0).unwrap().sum_all().unwrap())
            .unwrap();
        let g = loss.backward().unwrap();
        [
            &y,
            &y2,
            &p,
            g.get(&x).unwrap(),
            g.get(&w).unwrap(),
            g.get(&x2).unwrap(),
            g.get(&w2).unwrap(),
            g.get(&b2).unwrap(),
            g.get(&s).unwrap(),
        ]
        .iter()
        .flat_map(|t| t.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
    };
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    for n in [2, 3] {
        assert_eq!(pool(n).install(run), one, "{n} threads");
    }
}

/// The softmax of attention scores runs each row in masked blocks of 16 values: rows of every
/// length from 1 to 40 (whole blocks, a partial block, values past the last whole block),
/// causal or not, match an f64 softmax within 1e-6, the hidden entries exactly 0 — also in
/// rows of −∞ only, whose visible entries are NaN (as in PyTorch).
#[test]
fn attention_softmax_rows_of_every_length_match_an_f64_softmax() {
    let scale = 0.7f32;
    for s in 1..=40usize {
        for t in [1, s.div_ceil(2), s] {
            for causal in [false, true] {
                let seed = (s * 101 + t * 7 + usize::from(causal)) as u64;
                let x = Tensor::<f32>::rand_uniform(&[2, t, s], -4.0, 4.0, seed).unwrap();
                let p = x.attention_softmax(scale.into(), causal).unwrap();
                let (xv, pv) = (x.to_vec().unwrap(), p.to_vec().unwrap());
                for r in 0..2 * t {
                    let visible = if causal { r % t + 1 + s - t } else { s };
                    let row: Vec<f64> = xv[r * s..(r + 1) * s]
                        .iter()
                        .map(|&v| f64::from(v * scale))
                        .collect();
                    let m = row[..visible].iter().copied().fold(f64::MIN, f64::max);
                    let z: f64 = row[..visible].iter().map(|v| (v - m).exp()).sum();
                    for (j, &got) in pv[r * s..(r + 1) * s].iter().enumerate() {
                        if j < visible {
                            let want = (row[j] - m).exp() / z;
                            assert!(
                                (f64::from(got) - want).abs() < 1e-6,
                                "s {s} t {t} causal {causal} row {r} col {j}: {got} vs {want}"
                            );
                        } else {
                            assert_eq!(got.to_bits(), 0, "s {s} t {t} row {r} col {j}");
                        }
                    }
                }
            }
        }
    }
    let x = Tensor::<f32>::full(&[3, 20], f32::NEG_INFINITY).unwrap();
    let p = x.attention_softmax(1.0, true).unwrap().to_vec().unwrap();
    for (i, v) in p.iter().enumerate() {
        let (r, j) = (i / 20, i % 20);
        if j < r + 18 {
            assert!(v.is_nan(), "row {r} col {j}: {v}");
        } else {
            assert_eq!(v.to_bits(), 0, "row {r} col {j}");
        }
    }
}

/// Layer norm of 517 rows of 96 (blocks of rows shared among threads, the last one short):
/// the output, the input's, weight's and bias's gradients, as bits.
fn layer_norm_bits() -> Vec<Vec<u32>> {
    let x = Tensor::<f32>::randn(&[517, 96], 0.5, 2.0, 11)
        .unwrap()
        .requires_grad();
    let w = Tensor::<f32>::randn(&[96], 1.0, 0.1, 12)
        .unwrap()
        .requires_grad();
    let b = Tensor::<f32>::randn(&[96], 0.0, 0.1, 13)
        .unwrap()
        .requires_grad();
    let g = Tensor::<f32>::randn(&[517, 96], 0.0, 1.0, 14).unwrap();
    let y = x.layer_norm(&[96], Some(&w), Some(&b), 1e-5).unwrap();
    let grads = y.backward_with(&g).unwrap();
    let bits = |t: &Tensor<f32>| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
    let mut v = vec![bits(&y)];
    v.extend([&x, &w, &b].map(|t| bits(grads.get(t).unwrap())));
    v
}

#[test]
fn layer_norm_gives_the_same_bits_on_any_thread_count() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(layer_norm_bits);
    for n in [2, 3] {
        assert_eq!(pool(n).install(layer_norm_bits), one, "{n} threads");
    }
    // And against an f64 reference: the column sums of the weight's and bias's gradients.
    let x = Tensor::<f64>::randn(&[517, 96], 0.5, 2.0, 11)
        .unwrap()
        .requires_grad();
    let w = Tensor::<f64>::ones(&[96]).unwrap().requires_grad();
    let g = Tensor::<f64>::randn(&[517, 96], 0.0, 1.0, 14).unwrap();
    let y = x.layer_norm(&[96], Some(&w), None, 0.0).unwrap();
    let grads = y.backward_with(&g).unwrap();
    let (yv, gv) = (y.to_vec().unwrap(), g.to_vec().unwrap());
    let dw = grads.get(&w).unwrap().to_vec().unwrap();
    for (j, d) in dw.iter().enumerate() {
        let want: f64 = (0..517).map(|r| gv[r * 96 + j] * yv[r * 96 + j]).sum();
        assert!(
            (d - want).abs() <= 1e-9 * want.abs().max(1.0),
            "dw[{j}] {d} vs {want}"
        );
    }
}
