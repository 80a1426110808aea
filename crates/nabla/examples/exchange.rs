//! How long the gradient exchange of the Fashion-MNIST model (784-512-256-10: 535,818 f32
//! values, 2.14 MB) takes on this machine: one blocking `MPI_Allgather`, one non-blocking
//! `MPI_Iallgather`, nabla's bucketed all-gather (`MpiWorld::all_gather_buckets`, the four
//! buckets training sends, one `MPI_Iallgather` each), and the exchange training uses
//! (`MpiWorld::sum_slices`: a fixed-order reduce-scatter of the buckets, then an all-gather of
//! the summed chunks). Nothing computes meanwhile: this is the cost of the transfer alone.
//!
//! ```sh
//! cargo build --release -p nabla --features mpi --example exchange
//! mpirun --allow-run-as-root --oversubscribe -np 2 target/release/examples/exchange
//! ```

use std::time::Instant;

use mpi::traits::*;
use nabla::dist::MpiWorld;
use nabla::train::{BucketSink, Collective};

/// The training buckets of the model (last layers first): b2+W2+b1, W1, b0, W0.
const BUCKETS: [usize; 4] = [2_826, 131_072, 512, 401_408];
const ROUNDS: usize = 200;

fn main() -> nabla::Result<()> {
    let world = MpiWorld::init()?;
    let comm = mpi::topology::SimpleCommunicator::world();
    let n: usize = BUCKETS.iter().sum();
    let local: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut recv = vec![0.0f32; n * world.size()];
    let mut time = |f: &mut dyn FnMut(&mut [f32])| {
        comm.barrier();
        let t = Instant::now();
        for _ in 0..ROUNDS {
            f(&mut recv);
        }
        1e3 * t.elapsed().as_secs_f64() / ROUNDS as f64
    };
    for round in 1..=3 {
        let blocking = time(&mut |r| comm.all_gather_into(&local[..], r));
        let immediate = time(&mut |r| {
            mpi::request::scope(|s| comm.immediate_all_gather_into(s, &local[..], r).wait());
        });
        let mut into = Vec::new(); // reused, as training does
        let buckets = time(&mut |_| {
            let mut send_all = |sink: &mut dyn BucketSink| send_model(&local, sink);
            world
                .all_gather_buckets(&BUCKETS, &mut send_all, &mut into)
                .expect("exchange");
        });
        let reduced = time(&mut |_| {
            let mut send_all = |sink: &mut dyn BucketSink| send_model(&local, sink);
            world
                .sum_slices(&BUCKETS, 1, &mut send_all, &mut into)
                .expect("exchange");
        });
        if world.rank() == 0 {
            println!(
                "round {round}: {} ranks, {:.2} MB each: MPI_Allgather {blocking:.3} ms, \
                 MPI_Iallgather {immediate:.3} ms, nabla all_gather_buckets {buckets:.3} ms, \
                 nabla sum_slices {reduced:.3} ms",
                world.size(),
                4.0 * n as f64 / 1e6
            );
        }
    }
    Ok(())
}

/// Hands the model's buckets over, as training does after backward.
fn send_model(local: &[f32], sink: &mut dyn BucketSink) -> nabla::Result<()> {
    let mut at = 0;
    for len in BUCKETS {
        sink.send(&local[at..at + len])?;
        at += len;
    }
    Ok(())
}
