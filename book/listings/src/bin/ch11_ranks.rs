//! Chapter 11: many processes — data-parallel training, and why its result does not depend on
//! the number of ranks. Ranks as threads here (`ThreadGroup`); the same code runs over MPI.
//!
//! `cargo run --release -p nabla-book --bin ch11_ranks [-- --shards 4]`

use nabla::data::{synthetic, TaskData};
use nabla::nn::{MlpConfig, Module};
use nabla::optim::AdamConfig;
use nabla::train::{Collective, OptimizerConfig, ThreadGroup, TrainConfig, Trainer};
use nabla::Tensor;
use nabla_book::parsed;

/// A hash of the weights' bits: equal hashes, (almost surely) equal weights.
fn fingerprint(m: &dyn Module<f32>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in m.parameters() {
        for v in p.to_vec().expect("readable weights") {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn main() -> nabla::Result<()> {
    let shards: usize = parsed("shards", "4", "a count");
    // ANCHOR: sum
    // Floating-point addition is not associative: the order of a sum changes its last bits.
    let xs = Tensor::<f32>::randn(&[1000], 0.0, 1.0, 3)?.to_vec()?;
    let forward: f32 = xs.iter().sum();
    let halves: f32 = xs[..500].iter().sum::<f32>() + xs[500..].iter().sum::<f32>();
    println!("one sum {forward:.9}, two halves added {halves:.9}");
    // ANCHOR_END: sum
    // ANCHOR: ranks
    // Each batch is cut into `shards` fixed slices; each slice's gradient is computed alone,
    // and every rank adds all slices in slice order. A rank count dividing `shards` only
    // changes who computes which slice, not the sum.
    let mut config = TrainConfig::new(
        MlpConfig::new(&[2, 24, 24, 3]),
        OptimizerConfig::Adam(AdamConfig::adam(0.01)),
    );
    config.epochs = 2;
    config.batch_size = 60;
    config.grad_shards = Some(shards);
    let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0)?);
    for ranks in [1, 2, 4].into_iter().filter(|r| shards.is_multiple_of(*r)) {
        let threads: Vec<_> = ThreadGroup::ranks(ranks)
            .into_iter()
            .map(|rank| {
                let (config, data) = (config.clone(), data.clone());
                std::thread::spawn(move || -> nabla::Result<u64> {
                    let group: Box<dyn Collective> = Box::new(rank);
                    let mut trainer = Trainer::new(config, data)?.with_collective(group)?;
                    trainer.fit(&mut ())?;
                    Ok(fingerprint(trainer.model()))
                })
            })
            .collect();
        let prints: Vec<u64> = threads
            .into_iter()
            .map(|t| t.join().expect("a rank finished"))
            .collect::<nabla::Result<_>>()?;
        println!(
            "{ranks} rank(s): weights {:016x} on every rank: {}",
            prints[0],
            prints.iter().all(|p| *p == prints[0])
        );
    }
    // ANCHOR_END: ranks
    Ok(())
}
