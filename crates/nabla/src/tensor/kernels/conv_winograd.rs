//! Winograd F(2×2, 3×3) for the direct kernels' 3×3 convolutions (stride 1, dilation 1, f32,
//! AVX-512 and AVX2): each 2×2 block of output positions (a *tile*) is computed from the 4×4
//! block of padded input under it with 16 multiplications per input and output channel
//! instead of 36 — 2.25× fewer multiply-adds (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016):
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, summed over input channels inside the `⊙` term, with
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]` (a cross-correlation, as convolution layers compute).
//!
//! Per sample and group, on the thread that owns the sample:
//! 1. the input is copied into a zero-bordered buffer with the channels innermost
//!    (`[rows, cols, c]`), flagging non-finite values on the way;
//! 2. per block of [`BLOCK`] tiles, the input transform `Bᵀ d B` runs on vectors of channels
//!    (adds and subtracts only), giving 16 matrices `V_ξ` (`[tiles, c]`);
//! 3. 16 products `M_ξ = V_ξ · U_ξ` (`[tiles, o]`), `U = G g Gᵀ` transformed once per call
//!    (`[16, c, o]`), in register tiles of [`ROWS`] tiles × 2 vectors of output channels;
//! 4. the output transform `Aᵀ m A` on vectors of output channels, plus the bias, written to
//!    the output's planes.
//!
//! The transformed blocks (16·24·(c + o) values: 200 KB at c = o = 64) stay in the second-level
//! cache. Every value is computed the same way whichever thread and tier computes it (the same
//! adds, and multiply-adds in channel order), so results are bit-identical across thread
//! counts and between AVX2 and AVX-512 (both take the same shapes: see below). They differ from the direct kernels' by rounding: the
//! transforms add values of the whole 4×4 block, so an output's rounding error scales with
//! the block's values, not only its 3×3 window's (tested against the f64 column path).
//!
//! The channels per group must be multiples of 16 on both tiers (the transforms run on vectors
//! of channels, 16 to an AVX-512 vector), so that both tiers take the transform for the same
//! shapes and give the same bits.
//!
//! Non-finite values would spread differently (an ∞ in a block's corner reaches outputs whose
//! window does not hold it, as ∞ − ∞ = NaN): the transform is only used where the weights and
//! the bias are finite; a sample whose input holds a non-finite value, or whose transformed sums
//! or outputs overflow, returns `false` and is computed again by the direct kernels, so those
//! samples get the direct kernels' results bit for bit. (Where only the direct kernels'
//! running sum would overflow — terms of ±3·10³⁸ added in channel order — the transform's
//! differently ordered sums may stay finite: that sample's result is then finite.)

use super::{Lanes, Tier};
use crate::tensor::kernels::conv::ConvGeom;
use std::mem::MaybeUninit;

/// Output tiles transformed, multiplied and transformed back together.
const BLOCK: usize = 24;
/// The channels per group (input and output) must be multiples of this, on either tier.
const CHANNELS: usize = 16;
/// Tiles per register tile of the products (× 2 vectors of output channels).
const ROWS: usize = 6;

/// One convolution's Winograd plan: its shapes and transformed weights.
pub(super) struct Wino {
    tier: Tier,
    /// The geometry the plan was made for: `c, h, w, o, oh, ow`.
    shape: [usize; 6],
    groups: usize,
    /// Input and output channels per group.
    cg: usize,
    og: usize,
    ph: usize,
    pw: usize,
    /// Tiles per column and row of an output plane.
    th: usize,
    tw: usize,
    /// Rows and columns of the zero-bordered input (`2·th + 2`, `2·tw + 2`).
    rows: usize,
    cols: usize,
    /// Output positions per plane.
    l: usize,
    /// `U` per group, `[groups, 16, c/groups, o/groups]`.
    u: Vec<f32>,
}

/// `G g Gᵀ` of one 3×3 kernel `w` (row-major), row-major 4×4.
fn transform_kernel(w: &[f32]) -> [f32; 16] {
    let mut gg = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let (a, b, c) = (w[j], w[3 + j], w[6 + j]);
        gg[0][j] = a;
        gg[1][j] = (a + b + c) * 0.5;
        gg[2][j] = (a - b + c) * 0.5;
        gg[3][j] = c;
    }
    let mut u = [0.0f32; 16];
    for (i, &[a, b, c]) in gg.iter().enumerate() {
        u[i * 4] = a;
        u[i * 4 + 1] = (a + b + c) * 0.5;
        u[i * 4 + 2] = (a - b + c) * 0.5;
        u[i * 4 + 3] = c;
    }
    u
}

impl Wino {
    /// The plan for `g` with weights `wt` (`[o, c/groups, 3, 3]`) and `bias`, or `None` where
    /// the transform does not apply: a kernel other than 3×3, a stride or dilation other than
    /// 1, channels per group (input or output) not a multiple of [`CHANNELS`], an empty
    /// output, a weight or bias that is not finite or a kernel whose transform overflows, or
    /// scratch over `pad_max` values.
    pub(super) fn new(
        g: &ConvGeom,
        tier: Tier,
        wt: &[f32],
        bias: Option<&[f32]>,
        pad_max: usize,
    ) -> Option<Wino> {
        let o = g.opts;
        let groups = o.groups;
        let (cg, og) = (g.c / groups, g.o / groups);
        debug_assert!(CHANNELS.is_multiple_of(tier.lanes()));
        if (g.kh, g.kw) != (3, 3)
            || o.stride != (1, 1)
            || o.dilation != (1, 1)
            || cg == 0
            || og == 0
            || !cg.is_multiple_of(CHANNELS)
            || !og.is_multiple_of(CHANNELS)
            || g.l() == 0
            || wt.len() < g.o * cg * 9
            || bias.is_some_and(|b| b.len() < g.o || !b.iter().all(|v| v.is_finite()))
        {
            return None;
        }
        let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        let (rows, cols) = (2 * th + 2, 2 * tw + 2);
        let scratch = rows
            .checked_mul(cols)?
            .checked_mul(cg)?
            .checked_add(16 * BLOCK * (cg.checked_add(og)?))?
            .checked_add(g.l().checked_mul(og)?)?;
        if scratch > pad_max {
            return None;
        }
        let mut u = vec![0.0f32; groups * 16 * cg * og];
        for gi in 0..groups {
            let ug = &mut u[gi * 16 * cg * og..][..16 * cg * og];
            for k in 0..og {
                for c in 0..cg {
                    let t = transform_kernel(&wt[((gi * og + k) * cg + c) * 9..][..9]);
                    for (xi, v) in t.into_iter().enumerate() {
                        ug[(xi * cg + c) * og + k] = v;
                    }
                }
            }
        }
        if !u.iter().all(|v| v.is_finite()) {
            return None;
        }
        Some(Wino {
            tier,
            shape: [g.c, g.h, g.w, g.o, g.oh, g.ow],
            groups,
            cg,
            og,
            ph: o.padding.0,
            pw: o.padding.1,
            th,
            tw,
            rows,
            cols,
            l: g.l(),
            u,
        })
    }

    /// The scratch values one sample takes (the bordered input, one block's transformed
    /// inputs and products, and one group's outputs with the channels innermost).
    pub(super) fn scratch(&self) -> usize {
        self.rows * self.cols * self.cg + 16 * BLOCK * (self.cg + self.og) + self.l * self.og
    }

    /// Sample `x` (`[c, h, w]`) of the geometry `g` the plan was made for into `y` (`[o, oh,
    /// ow]`, every element written), with `bias` (`[o]`), using `buf` ([`Wino::scratch`]
    /// values). `false` where an input value is not finite or a transformed sum or output
    /// overflowed: `y` then holds no complete result (earlier groups may have been written)
    /// and the caller computes the sample with the direct kernels.
    pub(super) fn sample(
        &self,
        g: &ConvGeom,
        x: &[f32],
        bias: &[f32],
        y: &mut [MaybeUninit<f32>],
        buf: &mut [f32],
    ) -> bool {
        assert!(
            self.shape == [g.c, g.h, g.w, g.o, g.oh, g.ow]
                && (g.kh, g.kw) == (3, 3)
                && g.opts.groups == self.groups
                && g.opts.padding == (self.ph, self.pw)
                && x.len() >= g.c * g.h * g.w
                && y.len() >= g.o * g.l()
                && bias.len() >= g.o
                && buf.len() >= self.scratch(),
            "internal: winograd operand sizes disagree"
        );
        // SAFETY: a `Tier` exists only where the CPU runs it; the sizes are checked above and
        // every access below stays inside them (see each function).
        unsafe {
            match self.tier {
                #[cfg(target_arch = "x86_64")]
                Tier::Avx512 => sample_avx512(self, g, x, bias, y, buf),
                #[cfg(target_arch = "x86_64")]
                Tier::Avx2 => sample_avx2(self, g, x, bias, y, buf),
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no direct kernels off x86-64"),
            }
        }
    }
}

/// [`Wino::sample`] on a tier.
///
/// # Safety
/// The tier's instructions exist; the sizes are those checked in [`Wino::sample`].
#[inline(always)]
unsafe fn sample<S: Lanes>(
    wn: &Wino,
    g: &ConvGeom,
    x: &[f32],
    bias: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut [f32],
) -> bool {
    let (cg, og, l, hw) = (wn.cg, wn.og, g.l(), g.h * g.w);
    let (xt, rest) = buf.split_at_mut(wn.rows * wn.cols * cg);
    let (v, rest) = rest.split_at_mut(16 * BLOCK * cg);
    let (m, yh) = rest.split_at_mut(16 * BLOCK * og);
    let tiles = wn.th * wn.tw;
    let mut flags = S::splat(0.0);
    for gi in 0..wn.groups {
        if !gather::<S>(wn, g, &x[gi * cg * hw..][..cg * hw], xt) {
            return false;
        }
        let u = &wn.u[gi * 16 * cg * og..][..16 * cg * og];
        let b = &bias[gi * og..][..og];
        for t0 in (0..tiles).step_by(BLOCK) {
            let nb = BLOCK.min(tiles - t0);
            input_tiles::<S>(wn, xt, t0, nb, v);
            products::<S>(wn, v, u, nb, m);
            flags = output_tiles::<S>(wn, g, m, b, (t0, nb), yh, flags);
        }
        scatter::<S>(g, og, yh, &mut y[gi * og * l..][..og * l]);
    }
    !S::any_nan(flags)
}

/// Copies one group's planes `x` (`[cg, h, w]`) into `xt` (`[rows, cols, cg]`, zero outside
/// the input), by 8 × 8 transposed blocks (rows of under 8 values one by one). Returns
/// whether every value is finite (an early exit: a non-finite input would also reach the
/// outputs' flags).
///
/// # Safety
/// The tier's instructions exist; `x` holds `cg·h·w` values, `xt` `rows·cols·cg`.
#[inline(always)]
unsafe fn gather<S: Lanes>(wn: &Wino, g: &ConvGeom, x: &[f32], xt: &mut [f32]) -> bool {
    let (cg, h, w, hw) = (wn.cg, g.h, g.w, g.h * g.w);
    debug_assert!(x.len() >= cg * hw && cg.is_multiple_of(8));
    let row_len = wn.cols * cg;
    let mut finite = true;
    for (r, row) in xt[..wn.rows * row_len]
        .chunks_exact_mut(row_len)
        .enumerate()
    {
        let iy = r.wrapping_sub(wn.ph);
        if iy >= h {
            row.fill(0.0);
            continue;
        }
        row[..wn.pw * cg].fill(0.0);
        row[(wn.pw + w) * cg..].fill(0.0);
        let body = row[wn.pw * cg..].as_mut_ptr();
        let src = x.as_ptr().add(iy * w);
        if w < 8 {
            for ix in 0..w {
                for c in 0..cg {
                    let v = *src.add(c * hw + ix);
                    finite &= v.is_finite();
                    *body.add(ix * cg + c) = v;
                }
            }
            continue;
        }
        // Blocks of 8 positions; the last one ends at the row's end (overlapping the one
        // before where `w` is not a multiple of 8).
        let mut ix0 = 0;
        loop {
            let at = ix0.min(w - 8);
            for c0 in (0..cg).step_by(8) {
                finite &= S::transpose8(src.add(c0 * hw + at), hw, body.add(at * cg + c0), cg);
            }
            if at == w - 8 {
                break;
            }
            ix0 += 8;
        }
    }
    finite
}

/// Copies a group's outputs from `yh` (`[oh·ow, og]`) into its planes `y` (`[og, oh·ow]`), by
/// 8 × 8 transposed blocks (planes of under 8 values one by one).
///
/// # Safety
/// The tier's instructions exist; `yh` and `y` hold `oh·ow·og` values.
#[inline(always)]
unsafe fn scatter<S: Lanes>(g: &ConvGeom, og: usize, yh: &[f32], y: &mut [MaybeUninit<f32>]) {
    let l = g.l();
    debug_assert!(yh.len() >= l * og && y.len() >= l * og && og.is_multiple_of(8));
    let (src, dst) = (yh.as_ptr(), y.as_mut_ptr().cast::<f32>());
    if l < 8 {
        for p in 0..l {
            for k in 0..og {
                *dst.add(k * l + p) = *src.add(p * og + k);
            }
        }
        return;
    }
    for k0 in (0..og).step_by(8) {
        let mut p0 = 0;
        loop {
            let at = p0.min(l - 8);
            S::transpose8(src.add(at * og + k0), og, dst.add(k0 * l + at), l);
            if at == l - 8 {
                break;
            }
            p0 += 8;
        }
    }
}

/// `V_ξ` of tiles `t0..t0 + nb` from the bordered input `xt`, into `v`
/// (`[16, BLOCK, cg]`).
///
/// # Safety
/// The tier's instructions exist; `xt` is the bordered input, `v` holds `16·BLOCK·cg` values.
#[inline(always)]
unsafe fn input_tiles<S: Lanes>(wn: &Wino, xt: &[f32], t0: usize, nb: usize, v: &mut [f32]) {
    let (cg, cols) = (wn.cg, wn.cols);
    debug_assert!(xt.len() >= wn.rows * cols * cg && v.len() >= 16 * BLOCK * cg);
    for tb in 0..nb {
        let (ty, tx) = ((t0 + tb) / wn.tw, (t0 + tb) % wn.tw);
        // The tile's 4×4 block starts at bordered row 2·ty, column 2·tx (and ends inside:
        // rows = 2·th + 2, cols = 2·tw + 2).
        let base = xt.as_ptr().add((2 * ty * cols + 2 * tx) * cg);
        let out = v.as_mut_ptr().add(tb * cg);
        for c0 in (0..cg).step_by(S::LANES) {
            let d: [[S::V; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| S::load(base.add((i * cols + j) * cg + c0)))
            });
            // Bᵀ d: along the block's rows.
            let r: [[S::V; 4]; 4] = [
                std::array::from_fn(|j| S::sub(d[0][j], d[2][j])),
                std::array::from_fn(|j| S::add(d[1][j], d[2][j])),
                std::array::from_fn(|j| S::sub(d[2][j], d[1][j])),
                std::array::from_fn(|j| S::sub(d[1][j], d[3][j])),
            ];
            // (Bᵀ d) B: along its columns.
            for (i, r) in r.iter().enumerate() {
                let e = [
                    S::sub(r[0], r[2]),
                    S::add(r[1], r[2]),
                    S::sub(r[2], r[1]),
                    S::sub(r[1], r[3]),
                ];
                for (j, e) in e.into_iter().enumerate() {
                    S::store(out.add((i * 4 + j) * BLOCK * cg + c0), e);
                }
            }
        }
    }
}

/// `M_ξ = V_ξ · U_ξ` for the block's `nb` tiles: `m` `[16, BLOCK, og]`.
///
/// # Safety
/// The tier's instructions exist; `v`, `u` and `m` hold `16·BLOCK·cg`, `16·cg·og` and
/// `16·BLOCK·og` values.
#[inline(always)]
unsafe fn products<S: Lanes>(wn: &Wino, v: &[f32], u: &[f32], nb: usize, m: &mut [f32]) {
    let (cg, og) = (wn.cg, wn.og);
    debug_assert!(v.len() >= 16 * BLOCK * cg && u.len() >= 16 * cg * og);
    debug_assert!(m.len() >= 16 * BLOCK * og && nb <= BLOCK);
    for xi in 0..16 {
        let a = v.as_ptr().add(xi * BLOCK * cg);
        let b = u.as_ptr().add(xi * cg * og);
        let c = m.as_mut_ptr().add(xi * BLOCK * og);
        let mut k0 = 0;
        // Output channels outer: a block of `U_ξ` (cg × up to `S::WIDE` vectors) stays in the
        // first-level cache while the block's tiles go by.
        while k0 < og {
            let vs = [4, 2, 1]
                .into_iter()
                .find(|&v| v <= S::WIDE && og - k0 >= v * S::LANES)
                .unwrap_or(1);
            for r0 in (0..nb).step_by(ROWS) {
                let t = Tile {
                    a: a.add(r0 * cg),
                    b: b.add(k0),
                    c: c.add(r0 * og + k0),
                    k: cg,
                    ld: og,
                };
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match (ROWS.min(nb - r0), vs) {
                            $(($r, 4) => tile::<S, $r, 4>(&t),
                              ($r, 2) => tile::<S, $r, 2>(&t),
                              ($r, _) => tile::<S, $r, 1>(&t),)*
                            (r, _) => unreachable!("internal: a tile of {r} rows"),
                        }
                    };
                }
                rows!(1 2 3 4 5 6);
            }
            k0 += vs * S::LANES;
        }
    }
}

/// A product tile's operands: `R` rows of `a` (`k` apart), `V` vectors of `b` per row of
/// `ld` values, and `c` (rows `ld` apart).
struct Tile {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    k: usize,
    ld: usize,
}

/// One register tile: `c[r, v] = Σ_kk a[r, kk] · b[kk, v]`, in `kk` order.
///
/// # Safety
/// The tier's instructions exist; the pointers cover `R` rows × `k` of `a`, `k` rows × `V`
/// vectors of `b` and `R` rows × `V` vectors of `c`.
#[inline(always)]
unsafe fn tile<S: Lanes, const R: usize, const V: usize>(t: &Tile) {
    let mut acc = [[S::splat(0.0); V]; R];
    for kk in 0..t.k {
        let bv: [S::V; V] = std::array::from_fn(|j| S::load(t.b.add(kk * t.ld + j * S::LANES)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = S::splat(*t.a.add(r * t.k + kk));
            for (acc, b) in acc.iter_mut().zip(&bv) {
                *acc = S::fmadd(a, *b, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            S::store(t.c.add(r * t.ld + j * S::LANES), *acc);
        }
    }
}

/// `Aᵀ m A + bias` of tiles `t0..t0 + nb` (products `m`) into `yh` (`[oh·ow, og]`: a
/// tile's positions past the plane's edge are not written). Returns `flags` with a NaN lane
/// where an output is not finite.
///
/// # Safety
/// The tier's instructions exist; `m` holds `16·BLOCK·og` values, `bias` `og`, `yh`
/// `oh·ow·og`.
#[inline(always)]
unsafe fn output_tiles<S: Lanes>(
    wn: &Wino,
    g: &ConvGeom,
    m: &[f32],
    bias: &[f32],
    (t0, nb): (usize, usize),
    yh: &mut [f32],
    mut flags: S::V,
) -> S::V {
    let (og, ow) = (wn.og, g.ow);
    debug_assert!(m.len() >= 16 * BLOCK * og && bias.len() >= og && yh.len() >= og * g.l());
    for tb in 0..nb {
        let (ty, tx) = ((t0 + tb) / wn.tw, (t0 + tb) % wn.tw);
        let (oy, ox) = (2 * ty, 2 * tx);
        let (down, right) = (oy + 1 < g.oh, ox + 1 < ow);
        let at = yh.as_mut_ptr().add((oy * ow + ox) * og);
        for k0 in (0..og).step_by(S::LANES) {
            let mv: [S::V; 16] =
                std::array::from_fn(|xi| S::load(m.as_ptr().add((xi * BLOCK + tb) * og + k0)));
            // Aᵀ m: along the rows.
            let s0: [S::V; 4] =
                std::array::from_fn(|j| S::add(S::add(mv[j], mv[4 + j]), mv[8 + j]));
            let s1: [S::V; 4] =
                std::array::from_fn(|j| S::sub(S::sub(mv[4 + j], mv[8 + j]), mv[12 + j]));
            // (Aᵀ m) A: along the columns; then the bias.
            let bv = S::load(bias.as_ptr().add(k0));
            let ys = [
                S::add(S::add(S::add(s0[0], s0[1]), s0[2]), bv),
                S::add(S::sub(S::sub(s0[1], s0[2]), s0[3]), bv),
                S::add(S::add(S::add(s1[0], s1[1]), s1[2]), bv),
                S::add(S::sub(S::sub(s1[1], s1[2]), s1[3]), bv),
            ];
            for v in ys {
                flags = S::flag_nonfinite(flags, v);
            }
            S::store(at.add(k0), ys[0]);
            if right {
                S::store(at.add(og + k0), ys[1]);
            }
            if down {
                S::store(at.add(ow * og + k0), ys[2]);
                if right {
                    S::store(at.add((ow + 1) * og + k0), ys[3]);
                }
            }
        }
    }
    flags
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sample_avx512(
    wn: &Wino,
    g: &ConvGeom,
    x: &[f32],
    bias: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut [f32],
) -> bool {
    sample::<super::x86::Avx512>(wn, g, x, bias, y, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sample_avx2(
    wn: &Wino,
    g: &ConvGeom,
    x: &[f32],
    bias: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut [f32],
) -> bool {
    sample::<super::x86::Avx2>(wn, g, x, bias, y, buf)
}
