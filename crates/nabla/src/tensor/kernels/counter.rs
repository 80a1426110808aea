//! Counter-based dropout masks: value `i` of a mask seeded `seed` is kept (and scaled by
//! `1/(1 − p)`) iff a 32-bit hash of (`seed`, `i`) is at least `⌈p·2³²⌉`, else 0 — as PyTorch's
//! Philox masks, a value depends on nothing but its index. So a mask is computed in parallel
//! and vectorised with the same bits on any thread count, and a fused kernel (attention's,
//! `attention.rs`) makes each tile's values where it needs them, in its forward pass and again
//! in its backward, instead of storing them.

use crate::tensor::Float;

/// Dropout by a counter-based mask: drop probability `p` in `[0, 1)`, the mask's `seed`.
/// Value `i` keeps iff `fmix32(fmix32(lo(i) ^ s₀) + (hi(i) ^ s₁))` — `lo`/`hi` the index's
/// 32-bit halves, `s₀`/`s₁` the seed's — is at least `⌈p·2³²⌉` (p within 2⁻³² of 1 keeps
/// nothing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keep {
    /// The drop probability.
    pub p: f64,
    /// The mask's seed.
    pub seed: u64,
}

/// MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~½.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Values per run of [`Keep::mask`]: runs start on multiples of it, so an index's upper 32
/// bits are the same through a run.
pub(crate) const MASK_RUN: usize = 4096;

impl Keep {
    /// The hash threshold, or `None` where nothing is kept (compared as 32-bit values: a
    /// 64-bit unsigned compare has no AVX2 instruction, and the loops ran one value at a time).
    fn threshold(&self) -> Option<u32> {
        u32::try_from((self.p * 4_294_967_296.0).ceil() as u64).ok()
    }

    /// What a kept value is multiplied by: `1/(1 − p)`.
    pub fn scale<T: Float>(&self) -> T {
        T::from_f64(1.0 / (1.0 - self.p))
    }

    /// The first `n` values of the mask (each [`Keep::scale`] or 0). Runs of [`MASK_RUN`]
    /// values are shared among threads from 2¹⁶ values on and vectorised on the active tier;
    /// the values depend on neither.
    pub fn mask<T: Float>(&self, n: usize) -> Vec<T> {
        let mut out = vec![T::ZERO; n];
        let Some(threshold) = self.threshold() else {
            return out;
        };
        let (scale, (s0, s1)) = (self.scale::<T>(), halves(self.seed));
        super::for_each_run_above(&mut out, MASK_RUN, super::ELEMENTWISE_THRESHOLD, |r, o| {
            let (lo, hi) = halves((r * MASK_RUN) as u64);
            let h1 = hi ^ s1;
            // A `move` closure: values captured by reference are read through pointers the
            // compiler cannot tell from the output's, and the loop stays scalar.
            crate::isa::vectorized(
                #[inline(always)]
                move || {
                    for (j, v) in o.iter_mut().enumerate() {
                        let h = fmix32(fmix32(lo.wrapping_add(j as u32) ^ s0).wrapping_add(h1));
                        *v = if h >= threshold { scale } else { T::ZERO };
                    }
                },
            )
        });
        out
    }

    /// A tile of the mask, transposed: `out[j·L + l]` is value `rows[l] + j` for `j <
    /// cols` (`L` lanes, one mask row per lane: the layout of attention's transposed score
    /// tiles). Inlined into the caller's vectorised loop.
    #[inline(always)]
    pub(crate) fn tile<T: Float, const L: usize>(
        &self,
        rows: &[u64; L],
        cols: usize,
        out: &mut [T],
    ) {
        let out = &mut out[..cols * L];
        let (scale, (s0, s1)) = (self.scale::<T>(), halves(self.seed));
        let Some(threshold) = self.threshold() else {
            out.fill(T::ZERO);
            return;
        };
        let last = rows.iter().max().copied().unwrap_or(0);
        if last.checked_add(cols as u64).is_some_and(|e| e <= 1 << 32) {
            // Every index below 2³²: the high halves are 0, the lanes 32-bit.
            let lo: [u32; L] = std::array::from_fn(|l| rows[l] as u32);
            let h1 = s1;
            for (j, o) in out.chunks_exact_mut(L).enumerate() {
                for l in 0..L {
                    let h = fmix32(fmix32(lo[l].wrapping_add(j as u32) ^ s0).wrapping_add(h1));
                    o[l] = if h >= threshold { scale } else { T::ZERO };
                }
            }
            return;
        }
        for (j, o) in out.chunks_exact_mut(L).enumerate() {
            for l in 0..L {
                let (lo, hi) = halves(rows[l].wrapping_add(j as u64));
                let h = fmix32(fmix32(lo ^ s0).wrapping_add(hi ^ s1));
                o[l] = if h >= threshold { scale } else { T::ZERO };
            }
        }
    }
}

/// The low and high 32-bit halves of `x`.
#[inline(always)]
fn halves(x: u64) -> (u32, u32) {
    (x as u32, (x >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks keep 1 − p of the values (within 4σ), each scaled by 1/(1 − p), the same on
    /// one thread as on two, and differ between seeds and between positions.
    #[test]
    fn masks_keep_the_expected_share_on_any_thread_count() {
        let n = 1 << 20;
        for p in [0.1, 0.5, 0.9] {
            let keep = Keep { p, seed: 42 };
            let scale = (1.0 / (1.0 - p)) as f32;
            let m = keep.mask::<f32>(n);
            let kept = m.iter().filter(|&&v| v == scale).count();
            assert_eq!(kept + m.iter().filter(|&&v| v == 0.0).count(), n);
            let want = (1.0 - p) * n as f64;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (kept as f64 - want).abs() < 4.0 * sigma,
                "p {p}: kept {kept} of {n}"
            );
            let one = super::super::with_threads(1, || keep.mask::<f32>(n));
            assert_eq!(one, m, "p {p}");
            assert_ne!(Keep { p, seed: 43 }.mask::<f32>(n), m, "p {p}");
            // Neighbouring runs are not copies of one another.
            assert_ne!(m[..MASK_RUN], m[MASK_RUN..2 * MASK_RUN]);
        }
        let all = Keep { p: 0.0, seed: 7 }.mask::<f64>(1000);
        assert!(all.iter().all(|&v| v == 1.0));
        let none = Keep {
            p: 1.0 - 1e-12,
            seed: 7,
        };
        assert!(none.mask::<f64>(1000).iter().all(|&v| v == 0.0));
    }

    /// A transposed tile holds the mask's values at its rows' indices, below 2³² (the 32-bit
    /// lanes) and across and above it (64-bit indices).
    #[test]
    fn tiles_are_the_masks_values_at_their_indices() {
        let keep = Keep { p: 0.3, seed: 9 };
        let full = keep.mask::<f64>(40_000);
        let rows: [u64; 4] = [0, 9_000, 20_000, 39_000];
        let mut tile = vec![0.0; 1000 * 4];
        keep.tile(&rows, 1000, &mut tile);
        for j in 0..1000 {
            for l in 0..4 {
                assert_eq!(
                    tile[j * 4 + l],
                    full[rows[l] as usize + j],
                    "row {l}, column {j}"
                );
            }
        }
        // Indices around 2³²: one value at a time, as a mask's run computes them.
        let at = |i: u64| {
            let (lo, hi) = halves(i);
            let (s0, s1) = halves(keep.seed);
            let h = fmix32(fmix32(lo ^ s0).wrapping_add(hi ^ s1));
            if h >= keep.threshold().unwrap_or(u32::MAX) {
                keep.scale::<f64>()
            } else {
                0.0
            }
        };
        let rows: [u64; 2] = [(1 << 32) - 5, (1 << 33) + 7];
        let mut tile = vec![0.0; 10 * 2];
        keep.tile(&rows, 10, &mut tile);
        for j in 0..10 {
            for l in 0..2 {
                assert_eq!(
                    tile[j * 2 + l],
                    at(rows[l] + j as u64),
                    "row {l}, column {j}"
                );
            }
        }
        // Up to 2³² exactly (the 32-bit lanes) and one past it (64-bit indices).
        for cols in [10, 11] {
            let mut tile = vec![0.0; cols];
            keep.tile(&[(1 << 32) - 10], cols, &mut tile);
            for (j, v) in tile.iter().enumerate() {
                assert_eq!(
                    *v,
                    at((1 << 32) - 10 + j as u64),
                    "{cols} columns, column {j}"
                );
            }
        }
        // The same function as the runs of `mask` below 2³².
        assert!((0..40_000u64).all(|i| at(i) == full[i as usize]));
    }
}
