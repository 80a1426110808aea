//! Direct f32 convolution for stride 1 and dilation 1 on the AVX-512 and AVX2 tiers: no
//! column matrix. Each sample's input is copied once into a zero-padded buffer (`[c, h + 2·ph,
//! w + 2·pw]`); in it, the receptive-field value of kernel tap `(ci, ki, kj)` for output
//! position `(oy, ox)` lies at `tap(ci, ki, kj) + oy·wp + ox`, so the column matrix's rows are
//! the padded planes shifted by one offset per tap (an offset table stands in for it). The
//! register tiles then read the input straight from that buffer:
//!
//! - **forward** (and the input gradient, which is the forward convolution of the padded output
//!   gradient with the flipped, transposed kernel): a tile of `R` output channels × `V`
//!   vectors of output positions (a vector holds up to `LANES` positions of one output row),
//!   the bias in its accumulators, one multiply-add per tap and accumulator, the tap order
//!   ascending, written to the output with lane masks (12 × 2 on AVX-512, 6 × 2 on AVX2: on the
//!   Xeon these ran 7% and ~50% faster than 8 × 3 and 4 × 3);
//! - **weight gradient**: a tile of `R` output channels × `Q` taps whose accumulators run along
//!   the output positions of a chunk of samples (lanes masked past each row's end in the input;
//!   the output gradient copied per row tile into whole, aligned vectors zeroed past the row's
//!   end, so that only the input's loads, shifted by each tap, are unaligned), summed across
//!   lanes at the end of the chunk (8 × 3 on AVX-512, 4 × 3 on AVX2).
//!
//! Every output value is computed the same way whichever thread computes it (forward: per
//! sample; weight gradient: per chunk of samples fixed by the shapes, chunks added in order), so
//! results are bit-identical for any thread count. The forward pass gives the same bits on both
//! tiers (the same multiply-adds in the same order per element); the weight gradient's lane sums
//! differ between 8 and 16 lanes, by rounding. Against the column-matrix path, results agree to
//! rounding (tested in `tests`).

use super::conv::{with_scratch, ConvGeom};
use crate::isa::{self, Isa};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The most values of padded input one thread keeps (16 MB); larger samples take the
/// column-matrix path. The Winograd transform's own scratch (bordered input, transformed
/// blocks, outputs) is held to the same bound, on top of it.
const PAD_MAX: usize = 1 << 22;
/// Samples whose weight-gradient contributions are summed in one chunk (at most).
const CHUNK_SAMPLES: usize = 8;

/// The vector instructions of one tier, as the tiles use them.
trait Lanes {
    /// Lanes per vector.
    const LANES: usize;
    /// Vectors of output channels per register tile of the Winograd products (2 or 4).
    const WIDE: usize;
    /// A vector of f32 lanes.
    type V: Copy;
    /// Which lanes of a vector are live (the first `n`).
    type M: Copy;
    /// Safety of every method: the CPU has the tier's instructions; pointers are valid for the
    /// live lanes (and for all lanes in `load`).
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn load_live(p: *const f32, m: Self::M) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn store_live(p: *mut f32, m: Self::M, v: Self::V);
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn live(n: usize) -> Self::M;
    unsafe fn sum(v: Self::V) -> f32;
    /// `acc` with a NaN in every lane where `v` holds ±∞ or NaN (`acc | (v − v)`).
    unsafe fn flag_nonfinite(acc: Self::V, v: Self::V) -> Self::V;
    /// Whether any lane of `v` is NaN.
    unsafe fn any_nan(v: Self::V) -> bool;
    /// Copies an 8 × 8 block transposed: `dst[j·ds + i] = src[i·ss + j]`; returns whether
    /// every value is finite.
    unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) -> bool;
    /// `pad_planes` (in `conv_direct_x86.rs`) compiled for this tier.
    unsafe fn pad(p: &Plan, g: &ConvGeom, x: &[f32], buf: &mut [f32]) -> bool;
    /// [`wgt_tile`] compiled on its own for this tier (inlined into the group loop, its
    /// accumulators spilled to the stack).
    unsafe fn wgt_tile<const R: usize, const Q: usize, const MASKED: bool>(
        items: &[(usize, Self::M)],
        t: &WgtTile,
        acc: *mut Self::V,
    );
}

#[cfg(target_arch = "x86_64")]
#[path = "conv_direct_x86.rs"]
mod x86;

#[path = "conv_winograd.rs"]
mod winograd;

/// The tier the direct kernels run on: a value exists only where the CPU runs it (made by
/// [`Tier::active`], or in tests from the detected tier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Avx512,
    Avx2,
}

impl Tier {
    fn active() -> Option<Tier> {
        if !cfg!(target_arch = "x86_64") {
            return None;
        }
        match isa::active() {
            Isa::Avx512 => Some(Tier::Avx512),
            Isa::Avx2 => Some(Tier::Avx2),
            Isa::Scalar => None,
        }
    }
    fn lanes(self) -> usize {
        match self {
            Tier::Avx512 => 16,
            Tier::Avx2 => 8,
        }
    }
}

/// The padded geometry of one convolution that the direct kernels run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    tier: Tier,
    /// Padded plane height and width, and the values of one padded sample (plus the slack a
    /// full vector may read past the last row).
    hp: usize,
    wp: usize,
    sample: usize,
    /// Vectors per output row and per output plane.
    per_row: usize,
    vectors: usize,
}

impl Plan {
    /// The plan for `g`, or `None` where the direct kernels do not apply (another tier, a
    /// stride or dilation other than 1, a 1×1 kernel, or a padded sample over [`PAD_MAX`]).
    fn new(g: &ConvGeom, tier: Tier) -> Option<Plan> {
        let o = g.opts;
        if o.stride != (1, 1) || o.dilation != (1, 1) || g.kh * g.kw == 1 || g.l() == 0 {
            return None;
        }
        let (hp, wp) = (g.h + 2 * o.padding.0, g.w + 2 * o.padding.1);
        let lanes = tier.lanes();
        let sample = g.c.checked_mul(hp)?.checked_mul(wp)?.checked_add(lanes)?;
        if sample > PAD_MAX {
            return None;
        }
        let per_row = g.ow.div_ceil(lanes);
        Some(Plan {
            tier,
            hp,
            wp,
            sample,
            per_row,
            vectors: g.oh * per_row,
        })
    }

    /// Offsets in a padded sample of every tap of one group, `(ci, ki, kj)` in weight order.
    fn taps(&self, g: &ConvGeom) -> Vec<usize> {
        let cg = g.c / g.opts.groups;
        let mut taps = Vec::with_capacity(cg * g.kh * g.kw);
        for ci in 0..cg {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    taps.push((ci * self.hp + ki) * self.wp + kj);
                }
            }
        }
        taps
    }

    /// Vector `j` of an output plane: its offset in the output plane, in the padded input
    /// plane (tap 0), and its live lanes.
    fn vector(&self, g: &ConvGeom, j: usize) -> (usize, usize, usize) {
        let lanes = self.tier.lanes();
        let (oy, x0) = (j / self.per_row, (j % self.per_row) * lanes);
        (oy * g.ow + x0, oy * self.wp + x0, lanes.min(g.ow - x0))
    }

    /// Copies one sample's planes `x` (`[c, h, w]`) into `buf` with zero borders (and zero
    /// slack): every value of the padded sample written once, each row by the tier's vector
    /// moves (`pad_planes` in `conv_direct_x86.rs`; a library `memset`/`memcpy` call per
    /// border and row cost 4% of a CNN's step). Returns whether every value of `x` is finite.
    fn pad(&self, g: &ConvGeom, x: &[f32], buf: &mut [f32]) -> bool {
        assert!(
            x.len() >= g.c * g.h * g.w && buf.len() >= self.sample,
            "internal: conv_direct pad sizes disagree"
        );
        // SAFETY: a `Tier` exists only where the CPU runs it; the sizes are checked above.
        unsafe {
            match self.tier {
                #[cfg(target_arch = "x86_64")]
                Tier::Avx512 => <x86::Avx512 as Lanes>::pad(self, g, x, buf),
                #[cfg(target_arch = "x86_64")]
                Tier::Avx2 => <x86::Avx2 as Lanes>::pad(self, g, x, buf),
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no direct kernels off x86-64"),
            }
        }
    }
}

/// A forward tile's operands: `R` weight rows (stride `lda`, one value per tap), `V` input
/// vectors (tap 0; the tap offsets added), `V` output vectors (row 0; rows `ldc` apart).
struct FwdTile {
    taps: *const usize,
    k: usize,
    a: *const f32,
    lda: usize,
    bias: *const f32,
    b: [*const f32; 4],
    c: [*mut f32; 4],
    live: [usize; 4],
    ldc: usize,
}

/// One forward tile of `R` rows × `V` vectors (the vectors past `live`'s non-zero ones are
/// computed from vector 0's input and not stored).
///
/// # Safety
/// The tier's instructions exist; the pointers cover the tile's reads and writes.
#[inline(always)]
unsafe fn fwd_tile<S: Lanes, const R: usize, const V: usize>(t: &FwdTile) {
    let live: [S::M; V] = std::array::from_fn(|v| S::live(t.live[v]));
    let mut acc: [[S::V; V]; R] = [[S::splat(0.0); V]; R];
    for (r, acc) in acc.iter_mut().enumerate() {
        *acc = [S::splat(*t.bias.add(r)); V];
    }
    for kk in 0..t.k {
        let off = *t.taps.add(kk);
        let bv: [S::V; V] = std::array::from_fn(|v| S::load(t.b[v].add(off)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = S::splat(*t.a.add(r * t.lda + kk));
            for (acc, b) in acc.iter_mut().zip(&bv) {
                *acc = S::fmadd(a, *b, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for v in 0..V {
            if t.live[v] > 0 {
                S::store_live(t.c[v].add(r * t.ldc), live[v], acc[v]);
            }
        }
    }
}

/// The forward pass of one sample's group: `y` (`[o/groups, oh, ow]` of this group) from the
/// padded sample at `xp` (this group's first plane), weights `w` (`[o/groups, ckk]`).
///
/// # Safety
/// The tier's instructions exist; `xp` holds the group's padded planes plus slack.
#[inline(always)]
unsafe fn fwd_group<S: Lanes, const R: usize, const V: usize>(
    p: &Plan,
    g: &ConvGeom,
    taps: &[usize],
    xp: *const f32,
    w: &[f32],
    bias: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let (og, k, l) = (bias.len(), taps.len(), g.l());
    debug_assert!(w.len() >= og * k && y.len() >= og * l);
    // Output channels outer: a block's weights (R·ckk values) and the padded sample stay in
    // the first-level cache while the vectors go by.
    for r0 in (0..og).step_by(R) {
        let rows = R.min(og - r0);
        for j0 in (0..p.vectors).step_by(V) {
            let mut t = FwdTile {
                taps: taps.as_ptr(),
                k,
                a: w.as_ptr().add(r0 * k),
                lda: k,
                bias: bias.as_ptr().add(r0),
                b: [xp; 4],
                c: [y.as_mut_ptr().cast::<f32>(); 4],
                live: [0; 4],
                ldc: l,
            };
            for v in 0..V.min(p.vectors - j0) {
                let (out, inp, live) = p.vector(g, j0 + v);
                t.b[v] = xp.add(inp);
                t.c[v] = y.as_mut_ptr().cast::<f32>().add(r0 * l + out);
                t.live[v] = live;
            }
            macro_rules! rows {
                ($($r:literal)*) => {
                    match rows {
                        $($r if $r <= R => fwd_tile::<S, $r, V>(&t),)*
                        _ => unreachable!("internal: a tile of {rows} rows"),
                    }
                };
            }
            rows!(1 2 3 4 5 6 7 8 9 10 11 12);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_avx512(
    p: &Plan,
    g: &ConvGeom,
    t: &[usize],
    xp: *const f32,
    w: &[f32],
    b: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    fwd_group::<x86::Avx512, 12, 2>(p, g, t, xp, w, b, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_avx2(
    p: &Plan,
    g: &ConvGeom,
    t: &[usize],
    xp: *const f32,
    w: &[f32],
    b: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    fwd_group::<x86::Avx2, 6, 2>(p, g, t, xp, w, b, y)
}

/// `y = conv(x, w) + b` (f32, `y` `[n, o, oh, ow]`, every element written: it may start
/// uninitialised) where the direct kernels apply on the active tier; `false` (nothing written)
/// where they do not.
pub(super) fn forward(
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) -> bool {
    Tier::active().is_some_and(|t| forward_on(t, g, x, wt, bias, y))
}

/// Whether [`forward`] and [`forward_then`] run for `g` (the active tier has direct kernels
/// and they take this geometry).
pub(super) fn applies(g: &ConvGeom) -> bool {
    Tier::active().is_some_and(|t| Plan::new(g, t).is_some())
}

/// [`forward`], calling `after(s, ys)` with sample `s`'s output `ys` (`[o, oh, ow]`) on the
/// thread that wrote it, as soon as it is written (while it is still in that core's cache).
pub(super) fn forward_then(
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    after: &(dyn Fn(usize, &[f32]) + Sync),
) -> bool {
    Tier::active().is_some_and(|t| forward_each(t, g, x, wt, bias, y, after, true))
}

/// [`forward`] on `tier`.
fn forward_on(
    tier: Tier,
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) -> bool {
    forward_each(tier, g, x, wt, bias, y, &|_, _| {}, true)
}

/// [`forward_then`] on `tier`; with `winograd`, 3×3 kernels take the Winograd transform
/// ([`winograd`]) where it applies.
#[allow(clippy::too_many_arguments)]
fn forward_each(
    tier: Tier,
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    after: &(dyn Fn(usize, &[f32]) + Sync),
    winograd: bool,
) -> bool {
    let Some(p) = Plan::new(g, tier) else {
        return false;
    };
    let (groups, l) = (g.opts.groups, g.l());
    let (cg, og) = (g.c / groups, g.o / groups);
    let taps = p.taps(g);
    let ckk = taps.len();
    let zeros = vec![0.0f32; g.o];
    let wino = winograd
        .then(|| winograd::Wino::new(g, tier, wt, bias, PAD_MAX))
        .flatten();
    let scratch = p.sample + wino.as_ref().map_or(0, winograd::Wino::scratch);
    let (chw, sample) = (g.c * g.h * g.w, g.o * l);
    assert!(
        x.len() >= g.n * chw && wt.len() >= g.o * ckk && y.len() >= g.n * sample,
        "internal: conv_direct operand sizes disagree"
    );
    y.par_chunks_mut(sample.max(1))
        .enumerate()
        .for_each(|(s, ys)| {
            with_scratch(scratch, |buf| {
                let (buf, wbuf) = buf.split_at_mut(p.sample);
                let xs = &x[s * chw..][..chw];
                let all_bias = bias.unwrap_or(&zeros);
                if wino
                    .as_ref()
                    .is_some_and(|w| w.sample(g, xs, all_bias, ys, wbuf))
                {
                    return;
                }
                p.pad(g, xs, buf);
                for gi in 0..groups {
                    let xp = buf[gi * cg * p.hp * p.wp..].as_ptr();
                    let w = &wt[gi * og * ckk..][..og * ckk];
                    let b = &all_bias[gi * og..][..og];
                    let y = &mut ys[gi * og * l..][..og * l];
                    // SAFETY: a `Tier` exists only where the CPU runs it; the padded group planes plus
                    // `lanes` values of slack cover every full-vector read (tap offsets stay
                    // inside the group's planes, a vector starts inside its row); outputs
                    // are written through live-lane masks inside `y`.
                    unsafe {
                        match p.tier {
                            #[cfg(target_arch = "x86_64")]
                            Tier::Avx512 => fwd_avx512(&p, g, &taps, xp, w, b, y),
                            #[cfg(target_arch = "x86_64")]
                            Tier::Avx2 => fwd_avx2(&p, g, &taps, xp, w, b, y),
                            #[cfg(not(target_arch = "x86_64"))]
                            _ => unreachable!("no direct kernels off x86-64"),
                        }
                    }
                }
            });
            // SAFETY: either the Winograd transform wrote every element of `ys` (it returned
            // `true`) or the group loop above did (each group's `og` output planes, through
            // live-lane masks); `MaybeUninit<f32>` has f32's layout.
            let ys = unsafe { &*(ys as *const [MaybeUninit<f32>] as *const [f32]) };
            after(s, ys);
        });
    true
}

/// `dx = conv_input(gy, w)` where the direct kernels apply (`false`, nothing written, where
/// not): the forward convolution of `gy` padded by `k − 1 − p` with the kernel flipped and its
/// channel axes swapped (per group). Every element of `dx` is written (it may start
/// uninitialised).
pub(super) fn input_grad(
    g: &ConvGeom,
    gy: &[f32],
    wt: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> bool {
    Tier::active().is_some_and(|t| input_grad_on(t, g, gy, wt, dx))
}

/// [`input_grad`] on `tier`.
fn input_grad_on(
    tier: Tier,
    g: &ConvGeom,
    gy: &[f32],
    wt: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> bool {
    let Some((t, wf)) = transposed(g, wt, tier) else {
        return false;
    };
    forward_on(tier, &t, gy, &wf, None, dx)
}

/// The forward convolution whose output is `g`'s input gradient: its geometry (the output
/// gradient as input, padded by `k − 1 − p`) and its weights (`g`'s kernel flipped, its
/// channel axes swapped per group); `None` where the direct kernels do not take it.
fn transposed(g: &ConvGeom, wt: &[f32], tier: Tier) -> Option<(ConvGeom, Vec<f32>)> {
    let o = g.opts;
    let (ph, pw) = o.padding;
    if ph >= g.kh || pw >= g.kw {
        return None;
    }
    let t = ConvGeom {
        n: g.n,
        c: g.o,
        h: g.oh,
        w: g.ow,
        o: g.c,
        kh: g.kh,
        kw: g.kw,
        oh: g.h,
        ow: g.w,
        opts: super::conv::Conv2dOptions {
            padding: (g.kh - 1 - ph, g.kw - 1 - pw),
            ..o
        },
    };
    Plan::new(&t, tier)?;
    let (groups, kk) = (o.groups, g.kh * g.kw);
    let (cg, og) = (g.c / groups, g.o / groups);
    // wf[gi·cg + ci, oi, ki, kj] = w[gi·og + oi, ci, kh−1−ki, kw−1−kj]
    let mut wf = vec![0.0f32; g.c * og * kk];
    for gi in 0..groups {
        for ci in 0..cg {
            for oi in 0..og {
                let src = &wt[((gi * og + oi) * cg + ci) * kk..][..kk];
                let dst = &mut wf[((gi * cg + ci) * og + oi) * kk..][..kk];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
    Some((t, wf))
}

/// A weight-gradient tile's operands: the output gradient copied per item (`g`: for item `i`,
/// row `r` at `g + (i·gstride + r)·LANES`, whole aligned vectors, zero past the live lanes)
/// and `Q` taps of the padded input from `x` (taps past the live ones repeat the last).
struct WgtTile {
    g: *const f32,
    gstride: usize,
    x: *const f32,
    taps: [usize; 6],
}

/// One weight-gradient tile of `R` output channels × `Q` taps over `items` ((offset in the
/// padded input, live lanes) of vectors of samples), added onto its `R·Q` vector accumulators
/// at `acc_at`. `MASKED`: the input is read through the live-lane masks; otherwise as whole
/// vectors — only where every input value is finite, so that the lanes past a row's end (the
/// next values of the padded plane, multiplied by the copied output gradient's zeros) add
/// exactly zero: an accumulator lane, starting at +0, never becomes −0, so ±0 leaves it
/// unchanged and the bits are those of the masked reads. Masked reads of partial vectors
/// cost a µop beside the multiply-adds on AVX2 (and on AVX-512 here too): whole vectors ran
/// the weight gradient 13–15% faster on both tiers.
///
/// # Safety
/// The tier's instructions exist; the pointers cover the tile's reads (live lanes only, or
/// whole vectors in the padded sample plus its slack) and its accumulators.
#[inline(always)]
unsafe fn wgt_tile<S: Lanes, const R: usize, const Q: usize, const MASKED: bool>(
    items: &[(usize, S::M)],
    t: &WgtTile,
    acc_at: *mut S::V,
) {
    let mut acc: [[S::V; Q]; R] =
        std::array::from_fn(|r| std::array::from_fn(|q| *acc_at.add(r * Q + q)));
    let mut gp = t.g;
    for &(xo, m) in items {
        let xp = t.x.add(xo);
        let xv: [S::V; Q] = std::array::from_fn(|q| match MASKED {
            true => S::load_live(xp.add(t.taps[q]), m),
            false => S::load(xp.add(t.taps[q])),
        });
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            let gv = S::load(gp.add(r * S::LANES));
            for q in 0..Q {
                acc[r][q] = S::fmadd(gv, xv[q], acc[r][q]);
            }
        }
        gp = gp.add(t.gstride * S::LANES);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            *acc_at.add(r * Q + q) = *v;
        }
    }
}

/// Output-gradient values of one sub-chunk's `R` rows that stay in the first-level cache
/// (24 KB) while a row of tiles goes by.
const SUB_VALUES: usize = 6 << 10;

/// The weight gradient's part from `samples` samples of one group: `part` (`[o/groups, ckk]`)
/// from the padded samples at `xp` (`p.sample` apart, this group's first plane) and the output
/// gradient at `gy` (the group's first row of the first sample; samples `o·l` apart), the
/// input read through lane masks where `masked` (see [`wgt_tile`]). The
/// samples go by in sub-chunks small enough that a tile row's output gradient stays in the
/// first-level cache; each tile's vector accumulators carry over from one sub-chunk to the next
/// (in memory) and are summed across lanes once, at the end.
///
/// # Safety
/// The tier's instructions exist; the pointers cover the samples' group planes.
#[inline(always)]
unsafe fn wgt_group<S: Lanes, const R: usize, const Q: usize>(
    p: &Plan,
    g: &ConvGeom,
    taps: &[usize],
    (xp, gy, samples, masked): (*const f32, *const f32, usize, bool),
    part: &mut [f32],
) {
    let (og, ckk, l) = (g.o / g.opts.groups, taps.len(), g.l());
    debug_assert!(part.len() >= og * ckk);
    let (row_tiles, tap_tiles) = (og.div_ceil(R), ckk.div_ceil(Q));
    let mut acc: Vec<S::V> = vec![S::splat(0.0); row_tiles * tap_tiles * R * Q];
    let sub = (SUB_VALUES / (R * l).max(1)).clamp(1, samples.max(1));
    let lanes = S::LANES;
    let mut items: Vec<(usize, S::M)> = Vec::with_capacity(sub * p.vectors);
    let mut outs: Vec<(usize, S::M)> = Vec::with_capacity(sub * p.vectors);
    // The output gradient of one row tile and sub-chunk, R whole vectors per item, the copy
    // starting on a 64-byte boundary: the tiles' loads of it are aligned (the inputs', shifted
    // by each tap, cannot be).
    let mut gbuf: Vec<f32> = vec![0.0; sub * p.vectors * R * lanes + 16];
    let ga = gbuf.as_mut_ptr();
    let ga = ga.add(ga.align_offset(64).min(16));
    for s0 in (0..samples).step_by(sub) {
        items.clear();
        outs.clear();
        for s in s0..samples.min(s0 + sub) {
            for j in 0..p.vectors {
                let (out, inp, live) = p.vector(g, j);
                items.push((s * p.sample + inp, S::live(live)));
                outs.push((s * g.o * l + out, S::live(live)));
            }
        }
        for (bi, r0) in (0..og).step_by(R).enumerate() {
            let rows = R.min(og - r0);
            for (i, &(go, m)) in outs.iter().enumerate() {
                for r in 0..rows {
                    let v = S::load_live(gy.add((r0 + r) * l + go), m);
                    S::store(ga.add((i * R + r) * lanes), v);
                }
            }
            for (bj, q0) in (0..ckk).step_by(Q).enumerate() {
                let q_live = Q.min(ckk - q0);
                let t = WgtTile {
                    g: ga,
                    gstride: R,
                    x: xp,
                    taps: std::array::from_fn(|q| taps[q0 + q.min(q_live - 1)]),
                };
                let at = acc.as_mut_ptr().add((bi * tap_tiles + bj) * R * Q);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match rows {
                            $($r if $r <= R => match masked {
                                true => S::wgt_tile::<$r, Q, true>(&items, &t, at),
                                false => S::wgt_tile::<$r, Q, false>(&items, &t, at),
                            },)*
                            _ => unreachable!("internal: a tile of {rows} rows"),
                        }
                    };
                }
                rows!(1 2 3 4 5 6 7 8);
            }
        }
    }
    for (bi, r0) in (0..og).step_by(R).enumerate() {
        for (bj, q0) in (0..ckk).step_by(Q).enumerate() {
            let at = (bi * tap_tiles + bj) * R * Q;
            for r in 0..R.min(og - r0) {
                for q in 0..Q.min(ckk - q0) {
                    part[(r0 + r) * ckk + q0 + q] = S::sum(acc[at + r * Q + q]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wgt_avx512(
    p: &Plan,
    g: &ConvGeom,
    t: &[usize],
    ops: (*const f32, *const f32, usize, bool),
    part: &mut [f32],
) {
    wgt_group::<x86::Avx512, 8, 3>(p, g, t, ops, part)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wgt_avx2(
    p: &Plan,
    g: &ConvGeom,
    t: &[usize],
    ops: (*const f32, *const f32, usize, bool),
    part: &mut [f32],
) {
    wgt_group::<x86::Avx2, 4, 3>(p, g, t, ops, part)
}

/// Samples per weight-gradient chunk for `p` (fixed by the shapes).
fn chunk_samples(p: &Plan) -> usize {
    (PAD_MAX / 4 / p.sample).clamp(1, CHUNK_SAMPLES)
}

/// `dw = conv_weight(x, gy)` (`[o, c/groups, kh, kw]`, every element written) where the direct
/// kernels apply; `false` (nothing written) where not. Chunks of samples fixed by the shapes
/// each give a part; `sum_parts` adds them in chunk order.
pub(super) fn weight_grad(
    g: &ConvGeom,
    x: &[f32],
    gy: &[f32],
    dw: &mut [f32],
    sum_parts: impl FnOnce(usize, &(dyn Fn(usize, &mut [f32]) + Sync), &mut [f32]),
) -> bool {
    Tier::active().is_some_and(|t| weight_grad_on(t, g, x, gy, dw, sum_parts))
}

/// [`weight_grad`] on `tier`.
fn weight_grad_on(
    tier: Tier,
    g: &ConvGeom,
    x: &[f32],
    gy: &[f32],
    dw: &mut [f32],
    sum_parts: impl FnOnce(usize, &(dyn Fn(usize, &mut [f32]) + Sync), &mut [f32]),
) -> bool {
    let Some(p) = Plan::new(g, tier) else {
        return false;
    };
    let (groups, l) = (g.opts.groups, g.l());
    let (cg, og) = (g.c / groups, g.o / groups);
    let taps = p.taps(g);
    let ckk = taps.len();
    let (chw, ol) = (g.c * g.h * g.w, g.o * l);
    assert!(
        x.len() >= g.n * chw && gy.len() >= g.n * ol && dw.len() >= g.o * ckk,
        "internal: conv_direct operand sizes disagree"
    );
    let per = chunk_samples(&p);
    let chunks = g.n.div_ceil(per);
    let part = |c: usize, part: &mut [f32]| {
        let (s0, ns) = (c * per, per.min(g.n - c * per));
        with_scratch(ns * p.sample, |buf| {
            let mut finite = true;
            for s in 0..ns {
                finite &= p.pad(
                    g,
                    &x[(s0 + s) * chw..][..chw],
                    &mut buf[s * p.sample..][..p.sample],
                );
            }
            for gi in 0..groups {
                let xp = buf[gi * cg * p.hp * p.wp..].as_ptr();
                let gp = gy[s0 * ol + gi * og * l..].as_ptr();
                let part = &mut part[gi * og * ckk..][..og * ckk];
                let ops = (xp, gp, ns, !finite);
                // SAFETY: a `Tier` exists only where the CPU runs it; every read is of live
                // lanes of a sample's output-gradient rows, and of the input either live lanes
                // inside a padded sample's group planes or (all values finite) whole vectors
                // starting inside a padded row, which the sample's slack of `lanes` values
                // covers.
                unsafe {
                    match p.tier {
                        #[cfg(target_arch = "x86_64")]
                        Tier::Avx512 => wgt_avx512(&p, g, &taps, ops, part),
                        #[cfg(target_arch = "x86_64")]
                        Tier::Avx2 => wgt_avx2(&p, g, &taps, ops, part),
                        #[cfg(not(target_arch = "x86_64"))]
                        _ => unreachable!("no direct kernels off x86-64"),
                    }
                }
            }
        })
    };
    sum_parts(chunks, &part, dw);
    true
}

#[cfg(test)]
#[path = "conv_direct_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "conv_winograd_tests.rs"]
mod winograd_tests;
