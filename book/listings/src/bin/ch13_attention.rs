//! Chapter 13: attention — scaled dot-product attention by hand and by nabla, the causal mask,
//! and a tiny GPT that learns a sentence.
//!
//! `cargo run --release -p nabla-book --bin ch13_attention [-- --steps 300]`

use nabla::data::text::{TextData, Vocab};
use nabla::data::TaskData;
use nabla::nn::{generate, Init, LayerSpec, ModelSpec, SampleOptions};
use nabla::ops::scaled_dot_product_attention;
use nabla::optim::AdamConfig;
use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
use nabla::Tensor;
use nabla_book::{parsed, row};

fn main() -> nabla::Result<()> {
    let steps: u64 = parsed("steps", "300", "a count");
    // ANCHOR: by_hand
    // Three positions, each with a query, a key and a value of 2 numbers ([batch 1, 3, 2]).
    let q = Tensor::<f32>::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[1, 3, 2])?;
    let k = Tensor::<f32>::from_vec(vec![1.0, 0.0, 0.0, 1.0, -1.0, 1.0], &[1, 3, 2])?;
    let v = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 3, 2])?;
    // scores[i][j] = q_i·k_j / √d: how much position i attends to position j ...
    let scores = q
        .matmul(&k.transpose(1, 2)?)?
        .mul_scalar(1.0 / 2f64.sqrt())?;
    // ... causal: position i may only look at j ≤ i (the future is −∞ before the softmax)
    let mut s = scores.to_vec()?;
    for i in 0..3 {
        for j in i + 1..3 {
            s[i * 3 + j] = f32::NEG_INFINITY;
        }
    }
    let weights = Tensor::from_vec(s, &[1, 3, 3])?.softmax(2)?;
    let by_hand = weights.matmul(&v)?; // each output: a weighted mean of the values
    let nabla = scaled_dot_product_attention(&q, &k, &v, None, true)?;
    for i in 0..3 {
        println!(
            "position {i}: weights {}  output {}",
            row(&weights.to_vec()?[i * 3..][..3]),
            row(&by_hand.to_vec()?[i * 2..][..2])
        );
    }
    let gap = by_hand
        .sub(&nabla)?
        .abs()?
        .to_vec()?
        .into_iter()
        .fold(0.0f32, f32::max);
    println!("nabla's scaled_dot_product_attention differs by {gap:.1e}");
    // ANCHOR_END: by_hand
    // ANCHOR: gpt
    // A GPT of one transformer block learns a sentence, one character at a time.
    let text = "the cat sat on the mat. ".repeat(40);
    let vocab = Vocab::from_text(&text)?;
    let context = 16;
    let data = TextData::new(vocab.encode(&text)?, vocab.len(), context, 1)?;
    let spec = ModelSpec {
        input: vec![context],
        layers: vec![LayerSpec::Gpt {
            vocab: vocab.len(),
            context,
            width: 32,
            depth: 1,
            heads: 2,
            bias: false,
            tied: true,
            dropout: 0.0,
        }],
        init: Init::KaimingUniform,
        seed: 0,
    };
    let mut config = TrainConfig::new(spec, OptimizerConfig::Adam(AdamConfig::adamw(3e-3)));
    config.batch_size = 16;
    config.max_steps = Some(steps);
    let mut trainer = Trainer::new(config, TaskData::Text(data))?;
    trainer.fit(&mut ())?;
    let loss = trainer.history().last().expect("a row").train_loss;
    println!(
        "{} characters, {steps} steps: training loss {loss:.3} nats/char",
        vocab.len()
    );
    // Greedy generation: always the most likely next character (top-1).
    let opts = SampleOptions {
        tokens: 40,
        temperature: 1.0,
        top_k: Some(1),
        seed: 0,
        cache: true,
    };
    let prompt = vocab.encode("the c")?;
    let out = generate(trainer.model(), context, &prompt, &opts, &mut |_| Ok(()))?;
    println!("the c{}", vocab.decode(&out.tokens));
    // ANCHOR_END: gpt
    Ok(())
}
