//! Chapter 5: gradient descent and its descendants — momentum, Adam, learning-rate schedules.
//!
//! `cargo run --release -p nabla-book --bin ch05_optimizers [-- --lr 0.019]`

use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use nabla::Tensor;
use nabla_book::{num, parsed};

/// f(w) = ½(w₀² + 100·w₁²): a valley 10 times steeper across than along.
fn valley(w: &Tensor<f64>) -> nabla::Result<Tensor<f64>> {
    let scale = Tensor::from_vec(vec![0.5, 50.0], &[2])?;
    w.square()?.mul(&scale)?.sum_all()
}

/// Runs `opt` from w = (−4, 1) and prints f every 25 steps, for 100 steps.
fn descend(name: &str, w: &Tensor<f64>, opt: &mut dyn Optimizer<f64>) -> nabla::Result<()> {
    let mut line = format!("{name:<22}");
    for step in 0..=100 {
        let f = valley(w)?;
        if step % 25 == 0 {
            line += &format!(" {}", num(f.item()? as f32));
        }
        opt.step(&f.backward()?)?;
    }
    println!("{line}");
    Ok(())
}

fn main() -> nabla::Result<()> {
    let lr: f64 = parsed("lr", "0.019", "a number");
    // ANCHOR: valley
    let start = || Tensor::<f64>::from_vec(vec![-4.0, 1.0], &[2]).map(|t| t.requires_grad());
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "f(w) after step", 0, 25, 50, 75, 100
    );
    let w = start()?;
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::new(lr))?;
    descend("gradient descent", &w, &mut sgd)?;
    let w = start()?;
    let mut config = SgdConfig::new(lr);
    config.momentum = 0.9;
    let mut momentum = Sgd::new(vec![("w".into(), w.clone())], config)?;
    descend("momentum 0.9", &w, &mut momentum)?;
    let w = start()?;
    let mut adam = Adam::new(vec![("w".into(), w.clone())], AdamConfig::adam(0.3))?;
    descend("Adam (lr 0.3)", &w, &mut adam)?;
    // ANCHOR_END: valley
    // ANCHOR: schedule
    // A warm-up of 100 steps, then cosine decay to a tenth over 900: the learning rate the
    // Trainer (and `nabla train --warmup 100 --schedule cosine`) gives the optimizer each step.
    let schedule = LrSchedule::Warmup {
        steps: 100,
        then: Box::new(LrSchedule::Cosine {
            total: 900,
            min_lr: 1e-4,
        }),
    };
    schedule.validate()?;
    let at: Vec<String> = [0, 50, 99, 100, 325, 550, 775, 999]
        .iter()
        .map(|&s| format!("{s}: {:.2e}", schedule.lr_at(1e-3, s)))
        .collect();
    println!("learning rate at step {}", at.join(", "));
    // ANCHOR_END: schedule
    Ok(())
}
