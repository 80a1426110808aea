//! The data-parallel step: the global batch is cut into `grad_shards` fixed slices; each rank
//! computes the gradients of its slices, every rank gathers all of them and adds them in slice
//! order. The sum is therefore the same whatever the number of ranks (1, 2, 4… dividing the
//! slice count): training on N ranks is bit-for-bit the computation of one. Dropout masks are
//! drawn from generators reseeded per (step, slice), so they do not depend on the rank either.

use std::ops::Range;
use std::sync::atomic::Ordering;

use super::*;
use crate::autograd::GradStore;

/// What each slice reports besides its gradient: loss × rows, correct predictions, finite?
const STATS: usize = 3;

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
        let base = self.config.model.seed ^ 0x000D_80F0_u64.wrapping_mul(self.state.step + 1);
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

    /// This rank's slices of `idx`: flat gradients (parameter order) and stats per slice.
    fn local_slices(&mut self, idx: &[usize], m: usize) -> Result<(Vec<f32>, Vec<f64>)> {
        let (rank, size) = self
            .collective
            .as_ref()
            .map_or((0, 1), |c| (c.rank(), c.size()));
        let per = m / size;
        let params: Vec<Tensor<f32>> = self
            .optimizer
            .params()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        let (mut grads, mut stats) = (Vec::new(), Vec::new());
        for s in rank * per..(rank + 1) * per {
            let rows = &idx[slice(idx.len(), m, s)];
            if rows.is_empty() {
                for p in &params {
                    grads.extend(std::iter::repeat_n(0.0, p.numel()));
                }
                stats.extend([0.0, 0.0, 1.0]);
                continue;
            }
            self.reseed_dropout(s)?;
            let (out, loss) = self.forward(rows)?;
            // The slice's share of the batch mean: Σ over its rows / batch rows.
            let loss = loss.mul_scalar(rows.len() as f64 / idx.len() as f64)?;
            let lv = loss.item()? as f64;
            let g = loss.backward()?;
            let mut finite = lv.is_finite();
            for p in &params {
                match g.get(p) {
                    Some(t) => {
                        finite &= t.all_finite();
                        grads.extend(t.to_vec()?);
                    }
                    None => grads.extend(std::iter::repeat_n(0.0, p.numel())),
                }
            }
            let correct = match &self.train {
                TaskData::Class(c) => {
                    let pred = predict_class(&out.detach())?;
                    pred.iter()
                        .zip(rows)
                        .filter(|(p, &i)| **p == c.labels[i])
                        .count()
                }
                TaskData::Reg(_) => 0,
            };
            stats.extend([
                lv * idx.len() as f64,
                correct as f64,
                f64::from(u8::from(finite)),
            ]);
        }
        Ok((grads, stats))
    }

    /// One data-parallel optimizer step on the global batch `idx`.
    pub(super) fn sharded_step(&mut self, idx: &[usize], m: usize) -> Result<GradStore<f32>> {
        let base = self.config.optimizer.lr();
        self.optimizer
            .set_lr(self.config.schedule.lr_at(base, self.state.step));
        let params: Vec<(String, Tensor<f32>)> = self.optimizer.params().to_vec();
        let n: usize = params.iter().map(|(_, p)| p.numel()).sum();
        // A local failure must not leave the other ranks waiting: it travels as a flag.
        let local = self.local_slices(idx, m);
        let own_error = local.as_ref().err().cloned();
        let failed = own_error.is_some();
        let (grads, mut stats) = local.unwrap_or_else(|_| {
            let per = m / self.ranks();
            (vec![0.0; n * per], vec![0.0; STATS * per])
        });
        stats.push(f64::from(u8::from(failed)));
        stats.push(f64::from(u8::from(self.stop.load(Ordering::SeqCst))));
        let (all_grads, all_stats) = match &self.collective {
            Some(c) => (c.all_gather_f32(&grads)?, c.all_gather(&stats)?),
            None => (grads, stats),
        };
        let per_rank = STATS * m / self.ranks() + 2;
        let ranks = self.ranks();
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
        let slice_stats: Vec<&[f64]> = (0..self.ranks())
            .flat_map(|r| all_stats[r * per_rank..r * per_rank + per_rank - 2].chunks(STATS))
            .collect();
        if let Some(s) = slice_stats.iter().position(|st| st[2] == 0.0) {
            let what = format!(
                "slice {s} of the batch (rank {}) has a non-finite loss or gradient",
                s / (m / self.ranks())
            );
            return Err(self.diverged(&what, None));
        }
        // Σ over slices, in slice order: the same on every rank and for every rank count.
        let mut sum = all_grads[..n].to_vec();
        for s in 1..m {
            for (a, b) in sum.iter_mut().zip(&all_grads[s * n..(s + 1) * n]) {
                *a += b;
            }
        }
        let mut store = GradStore::new();
        let mut at = 0;
        for (_, p) in &params {
            let g = Tensor::from_vec(sum[at..at + p.numel()].to_vec(), p.shape())?;
            at += p.numel();
            store.insert(p, g);
        }
        if let Some(c) = self.config.clip {
            clip_grad_norm(&mut store, &self.model.parameters(), c)?;
        }
        self.optimizer.step(&store)?;
        let st = &mut self.state;
        st.step += 1;
        st.loss_sum += slice_stats.iter().map(|s| s[0]).sum::<f64>();
        st.correct += slice_stats.iter().map(|s| s[1] as usize).sum::<usize>();
        st.seen += idx.len();
        Ok(store)
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
