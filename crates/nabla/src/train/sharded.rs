//! The data-parallel step: the global batch is cut into `grad_shards` fixed slices; each rank
//! computes the gradients of its slices and sends them in buckets while backward runs, and the
//! group adds all slices in slice order ([`Collective::sum_slices`]). The sum is therefore the same whatever the number of ranks (1, 2, 4… dividing the
//! slice count): training on N ranks is bit-for-bit the computation of one. Dropout masks are
//! drawn from generators reseeded per (step, slice), so they do not depend on the rank either.

use std::ops::Range;
use std::sync::atomic::Ordering;

use super::{BucketSink, Collective, Trainer};
use crate::autograd::{BackwardHook, GradStore};
use crate::data::TaskData;
use crate::error::{Error, Result};
use crate::nn::loss::predict_class;
use crate::optim::{clip_scale, grad_norm};
use crate::profile::span;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// What each slice reports besides its gradient and buffers: loss × rows, correct
/// predictions, finite?, rows.
const STATS: usize = 4;

/// The rows of slice `s` of `m` slices of a batch of `b` rows (the first `b % m` get one more).
pub(super) fn slice(b: usize, m: usize, s: usize) -> Range<usize> {
    let (q, r) = (b / m, b % m);
    let start = s * q + s.min(r);
    start..start + q + usize::from(s < r)
}

impl Trainer {
    /// Puts every dropout generator of the model at a state that depends only on the seed,
    /// the step and the slice, so a slice draws the same masks whichever rank computes it.
    fn reseed_dropout(&mut self, slice: usize) -> Result<()> {
        let state = self.model.extra_state();
        if state.is_empty() {
            return Ok(());
        }
        let seed = self
            .config
            .model
            .as_ref()
            .map_or(self.config.seed, |m| m.seed);
        let base = seed ^ 0x000D_80F0_u64.wrapping_mul(self.state.step + 1);
        let fresh = state
            .keys()
            .enumerate()
            .map(|(i, k)| {
                let seed = base ^ ((slice as u64) << 32) ^ (i as u64).wrapping_mul(0x9E37_79B9);
                (k.clone(), Rng::new(seed).state_text())
            })
            .collect();
        self.model.load_extra_state(&fresh)
    }

    /// Computes this rank's slices of `idx` and sends their gradients to `sink` bucket by
    /// bucket as backward finishes them (slice after slice); returns the stats per slice.
    /// (`mine`: this rank's slice indices.)
    fn local_slices(
        &mut self,
        idx: &[usize],
        m: usize,
        mine: Range<usize>,
        layout: &Buckets,
        sink: &mut dyn BucketSink,
    ) -> Result<Vec<f64>> {
        let params: Vec<Tensor<f32>> = self
            .optimizer
            .params()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        let mut stats = Vec::new();
        let buffers = self.model.named_buffers();
        let start: Vec<Vec<f32>> = buffers
            .iter()
            .map(|(_, b)| b.to_vec())
            .collect::<Result<_>>()?;
        for s in mine {
            let rows = &idx[slice(idx.len(), m, s)];
            let mut out = Outbox::new(layout, sink);
            if rows.is_empty() {
                out.flush()?;
                stats.extend([0.0, 0.0, 1.0, 0.0]);
                stats.extend(start.iter().flatten().map(|&v| f64::from(v)));
                continue;
            }
            // Every slice's forward pass updates the running statistics from the step's start.
            for ((_, b), v) in buffers.iter().zip(&start) {
                b.update_data(|d| d.copy_from_slice(v))?;
            }
            self.reseed_dropout(s)?;
            let (pred, loss) = self.forward(rows)?;
            // The slice's share of the batch mean: Σ over its rows / batch rows.
            let loss = loss.mul_scalar(rows.len() as f64 / idx.len() as f64)?;
            let lv = loss.item()? as f64;
            loss.backward_hooked(&params, &mut out)?;
            out.flush()?;
            let finite = lv.is_finite() && out.finite;
            let correct = match &self.train {
                TaskData::Class(c) => {
                    let pred = predict_class(&pred.detach())?;
                    pred.iter()
                        .zip(rows)
                        .filter(|(p, &i)| **p == c.labels[i])
                        .count()
                }
                TaskData::Reg(_) | TaskData::Text(_) => 0,
            };
            stats.extend([
                lv * idx.len() as f64,
                correct as f64,
                f64::from(u8::from(finite)),
                rows.len() as f64,
            ]);
            for (_, b) in &buffers {
                stats.extend(b.to_vec()?.iter().map(|&v| f64::from(v)));
            }
        }
        Ok(stats)
    }

    /// One data-parallel optimizer step on the global batch `idx`.
    pub(super) fn sharded_step(
        &mut self,
        idx: &[usize],
        m: usize,
    ) -> Result<(GradStore<f32>, f64)> {
        let base = self.config.optimizer.lr();
        self.optimizer
            .set_lr(self.config.schedule.lr_at(base, self.state.step));
        let params: Vec<(String, Tensor<f32>)> = self.optimizer.params().to_vec();
        let (ranks, per) = (self.ranks(), m / self.ranks());
        let layout = Buckets::new(&params, self.bucket_values);
        // A local failure must not leave the other ranks waiting: the buckets it did not send
        // go out as zeros and the failure travels as a flag with the stats.
        let mine = self.rank() * per..(self.rank() + 1) * per;
        let group = self.collective.take(); // (put back below, whatever the outcome)
        let mut local_stats = None;
        let mut gathered = std::mem::take(&mut self.exchange_buf);
        let exchanged = group.as_deref().unwrap_or(&Solo).sum_slices(
            &layout.sizes,
            per,
            &mut |sink| {
                local_stats = Some(self.local_slices(idx, m, mine.clone(), &layout, sink)?);
                Ok(())
            },
            &mut gathered,
        );
        self.collective = group;
        let gathered = exchanged.map(|()| gathered);
        let own_error = gathered.as_ref().err().cloned();
        let buffers = self.model.named_buffers();
        let nbuf: usize = buffers.iter().map(|(_, b)| b.numel()).sum();
        let record = STATS + nbuf;
        let mut stats = local_stats.unwrap_or_else(|| vec![0.0; record * per]);
        stats.push(f64::from(u8::from(own_error.is_some())));
        stats.push(f64::from(u8::from(self.stop.load(Ordering::SeqCst))));
        let all_stats = span("gradient exchange", || match &self.collective {
            Some(c) => c.all_gather(&stats),
            None => Ok(stats),
        })?;
        let per_rank = record * per + 2;
        let flagged = |k: usize| -> Option<usize> {
            (0..ranks).find(|r| all_stats[r * per_rank + per_rank - 2 + k] != 0.0)
        };
        if let Some(e) = own_error {
            return Err(e); // this rank's own error; the others name the rank
        }
        if let Some(r) = flagged(0) {
            return Err(Error::Diverged {
                msg: format!("training failed at step {} on rank {r} (its error is in its output); every rank stops", self.state.step),
            });
        }
        self.stop_agreed = flagged(1).is_some();
        let slice_stats: Vec<&[f64]> = (0..ranks)
            .flat_map(|r| all_stats[r * per_rank..r * per_rank + per_rank - 2].chunks(record))
            .collect();
        if let Some(s) = slice_stats.iter().position(|st| st[2] == 0.0) {
            let what = format!(
                "slice {s} of the batch (rank {}) has a non-finite loss or gradient",
                s / per
            );
            return Err(self.diverged(&what, None));
        }
        let gathered = gathered?;
        set_buffers(&buffers, &slice_stats)?;
        let store = span("gradient exchange", || layout.unpack(&gathered, &params))?;
        self.exchange_buf = gathered; // kept for the next step: no fresh pages to fault in

        // Clipping scales the gradients inside the update (one pass over them fewer).
        let scale = match self.config.clip {
            Some(c) => clip_scale(
                c,
                span("clip", || grad_norm(&store, &self.model.parameters()))?,
            ),
            None => 1.0,
        };
        span("optimizer", || self.optimizer.step_scaled(&store, scale))?;
        let st = &mut self.state;
        st.step += 1;
        st.loss_sum += slice_stats.iter().map(|s| s[0]).sum::<f64>();
        st.correct += slice_stats.iter().map(|s| s[1] as usize).sum::<usize>();
        st.seen += idx.len();
        Ok((store, scale))
    }

    /// This process's rank (0 without a group).
    fn rank(&self) -> usize {
        self.collective.as_ref().map_or(0, |c| c.rank())
    }

    /// Ranks in the group (1 without one).
    pub(super) fn ranks(&self) -> usize {
        self.collective.as_ref().map_or(1, |c| c.size())
    }

    /// Makes every rank start from rank 0's weights.
    pub(super) fn broadcast_weights(&mut self) -> Result<()> {
        let Some(c) = &self.collective else {
            return Ok(());
        };
        for p in self.model.parameters() {
            let mut buf: Vec<f64> = p.to_vec()?.iter().map(|&v| v as f64).collect();
            c.broadcast(&mut buf)?;
            p.update_data(|d| d.iter_mut().zip(&buf).for_each(|(a, &b)| *a = b as f32))?;
        }
        Ok(())
    }
}

/// The running statistics after a sliced step: every slice's forward pass updated them from
/// the step's start (with its own batch statistics); the result is the mean of those updates
/// over the non-empty slices, added in slice order — the same on every rank and for any
/// number of ranks. (`slices`: each slice's record, its buffers' values after [`STATS`].)
fn set_buffers(buffers: &[(String, Tensor<f32>)], slices: &[&[f64]]) -> Result<()> {
    if buffers.is_empty() {
        return Ok(());
    }
    let used: Vec<&[f64]> = slices.iter().filter(|s| s[3] > 0.0).copied().collect();
    let mut at = STATS;
    for (_, b) in buffers {
        let n = b.numel();
        let mean: Vec<f32> = (0..n)
            .map(|j| {
                let sum: f64 = used.iter().map(|s| s[at + j]).sum();
                (sum / used.len().max(1) as f64) as f32
            })
            .collect();
        b.update_data(|d| d.copy_from_slice(&mean))?;
        at += n;
    }
    Ok(())
}

/// Gradients travel in buckets of about this many values (256 KiB of f32), last layers first.
pub(super) const BUCKET_VALUES: usize = 1 << 16;

/// The parameters (indices in optimizer order) grouped into buckets in the order backward
/// finishes them — reverse parameter order — each closed before it would pass `cap` values
/// (a larger parameter is a bucket of its own).
struct Buckets {
    members: Vec<Vec<usize>>,
    sizes: Vec<usize>,
    numels: Vec<usize>,
}

impl Buckets {
    fn new(params: &[(String, Tensor<f32>)], cap: usize) -> Self {
        let numels: Vec<usize> = params.iter().map(|(_, p)| p.numel()).collect();
        let (mut members, mut sizes) = (Vec::new(), Vec::new());
        let (mut bucket, mut size) = (Vec::new(), 0);
        for i in (0..params.len()).rev() {
            if !bucket.is_empty() && size + numels[i] > cap {
                members.push(std::mem::take(&mut bucket));
                sizes.push(std::mem::take(&mut size));
            }
            bucket.push(i);
            size += numels[i];
        }
        if !bucket.is_empty() {
            members.push(bucket);
            sizes.push(size);
        }
        Buckets {
            members,
            sizes,
            numels,
        }
    }

    /// The gradients of `params` from the summed buckets (bucket after bucket, each holding
    /// its members in order).
    fn unpack(&self, summed: &[f32], params: &[(String, Tensor<f32>)]) -> Result<GradStore<f32>> {
        let mut store = GradStore::new();
        let mut at = 0;
        for members in &self.members {
            for &p in members {
                let g = summed[at..at + self.numels[p]].to_vec();
                at += self.numels[p];
                store.insert(&params[p].1, Tensor::from_vec(g, params[p].1.shape())?);
            }
        }
        Ok(store)
    }
}

/// One slice's gradients on their way out: each parameter's gradient is kept (not copied)
/// when backward finishes it, and each bucket is sent as soon as all of its parameters are in.
struct Outbox<'l, 's> {
    layout: &'l Buckets,
    sink: &'s mut dyn BucketSink,
    /// `Some(None)`: final without a gradient (sent as zeros).
    staged: Vec<Option<Option<Tensor<f32>>>>,
    next: usize,
    buf: Vec<f32>,
    finite: bool,
}

impl<'l, 's> Outbox<'l, 's> {
    fn new(layout: &'l Buckets, sink: &'s mut dyn BucketSink) -> Self {
        Outbox {
            layout,
            sink,
            staged: vec![None; layout.numels.len()],
            next: 0,
            buf: Vec::new(),
            finite: true,
        }
    }

    /// Sends the buckets whose parameters are all in, in bucket order.
    fn send_ready(&mut self) -> Result<()> {
        while let Some(members) = self.layout.members.get(self.next) {
            if members.iter().any(|&p| self.staged[p].is_none()) {
                return Ok(());
            }
            if let [p] = members[..] {
                if let Some(Some(g)) = self.staged[p].take() {
                    self.sink.send(&g.data()?)?; // one parameter: straight from its storage
                    self.next += 1;
                    continue;
                }
            }
            self.buf.clear();
            for &p in members {
                match self.staged[p].take().flatten() {
                    Some(g) => self.buf.extend_from_slice(&g.data()?),
                    None => self.buf.resize(self.buf.len() + self.layout.numels[p], 0.0),
                }
            }
            self.sink.send(&self.buf)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Sends everything not sent yet (parameters without a gradient as zeros).
    fn flush(&mut self) -> Result<()> {
        let rest = self.layout.members.get(self.next..).unwrap_or_default();
        for &p in rest.iter().flatten() {
            self.staged[p].get_or_insert(None);
        }
        self.send_ready()
    }
}

impl BackwardHook<f32> for Outbox<'_, '_> {
    fn ready(&mut self, index: usize, grad: Option<&Tensor<f32>>) -> Result<()> {
        if let Some(g) = grad {
            self.finite &= g.all_finite();
        }
        self.staged[index] = Some(grad.cloned());
        self.send_ready()
    }

    fn after_op(&mut self) -> Result<()> {
        self.sink.progress()
    }
}

/// A group of one: what a single process with `grad_shards` exchanges with.
struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>> {
        Ok(local.to_vec())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }

    fn broadcast(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
}
