//! Trains a 2-64-64-3 ReLU MLP on the embedded, seeded 3-class spiral with the library's
//! layers, fused cross-entropy loss and Adam, then reports training accuracy and what
//! backpropagation cost in memory. Run: `cargo run --release -p nabla --example spiral`.

use std::time::Instant;

use nabla::data::synthetic::spiral;
use nabla::nn::loss::{self, accuracy, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::no_grad;
use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer};

fn main() -> nabla::Result<()> {
    let data = spiral(300, 3, 0.2, 0)?;
    let model = Mlp::<f32>::new(&MlpConfig::new(&[2, 64, 64, 3]))?;
    println!("{}\n", model.summary(data.len())?);
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.01))?;
    let steps = 1000;
    let schedule = LrSchedule::Cosine {
        total: steps,
        min_lr: 1e-4,
    };
    let start = Instant::now();
    let mut saved = 0;
    for step in 0..steps {
        opt.set_lr(schedule.lr_at(0.01, step));
        let logits = model.forward(&data.x)?; // O = X·W + b, layer by layer
        let l = loss::cross_entropy(&logits, Target::Classes(&data.labels), 0.0, Reduction::Mean)?;
        saved = l.graph_stats().saved_bytes;
        opt.step(&l.backward()?)?; // backpropagation, then an in-place Adam update
        if (step + 1) % 200 == 0 {
            let pred = loss::predict_class(&no_grad(|| model.forward(&data.x))?)?;
            println!(
                "step {:4}  loss {:.4}  train accuracy {:.1}%",
                step + 1,
                l.item()?,
                100.0 * accuracy(&pred, &data.labels)
            );
        }
    }
    let pred = loss::predict_class(&no_grad(|| model.forward(&data.x))?)?;
    println!(
        "\nfinal train accuracy {:.1}% on {} spiral points, {} full-batch Adam steps in {:.2} s",
        100.0 * accuracy(&pred, &data.labels),
        data.len(),
        steps,
        start.elapsed().as_secs_f64()
    );
    let inference = no_grad(|| model.forward(&data.x))?
        .graph_stats()
        .saved_bytes;
    println!(
        "backprop memory: one training step keeps {saved} bytes of forward tensors for \
         backward; the same forward under no_grad keeps {inference}"
    );
    Ok(())
}
