//! Data-parallel training without MPI: ranks as threads (`ThreadGroup`). The gradient of each
//! batch is a fixed set of slices added in order, so 1, 2 and 4 ranks give bit-identical
//! weights and metrics. (The same code runs over MPI in `crates/nabla-cli/tests/mpi.rs`.)

use nabla::data::{synthetic, TaskData};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::optim::AdamConfig;
use nabla::train::{Collective, OptimizerConfig, ThreadGroup, TrainConfig, Trainer};

fn config() -> TrainConfig {
    let mut model = MlpConfig::new(&[2, 24, 24, 3]);
    model.dropout = 0.2; // masks must not depend on which rank draws them
    let mut c = TrainConfig::new(model, OptimizerConfig::Adam(AdamConfig::adam(0.01)));
    c.epochs = 3;
    c.batch_size = 50; // slices of 13, 13, 12, 12 rows; the last batch is smaller
    c.max_steps = Some(50);
    c.grad_shards = Some(4);
    c
}

fn bits(m: &Mlp<f32>) -> Vec<u32> {
    m.parameters()
        .iter()
        .flat_map(|p| p.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
}

/// Trains on `ranks` threads; every rank's final weights and loss history.
fn train(ranks: usize) -> Vec<(Vec<u32>, Vec<u64>)> {
    let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0).unwrap());
    let handles: Vec<_> = ThreadGroup::ranks(ranks)
        .into_iter()
        .map(|rank| {
            let data = data.clone();
            std::thread::spawn(move || {
                let group: Box<dyn Collective> = Box::new(rank);
                let mut t = Trainer::new(config(), data)
                    .unwrap()
                    .with_collective(group)
                    .unwrap();
                t.fit(&mut ()).unwrap();
                let losses = t.history().iter().map(|m| m.train_loss.to_bits()).collect();
                (bits(t.model()), losses)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn one_two_and_four_ranks_train_bit_identical_weights() {
    let one = train(1);
    let reference = &one[0];
    for ranks in [2, 4] {
        for (r, got) in train(ranks).iter().enumerate() {
            assert_eq!(got, reference, "{ranks} ranks, rank {r}");
        }
    }
    // Without a group, the same sliced gradient in one process.
    let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0).unwrap());
    let mut t = Trainer::new(config(), data).unwrap();
    t.fit(&mut ()).unwrap();
    assert_eq!(bits(t.model()), reference.0);
}

#[test]
fn a_slice_count_the_ranks_do_not_divide_is_refused() {
    let data = TaskData::Class(synthetic::spiral(20, 3, 0.1, 0).unwrap());
    let mut c = config();
    c.grad_shards = Some(3);
    let rank: Box<dyn Collective> = Box::new(ThreadGroup::ranks(2).remove(0));
    let err = Trainer::new(c, data)
        .unwrap()
        .with_collective(rank)
        .err()
        .unwrap();
    assert!(err.to_string().contains("multiple of 2"), "{err}");
}
