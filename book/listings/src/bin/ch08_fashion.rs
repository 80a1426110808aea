//! Chapter 8: training on real data — Fashion-MNIST with the library's `Trainer`, a
//! checkpoint, and a resumed run that is the same run.
//!
//! Needs the data set (`apt-get install dataset-fashion-mnist`).
//! `cargo run --release -p nabla-book --bin ch08_fashion [-- --hidden 128]`

use nabla::data::mnist::{load_mnist_dir, Split, FASHION_MNIST_DIR};
use nabla::data::TaskData;
use nabla::nn::{MlpConfig, Module};
use nabla::optim::AdamConfig;
use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
use nabla_book::parsed;

fn main() -> nabla::Result<()> {
    let hidden: usize = parsed("hidden", "128", "a width");
    // ANCHOR: data
    // 60,000 training and 10,000 test images of 28×28 pixels (scaled to [0, 1]), 10 classes.
    // The first 12,000 training images and 2,000 test images keep this chapter quick.
    let train = load_mnist_dir(FASHION_MNIST_DIR, Split::Train)?;
    let test = load_mnist_dir(FASHION_MNIST_DIR, Split::Test)?;
    println!(
        "Fashion-MNIST: train {:?}, test {:?}",
        train.x.shape(),
        test.x.shape()
    );
    let train = TaskData::Class(train.subset(&(0..12_000).collect::<Vec<_>>())?);
    let test = TaskData::Class(test.subset(&(0..2_000).collect::<Vec<_>>())?);
    // ANCHOR_END: data
    // ANCHOR: fit
    let model = MlpConfig::new(&[784, hidden, 10]);
    let mut config = TrainConfig::new(model, OptimizerConfig::Adam(AdamConfig::adam(1e-3)));
    config.epochs = 2;
    config.batch_size = 100;
    let dir = std::env::temp_dir().join(format!("nabla-book-ch08-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let ckpt = dir.join("state.safetensors");
    let mut trainer = Trainer::new(config.clone(), train.clone())?
        .with_test(test.clone())
        .with_checkpoint(&ckpt);
    trainer.fit(&mut ())?;
    for m in trainer.history() {
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}%",
            m.epoch,
            m.train_loss,
            100.0 * m.test_accuracy.unwrap_or(f64::NAN)
        );
    }
    // ANCHOR_END: fit
    // ANCHOR: resume
    // Continue the run from its checkpoint for a third epoch ...
    config.epochs = 3;
    let mut resumed = Trainer::new(config.clone(), train.clone())?
        .with_test(test.clone())
        .with_checkpoint(&ckpt);
    resumed.resume(&ckpt)?;
    resumed.fit(&mut ())?;
    // ... and compare with three epochs in one go: the same weights, bit for bit.
    let mut straight = Trainer::new(config, train)?.with_test(test);
    straight.fit(&mut ())?;
    let bits = |m: &dyn Module<f32>| -> nabla::Result<Vec<u32>> {
        let mut v = Vec::new();
        for p in m.parameters() {
            v.extend(p.to_vec()?.into_iter().map(f32::to_bits));
        }
        Ok(v)
    };
    let last = resumed.history().last().expect("three epochs");
    println!(
        "resumed to epoch {}: test accuracy {:.2}%; identical to a 3-epoch run: {}",
        last.epoch,
        100.0 * last.test_accuracy.unwrap_or(f64::NAN),
        bits(resumed.model())? == bits(straight.model())?
    );
    // ANCHOR_END: resume
    std::fs::remove_dir_all(&dir).expect("the temporary directory is ours");
    Ok(())
}
