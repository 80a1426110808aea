//! Data-parallel training without MPI: ranks as threads (`ThreadGroup`). The gradient of each
//! batch is a fixed set of slices added in order, so 1, 2 and 4 ranks give bit-identical
//! weights and metrics. (The same code runs over MPI in `crates/nabla-cli/tests/mpi.rs`.)

use nabla::data::{synthetic, TaskData};
use nabla::nn::{MlpConfig, Module};
use nabla::optim::AdamConfig;
use std::sync::{Arc, Mutex};

use nabla::train::{
    BucketSink, Collective, OptimizerConfig, ThreadGroup, ThreadRank, TrainConfig, Trainer,
};

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

fn bits(m: &dyn Module<f32>) -> Vec<u32> {
    m.parameters()
        .iter()
        .flat_map(|p| p.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
}

/// Trains on `ranks` threads; every rank's final weights and loss history.
fn train(ranks: usize) -> Vec<(Vec<u32>, Vec<u64>)> {
    train_with(ranks, None)
}

/// [`train`] with gradient buckets of `bucket` values (the default without).
fn train_with(ranks: usize, bucket: Option<usize>) -> Vec<(Vec<u32>, Vec<u64>)> {
    let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0).unwrap());
    let handles: Vec<_> = ThreadGroup::ranks(ranks)
        .into_iter()
        .map(|rank| {
            let data = data.clone();
            std::thread::spawn(move || {
                let group: Box<dyn Collective> = Box::new(rank);
                let mut t = Trainer::new(config(), data).unwrap();
                if let Some(values) = bucket {
                    t = t.with_bucket_values(values).unwrap();
                }
                let mut t = t.with_collective(group).unwrap();
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
fn the_bucket_size_changes_when_gradients_travel_not_the_result() {
    // 747 parameters: one bucket by default; 1 value: one bucket per parameter; 100: layers
    // merged up to the cap (b2+W2 = 75, b1 = 24, W1 = 576 alone, …).
    let reference = train(2);
    for values in [1, 100] {
        for (r, got) in train_with(2, Some(values)).iter().enumerate() {
            assert_eq!(got, &reference[0], "buckets of {values}, rank {r}");
        }
    }
    let data = TaskData::Class(synthetic::spiral(10, 3, 0.1, 0).unwrap());
    let err = Trainer::new(config(), data)
        .unwrap()
        .with_bucket_values(0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("at least one value"), "{err}");
}

/// Records when buckets leave relative to backward's progress.
struct Watch {
    inner: ThreadRank,
    log: Arc<Mutex<Vec<&'static str>>>,
}

struct WatchSink<'a> {
    inner: &'a mut dyn BucketSink,
    log: &'a Mutex<Vec<&'static str>>,
}

impl BucketSink for WatchSink<'_> {
    fn send(&mut self, values: &[f32]) -> nabla::Result<()> {
        self.log.lock().unwrap().push("send");
        self.inner.send(values)
    }
    fn progress(&mut self) -> nabla::Result<()> {
        self.log.lock().unwrap().push("op");
        self.inner.progress()
    }
}

impl Collective for Watch {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, local: &[f64]) -> nabla::Result<Vec<f64>> {
        self.inner.all_gather(local)
    }
    fn all_gather_f32(&self, local: &[f32]) -> nabla::Result<Vec<f32>> {
        self.inner.all_gather_f32(local)
    }
    fn broadcast(&self, buf: &mut [f64]) -> nabla::Result<()> {
        self.inner.broadcast(buf)
    }
    fn all_gather_buckets(
        &self,
        sizes: &[usize],
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> nabla::Result<()>,
        into: &mut Vec<f32>,
    ) -> nabla::Result<()> {
        self.log.lock().unwrap().push("step");
        let log = &self.log;
        self.inner.all_gather_buckets(
            sizes,
            &mut |sink| produce(&mut WatchSink { inner: sink, log }),
            into,
        )
    }
}

#[test]
fn buckets_leave_while_backward_still_runs() {
    let data = TaskData::Class(synthetic::spiral(40, 3, 0.1, 0).unwrap());
    let mut c = config();
    c.max_steps = Some(1);
    c.grad_shards = Some(1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let rank = ThreadGroup::ranks(1).remove(0);
    let group: Box<dyn Collective> = Box::new(Watch {
        inner: rank,
        log: log.clone(),
    });
    let mut t = Trainer::new(c, data)
        .unwrap()
        .with_bucket_values(1)
        .unwrap()
        .with_collective(group)
        .unwrap();
    t.fit(&mut ()).unwrap();
    let log = log.lock().unwrap().join(" ");
    // Six parameters, six buckets; the first (the last layer's bias) leaves before the ops
    // of the layers below have run, the last (the first layer's weight) after them.
    assert_eq!(log.matches("send").count(), 6, "{log}");
    let first = log.find("send").unwrap();
    let last = log.rfind("send").unwrap();
    assert!(log[first..last].matches("op").count() >= 4, "{log}");
}

#[test]
fn a_rank_that_fails_mid_exchange_leaves_no_rank_waiting() {
    let handles: Vec<_> = ThreadGroup::ranks(2)
        .into_iter()
        .map(|rank| {
            std::thread::spawn(move || {
                let me = rank.rank() as f32;
                let mut out = vec![7.0; 3]; // replaced, not appended to
                let sent = |sink: &mut dyn BucketSink| {
                    sink.send(&[me, me])?;
                    if me == 1.0 {
                        sink.send(&[9.0])?; // the wrong length: an error, sent as zeros
                    }
                    sink.send(&[me; 3])
                };
                rank.all_gather_buckets(&[2, 3], &mut { sent }, &mut out)
                    .map(|()| out)
            })
        })
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        got[0].as_ref().unwrap(),
        &vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    let err = got[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("bucket 1 has 1 values; 3 were announced"),
        "{err}"
    );
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

#[test]
fn sum_slices_adds_every_slice_of_every_rank_in_slice_order() {
    // 2 ranks × 2 slices, buckets of 3 and 2 values; slice s sends 10·s + position.
    let handles: Vec<_> = ThreadGroup::ranks(2)
        .into_iter()
        .map(|rank| {
            std::thread::spawn(move || {
                let r = rank.rank();
                let mut out = Vec::new();
                let mut send = |sink: &mut dyn BucketSink| {
                    for j in 0..2 {
                        let s = (2 * r + j) as f32;
                        sink.send(&[10.0 * s, 10.0 * s + 1.0, 10.0 * s + 2.0])?;
                        sink.send(&[10.0 * s + 3.0, 10.0 * s + 4.0])?;
                    }
                    Ok(())
                };
                rank.sum_slices(&[3, 2], 2, &mut send, &mut out)
                    .map(|()| out)
            })
        })
        .collect();
    for h in handles {
        // Σ over s = 0..4 of (10·s + p) = 60 + 4·p.
        assert_eq!(
            h.join().unwrap().unwrap(),
            vec![60.0, 64.0, 68.0, 72.0, 76.0]
        );
    }
}
