//! What backpropagation costs in memory, and what gradient checkpointing buys back.
//!
//! Backward needs the forward pass's tensors (a product's gradient needs the other factor,
//! ReLU's needs where its input was positive), so a training step keeps every layer's output
//! alive until `backward` has run: memory grows with depth L. A forward pass under `no_grad`
//! keeps only the tensor being computed and its input. Gradient checkpointing keeps only the
//! input of every k-th block and recomputes the blocks in between during backward: with
//! k ≈ √L, memory grows like √L, for the price of one more forward pass.
//!
//! Bytes are **measured**: a counting global allocator records the peak of live heap bytes
//! during one training step (forward, loss, backward) or one `no_grad` forward, above what was
//! live before it (the model and the input batch). Parameters' gradients are included.
//!
//! Run: `cargo run --release --example backprop_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};
use nabla_cli::experiment::{image_dir, table};
use nabla_cli::plots::{chart, Series};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak live heap bytes while `f` runs, above the bytes live when it started, and its result.
fn peak_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = f();
    (PEAK.load(Ordering::Relaxed).saturating_sub(before), r)
}

struct Config {
    depths: Vec<usize>,
    batch: usize,
    width: usize,
    /// Timed repetitions per measurement (the median is reported).
    reps: usize,
    plots: bool,
}

struct Row {
    depth: usize,
    /// Blocks per checkpointed segment (≈ √depth).
    k: usize,
    no_grad: usize,
    full: usize,
    ckpt: usize,
    full_ms: f64,
    ckpt_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One training step's peak bytes and median time, for a model already set up.
fn train_step(
    model: &Mlp<f32>,
    x: &Tensor<f32>,
    labels: &[usize],
    reps: usize,
) -> Result<(usize, f64)> {
    let step = || -> Result<()> {
        let logits = model.forward(x)?;
        let l = loss::cross_entropy(&logits, Target::Classes(labels), 0.0, Reduction::Mean)?;
        let grads = l.backward()?;
        drop((l, grads));
        Ok(())
    };
    let (bytes, r) = peak_during(step);
    r?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((bytes, median(times)))
}

fn measure(depth: usize, cfg: &Config) -> Result<Row> {
    let mut sizes = vec![cfg.width];
    sizes.extend(std::iter::repeat_n(cfg.width, depth));
    sizes.push(10);
    let mut model = Mlp::<f32>::new(&MlpConfig::new(&sizes))?;
    let x = Tensor::<f32>::rand_uniform(&[cfg.batch, cfg.width], -1.0, 1.0, 1)?;
    let labels: Vec<usize> = (0..cfg.batch).map(|i| i % 10).collect();
    // One unmeasured step first: the GEMM keeps its packing buffers (per thread) after its
    // first products, and that one-time allocation is not what a step keeps.
    train_step(&model, &x, &labels, 1)?;
    drop(no_grad(|| model.forward(&x))?);

    let (no_grad_bytes, out) = peak_during(|| no_grad(|| model.forward(&x)));
    drop(out?);
    let (full, full_ms) = train_step(&model, &x, &labels, cfg.reps)?;
    let k = ((depth as f64).sqrt().round() as usize).max(1);
    model.set_checkpoint_every(Some(k))?;
    let (ckpt, ckpt_ms) = train_step(&model, &x, &labels, cfg.reps)?;
    Ok(Row {
        depth,
        k,
        no_grad: no_grad_bytes,
        full,
        ckpt,
        full_ms,
        ckpt_ms,
    })
}

fn run(cfg: &Config) -> Result<Vec<Row>> {
    let rows: Vec<Row> = cfg
        .depths
        .iter()
        .map(|&d| measure(d, cfg))
        .collect::<Result<_>>()?;
    if cfg.plots {
        let pick = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
            rows.iter().map(|r| (r.depth as f64, f(r))).collect()
        };
        let mb = |b: usize| b as f64 / 1e6;
        chart(
            &image_dir()?.join("backprop_memory.png"),
            "Peak heap of one step: training, training with checkpointing, no_grad forward",
            &format!("hidden layers (width {}, batch {})", cfg.width, cfg.batch),
            "MB above model + batch (log scale)",
            &[
                Series::new("training (all activations kept)", pick(&|r| mb(r.full))),
                Series::new(
                    "training, checkpoint every √L blocks",
                    pick(&|r| mb(r.ckpt)),
                ),
                Series::new("forward under no_grad", pick(&|r| mb(r.no_grad))),
            ],
            true,
        )?;
        chart(
            &image_dir()?.join("backprop_memory_time.png"),
            "Training step time: the price of recomputation",
            &format!("hidden layers (width {}, batch {})", cfg.width, cfg.batch),
            "ms per step (median)",
            &[
                Series::new("training (all activations kept)", pick(&|r| r.full_ms)),
                Series::new("training, checkpoint every √L blocks", pick(&|r| r.ckpt_ms)),
            ],
            false,
        )?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    nabla::alloc::retain_freed_memory();
    let cfg = Config {
        depths: vec![1, 2, 4, 8, 16, 32, 64],
        batch: 1024,
        width: 128,
        reps: 5,
        plots: true,
    };
    let rows = run(&cfg)?;
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.depth.to_string(),
                format!("{:.2}", r.no_grad as f64 / 1e6),
                format!("{:.2}", r.full as f64 / 1e6),
                format!("{:.2} (k = {})", r.ckpt as f64 / 1e6, r.k),
                format!("{:.2}×", r.full as f64 / r.ckpt as f64),
                format!("{:.1}", r.full_ms),
                format!("{:.1}", r.ckpt_ms),
                format!("{:.2}×", r.ckpt_ms / r.full_ms),
            ]
        })
        .collect();
    println!(
        "MLP {w}-({w} × depth)-10, batch {b}, f32; measured peak heap MB above model + batch:\n{}",
        table(
            &[
                "hidden layers",
                "no_grad forward",
                "training",
                "training, checkpointed",
                "saved",
                "step ms",
                "checkpointed step ms",
                "time cost"
            ],
            &t
        ),
        w = cfg.width,
        b = cfg.batch
    );
    println!(
        "plots: examples/images/backprop_memory.png, examples/images/backprop_memory_time.png"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_keeps_more_than_checkpointing_which_keeps_more_than_inference_and_grows_like_sqrt_depth(
    ) {
        let rows = run(&Config {
            depths: vec![4, 16, 64],
            batch: 256,
            width: 16,
            reps: 1,
            plots: false,
        })
        .unwrap();
        for r in &rows {
            assert!(
                r.no_grad < r.ckpt && r.ckpt < r.full,
                "depth {}: no_grad {} checkpointed {} full {}",
                r.depth,
                r.no_grad,
                r.ckpt,
                r.full
            );
        }
        let growth = |f: &dyn Fn(&Row) -> usize| f(&rows[2]) as f64 / f(&rows[1]) as f64;
        // 16 → 64 layers: all activations kept grows ×4 (linear); checkpointing every √L
        // blocks grows ×2 (√4); no_grad stays flat
        let (full, ckpt, inference) = (
            growth(&|r| r.full),
            growth(&|r| r.ckpt),
            growth(&|r| r.no_grad),
        );
        assert!((3.3..4.5).contains(&full), "full ×{full}");
        assert!((1.5..2.6).contains(&ckpt), "checkpointed ×{ckpt}");
        assert!(inference < 1.2, "no_grad ×{inference}");
    }
}
