//! What data-parallel training needs from its processes: rank, size, an all-gather and a
//! broadcast. [`crate::dist::MpiWorld`] (feature `mpi`) implements it over MPI;
//! [`ThreadGroup`] over threads of one process (for tests and for trying it without MPI).

use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// A group of processes (ranks `0..size`) that train one model together.
pub trait Collective {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `local` (the same length on all ranks), concatenated in rank order.
    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>>;
    /// [`Collective::all_gather`] of f32 values (gradients: half the bytes).
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Rank 0's `buf` on every rank.
    fn broadcast(&self, buf: &mut [f64]) -> Result<()>;

    /// All-gathers of buckets that `produce` hands to its sink one at a time, so that an
    /// implementation can exchange a bucket while `produce` computes the next (overlap of
    /// communication with backward). `sizes`: the length of each bucket, in the order they are
    /// sent, the same on every rank. Writes to `into` (resized; reuse it across calls to save
    /// the allocation) bucket by bucket every rank's values in rank order (bucket k takes
    /// `size() · sizes[k]` values). If `produce` fails or sends fewer buckets, the rest go out
    /// as zeros — no rank is left waiting — and its error is returned after the exchange. The
    /// default exchanges everything after `produce` returns.
    fn all_gather_buckets(
        &self,
        sizes: &[usize],
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
        into: &mut Vec<f32>,
    ) -> Result<()> {
        let mut sink = Collect {
            cursor: Cursor::new(sizes),
            values: Vec::new(),
        };
        let outcome = produce(&mut sink);
        let missing = sink.cursor.missing();
        sink.values.extend(std::iter::repeat_n(0.0, missing));
        let all = self.all_gather_f32(&sink.values)?;
        outcome?;
        // Rank-major (every rank's buckets) to bucket-major (every rank's bucket k).
        let (n, total) = (self.size(), sink.values.len());
        into.clear();
        let mut at = 0;
        for &len in sizes {
            for r in 0..n {
                into.extend_from_slice(&all[r * total + at..r * total + at + len]);
            }
            at += len;
        }
        Ok(())
    }

    /// The data-parallel gradient: Σ over all `per · size()` slices, in slice order, of values
    /// sent in buckets. Each rank's `produce` sends its `per` slices' buckets (slice after
    /// slice; each slice's buckets in the order of `sizes`, which is the same on every rank);
    /// rank r's j-th slice is slice `r·per + j`. Writes to `into`, bucket after bucket, the
    /// sums: the same values on every rank and for every rank count. Failures as in
    /// [`Collective::all_gather_buckets`]. The default gathers every slice and adds them
    /// locally ((N−1)·per times the gradient's bytes received per rank); `MpiWorld` (feature
    /// `mpi`) reduces in fixed order across ranks instead (2·(N−1)/N times for one slice per
    /// rank).
    fn sum_slices(
        &self,
        sizes: &[usize],
        per: usize,
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
        into: &mut Vec<f32>,
    ) -> Result<()> {
        gather_then_sum(self, sizes, per, produce, into)
    }
}

/// [`Collective::sum_slices`] by gathering every slice ([`Collective::all_gather_buckets`])
/// and adding them here.
pub(crate) fn gather_then_sum<C: Collective + ?Sized>(
    group: &C,
    sizes: &[usize],
    per: usize,
    produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
    into: &mut Vec<f32>,
) -> Result<()> {
    let all: Vec<usize> = (0..per).flat_map(|_| sizes.iter().copied()).collect();
    group.all_gather_buckets(&all, produce, into)?;
    sum_gathered(into, sizes, per, group.size());
    Ok(())
}

/// In place: `into` holds what [`Collective::all_gather_buckets`] wrote for `per` slices per
/// rank of buckets `sizes` on `n` ranks; afterwards its first `Σ sizes` values are, bucket
/// after bucket, the sum over the `per · n` slices in slice order (slice `r·per + j` is rank
/// r's j-th). Every destination lies at or before the values it still has to read.
pub(crate) fn sum_gathered(into: &mut Vec<f32>, sizes: &[usize], per: usize, n: usize) {
    let total: usize = sizes.iter().sum();
    let mut prefix = 0;
    for &len in sizes {
        // Slice s = r·per + j starts at `start(s)`; slice 0 is copied down first (its values
        // lie at or after the destination), the others are added in slice order.
        let start = |s: usize| n * ((s % per) * total + prefix) + (s / per) * len;
        into.copy_within(start(0)..start(0) + len, prefix);
        let (dest, rest) = into.split_at_mut(prefix + len);
        let dest = &mut dest[prefix..];
        for s in 1..per * n {
            let from = start(s) - (prefix + len);
            dest.iter_mut()
                .zip(&rest[from..from + len])
                .for_each(|(a, b)| *a += b);
        }
        prefix += len;
    }
    into.truncate(total);
}

/// Where [`Collective::all_gather_buckets`]' producer sends its buckets.
pub trait BucketSink {
    /// Hands over the next bucket (exactly its announced length).
    fn send(&mut self, values: &[f32]) -> Result<()>;
    /// Lets exchanges already started make progress (MPI progresses only inside its calls).
    fn progress(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Checks the buckets a producer sends against the announced sizes.
pub(crate) struct Cursor<'s> {
    sizes: &'s [usize],
    next: usize,
}

impl<'s> Cursor<'s> {
    pub(crate) fn new(sizes: &'s [usize]) -> Self {
        Cursor { sizes, next: 0 }
    }

    /// Accepts a bucket of `len` values (the next one's length) and returns its index.
    pub(crate) fn accept(&mut self, len: usize) -> Result<usize> {
        let k = self.next;
        match self.sizes.get(k) {
            Some(&want) if want == len => {
                self.next += 1;
                Ok(k)
            }
            Some(&want) => Err(Error::arg(
                "all_gather_buckets",
                format!("bucket {k} has {len} values; {want} were announced"),
            )),
            None => Err(Error::arg(
                "all_gather_buckets",
                format!(
                    "{} buckets were announced; a bucket more was sent",
                    self.sizes.len()
                ),
            )),
        }
    }

    /// The indices of the buckets not sent (they go out as zeros).
    pub(crate) fn rest(&self) -> std::ops::Range<usize> {
        self.next..self.sizes.len()
    }

    /// How many values the buckets not sent hold.
    fn missing(&self) -> usize {
        self.sizes[self.next..].iter().sum()
    }
}

struct Collect<'s> {
    cursor: Cursor<'s>,
    values: Vec<f32>,
}

impl BucketSink for Collect<'_> {
    fn send(&mut self, values: &[f32]) -> Result<()> {
        self.cursor.accept(values.len())?;
        self.values.extend_from_slice(values);
        Ok(())
    }
}

/// Ranks as threads of one process.
pub struct ThreadGroup;

struct Shared {
    size: usize,
    state: Mutex<Round>,
    turn: Condvar,
}

#[derive(Default)]
struct Round {
    generation: u64,
    arrived: usize,
    slots: Vec<Vec<f64>>,
    result: Arc<Vec<f64>>,
}

/// One rank of a [`ThreadGroup`].
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `size` ranks, one per thread that will use it.
    pub fn ranks(size: usize) -> Vec<ThreadRank> {
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Round {
                slots: vec![Vec::new(); size],
                ..Default::default()
            }),
            turn: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ThreadRank {
    /// Deposits `local`; when every rank has, returns all of them in rank order.
    fn exchange(&self, local: &[f64]) -> Result<Arc<Vec<f64>>> {
        let poisoned = |_| Error::arg("ThreadGroup", "a rank panicked");
        let s = &self.shared;
        let mut round = s.state.lock().map_err(poisoned)?;
        let generation = round.generation;
        round.slots[self.rank] = local.to_vec();
        round.arrived += 1;
        if round.arrived == s.size {
            round.result = Arc::new(round.slots.concat());
            round.arrived = 0;
            round.generation += 1;
            s.turn.notify_all();
        } else {
            while round.generation == generation {
                round = s.turn.wait(round).map_err(poisoned)?;
            }
        }
        Ok(round.result.clone())
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>> {
        Ok(self.exchange(local)?.to_vec())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        let wide: Vec<f64> = local.iter().map(|&v| v as f64).collect();
        Ok(self.exchange(&wide)?.iter().map(|&v| v as f32).collect())
    }

    fn broadcast(&self, buf: &mut [f64]) -> Result<()> {
        let all = self.exchange(buf)?;
        buf.copy_from_slice(&all[..buf.len()]);
        Ok(())
    }

    /// Exchanges each bucket as soon as it is sent (the ranks are threads: nothing to overlap,
    /// but the buckets travel one by one, as over MPI).
    fn all_gather_buckets(
        &self,
        sizes: &[usize],
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
        into: &mut Vec<f32>,
    ) -> Result<()> {
        struct Each<'r, 's, 'o> {
            rank: &'r ThreadRank,
            cursor: Cursor<'s>,
            out: &'o mut Vec<f32>,
        }
        impl BucketSink for Each<'_, '_, '_> {
            fn send(&mut self, values: &[f32]) -> Result<()> {
                self.cursor.accept(values.len())?;
                let all = self.rank.all_gather_f32(values)?;
                self.out.extend(all);
                Ok(())
            }
        }
        into.clear();
        let mut sink = Each {
            rank: self,
            cursor: Cursor::new(sizes),
            out: into,
        };
        let outcome = produce(&mut sink);
        for k in sink.cursor.rest() {
            let all = self.all_gather_f32(&vec![0.0; sizes[k]])?;
            sink.out.extend(all);
        }
        outcome
    }
}
