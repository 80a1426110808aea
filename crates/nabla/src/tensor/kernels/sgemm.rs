//! Our own f32 kernel for small and thin products on x86-64 CPUs with AVX-512F or AVX2+FMA
//! (the active tier, [`crate::isa::active`]): no packing, a register tile (AVX-512: up to 12
//! rows × 32 columns in 24 zmm accumulators; AVX2: 6 rows × 16 columns in 12 ymm), B read in
//! place when its rows are contiguous, A broadcast from wherever it lies, the whole k sum in
//! registers. The `gemm` crate packs its operands first, which costs more than the product at
//! these sizes (`cargo bench -p nabla --bench core -- small_products`). Large products stay
//! with the `gemm` crate.
//!
//! Every output element is computed the same way whoever computes it and on either tier (k
//! ascending, one fused multiply-add per step into one accumulator lane), so results are
//! bit-identical for any thread count, and the AVX2 and AVX-512 tiles agree bit for bit.

use super::operand::{block_fits, scale_block, with_rows_of, MatRef};
use crate::isa::{self, Isa};

/// Products of at most this many multiply-adds come here (and thin ones, of at most 16 columns).
const SMALL_MAX: usize = 1 << 18;
/// Products of at most this many rows with B's rows contiguous come here whatever their size:
/// matrix–vector products, such as a layer's forward pass on one input (inference). They read
/// all of B once and are limited by memory, so they are split among threads from
/// [`VECTOR_SPLIT`] values of B on; the `gemm` crate could not split them without changing
/// the bits (`matmul.rs`, `parts`), here each element's sum is the same whoever computes it.
const VECTOR_ROWS: usize = 4;
/// B's size (values) from which a matrix–vector product is split among threads.
const VECTOR_SPLIT: usize = 1 << 16;

/// Which register tile runs: the active tier's. A value exists only where the CPU runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16-lane zmm vectors with lane masks; tiles of 12 rows × 32 columns.
    Avx512,
    /// 8-lane ymm vectors with AVX2 masked loads and stores; tiles of 6 rows × 16 columns.
    Avx2,
}

impl Kernel {
    /// Lanes of one vector.
    fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 => 16,
            Kernel::Avx2 => 8,
        }
    }
    /// Rows and vectors of columns of the register tile for a product of `m` rows: 12 × 2
    /// (AVX-512) or 6 × 2 (AVX2), and for a matrix–vector product (m ≤ [`VECTOR_ROWS`]) m rows
    /// of 8 vectors (m ≤ 2) or 4: enough independent accumulators to hide the multiply-add's
    /// latency when there are few rows.
    fn tile(self, m: usize) -> (usize, usize) {
        match (self, m) {
            (_, 1..=2) => (m, 8),
            (_, 3..=VECTOR_ROWS) => (m, 4),
            (Kernel::Avx512, _) => (12, 2),
            (Kernel::Avx2, _) => (6, 2),
        }
    }
}

/// The kernel a tier runs, if any (none on the scalar tier, nor off x86-64).
fn kernel_of(tier: Isa) -> Option<Kernel> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    match tier {
        Isa::Avx512 => Some(Kernel::Avx512),
        Isa::Avx2 => Some(Kernel::Avx2),
        Isa::Scalar => None,
    }
}

/// Whether a product of these sizes goes to this kernel: the tier has it and the product is
/// small (at most 2¹⁸ multiply-adds), thin (at most 16 columns) or a matrix–vector product (at
/// most [`VECTOR_ROWS`] rows, B's rows contiguous), and B's rows are contiguous
/// or B is small enough (at most 2,048 values) that copying it costs less than `gemm`'s packing
/// (a 64×64 transposed B did not: 6.1 vs 5.0 µs). Measured in `benches/core.rs`
/// (`small_products`). Returns the kernel to run it with.
pub fn suits(m: usize, k: usize, n: usize, b_rows_contiguous: bool) -> Option<Kernel> {
    let vector = m <= VECTOR_ROWS && b_rows_contiguous;
    if (m.saturating_mul(n).saturating_mul(k) <= SMALL_MAX || n <= 16 || vector)
        && (b_rows_contiguous || k.saturating_mul(n) <= 2048)
    {
        kernel_of(isa::active())
    } else {
        None
    }
}

/// The active tier's kernel, if it has one.
pub(super) fn active_kernel() -> Option<Kernel> {
    kernel_of(isa::active())
}

/// `out[i·ld + j] = (a·b)[i][j] + beta·out[i·ld + j]` on this thread, by `kernel`, for small
/// products inside another kernel (attention's heads): B's rows contiguous (or one column).
/// With beta = 0 the output is only written. Shapes and bounds are asserted (an internal
/// error).
pub(super) fn block(
    kernel: Kernel,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    out: &mut [f32],
    ld: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows
            && a.in_bounds()
            && b.in_bounds()
            && (b.cs == 1 || n == 1)
            && block_fits(m, n, ld, out.len()),
        "internal: sgemm block operands disagree"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_block(out, (m, n, ld), beta);
        return;
    }
    let o = Out {
        ptr: out.as_mut_ptr(),
        ld,
    };
    tiles(kernel, &a, &b, beta, o, (0, m), (0, n));
}

/// The output, shared by the threads that each write their own whole tiles of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ld: usize,
}
// SAFETY: threads write disjoint rectangles of the output (see `sgemm`), never the same element.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// `out = a·b + beta·out`, `out` row-major m×n; with beta = 0 the output is only written,
/// never read (it may be uninitialised), by `kernel` (from [`suits`]). The shapes and the operands' bounds are
/// asserted here (an internal error: `gemm_into` checks them before calling).
///
/// # Safety
/// `out` is valid for writes of m·n floats (and initialised where beta ≠ 0).
pub unsafe fn sgemm(
    kernel: Kernel,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    out: *mut f32,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows && m > 0 && n > 0 && k > 0 && a.in_bounds() && b.in_bounds(),
        "internal: sgemm operands disagree"
    );
    let o = Out { ptr: out, ld: n };
    let t = if m * n * k >= (1 << 20) || (m <= VECTOR_ROWS && k * n >= VECTOR_SPLIT) {
        threads.max(1)
    } else {
        1
    };
    if b.cs == 1 {
        return split(kernel, m, n, t, |r, c| tiles(kernel, &a, &b, beta, o, r, c));
    }
    // B's rows are not contiguous: work on a row-major copy of it.
    with_rows_of(&b, 0, n, |rows| {
        let b = MatRef {
            data: rows,
            offset: 0,
            rows: k,
            cols: n,
            rs: n,
            cs: 1,
        };
        split(kernel, m, n, t, |r, c| tiles(kernel, &a, &b, beta, o, r, c));
    });
}

/// Runs `f(rows, columns)` on `t` threads, each on its own part of the m×n output: the axis
/// with more tiles cut into whole tiles (the same tiles one thread would compute).
fn split(kernel: Kernel, m: usize, n: usize, t: usize, f: impl Fn(Range, Range) + Sync) {
    let (mr, v) = kernel.tile(m);
    let tile = (mr, v * kernel.lanes());
    let (tiles_m, tiles_n) = (m.div_ceil(tile.0), n.div_ceil(tile.1));
    let (along_n, tiles) = if tiles_n >= tiles_m {
        (true, tiles_n)
    } else {
        (false, tiles_m)
    };
    let t = t.min(tiles);
    if t <= 1 {
        return f((0, m), (0, n));
    }
    let f = &f;
    // Last part first, so the calling thread runs part 0 (see `matmul::gemm_ptr`).
    rayon::scope(|s| {
        for p in (0..t).rev() {
            let (lo, hi) = (tiles * p / t, tiles * (p + 1) / t);
            s.spawn(move |_| {
                if along_n {
                    f((0, m), (lo * tile.1, (hi * tile.1).min(n)));
                } else {
                    f((lo * tile.0, (hi * tile.0).min(m)), (0, n));
                }
            });
        }
    });
}

/// A half-open range of rows or columns.
type Range = (usize, usize);

/// The tiles in rows `r` × columns `c` of the output (`b` has `cs == 1`).
fn tiles(
    kernel: Kernel,
    a: &MatRef<'_, f32>,
    b: &MatRef<'_, f32>,
    beta: f32,
    o: Out,
    r: Range,
    c: Range,
) {
    let mode = if beta == 0.0 {
        Mode::Store
    } else {
        Mode::Scale(beta)
    };
    let (mr, v) = kernel.tile(a.rows);
    let lanes = kernel.lanes();
    let nr = v * lanes;
    for j0 in (c.0..c.1).step_by(nr) {
        let cols = nr.min(c.1 - j0);
        for i0 in (r.0..r.1).step_by(mr) {
            let rows = mr.min(r.1 - i0);
            let t = Tile {
                k: a.cols,
                a: a.data[a.offset + i0 * a.rs..].as_ptr(),
                rsa: a.rs,
                csa: a.cs,
                b: b.data[b.offset + j0..].as_ptr(),
                ldb: b.rs,
                cols: std::array::from_fn(|h| cols.saturating_sub(h * lanes).min(lanes)),
                // SAFETY (of the pointer): row i0 < m, column j0 < n of the m×n output.
                c: unsafe { o.ptr.add(i0 * o.ld + j0) },
                ldc: o.ld,
                mode,
            };
            // SAFETY: `sgemm` checked that the tier has the kernel and that every element of
            // a and b lies in its slice; the tile reads rows i0..i0+rows of A, all k rows and
            // columns j0..j0+cols of B and writes that rectangle of the output, which only
            // this thread writes (masked lanes are neither read nor written).
            unsafe { t.run(kernel, rows, cols.div_ceil(lanes).next_power_of_two()) };
        }
    }
}

/// How a tile's product meets the output already there.
#[derive(Clone, Copy)]
enum Mode {
    /// `out = ab`.
    Store,
    /// `out = beta·out + ab`.
    Scale(f32),
}

/// One output tile: where its operands are and how to meet the output.
struct Tile {
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    ldb: usize,
    /// Columns of the tile in each of its (at most eight) vectors.
    cols: [usize; 8],
    c: *mut f32,
    ldc: usize,
    mode: Mode,
}

impl Tile {
    /// Runs the tile with `rows` (1..=the kernel's rows) rows and `v` vectors of columns (a
    /// power of two, at most what [`Kernel::tile`] gives for these rows).
    ///
    /// # Safety
    /// The CPU has the kernel's instructions and the pointers cover what the tile reads and
    /// writes.
    unsafe fn run(&self, kernel: Kernel, rows: usize, v: usize) {
        macro_rules! by_rows {
            ($f:ident, $v:literal, $($r:literal)*) => {
                match rows {
                    $($r => self.$f::<$r, $v>(),)*
                    _ => unreachable!("internal: a tile of {rows} rows"),
                }
            };
        }
        match (kernel, v) {
            (Kernel::Avx512, 8) => by_rows!(avx512, 8, 1 2),
            (Kernel::Avx512, 4) => by_rows!(avx512, 4, 1 2 3 4),
            (Kernel::Avx512, 2) => by_rows!(avx512, 2, 1 2 3 4 5 6 7 8 9 10 11 12),
            (Kernel::Avx512, _) => by_rows!(avx512, 1, 1 2 3 4 5 6 7 8 9 10 11 12),
            (Kernel::Avx2, 8) => by_rows!(avx2, 8, 1 2),
            (Kernel::Avx2, 4) => by_rows!(avx2, 4, 1 2 3 4),
            (Kernel::Avx2, 2) => by_rows!(avx2, 2, 1 2 3 4 5 6),
            (Kernel::Avx2, _) => by_rows!(avx2, 1, 1 2 3 4 5 6),
        }
    }

    /// `R` rows × `V` vectors of 16 columns (the last ones masked).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const V: usize>(&self) {
        use std::arch::x86_64::*;
        let masks: [u16; V] = std::array::from_fn(|h| match self.cols[h] {
            16.. => u16::MAX,
            n => (1u16 << n) - 1,
        });
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for kk in 0..self.k {
            let bp = self.b.wrapping_add(kk * self.ldb);
            let mut bv = [_mm512_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(masks[h], bp.wrapping_add(16 * h));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*self.a.add(i * self.rsa + kk * self.csa));
                for (acc, b) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *b, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (h, v) in acc.iter().enumerate() {
                let p = self.c.wrapping_add(i * self.ldc + 16 * h);
                let mk = masks[h];
                let v = match self.mode {
                    Mode::Store => *v,
                    Mode::Scale(beta) => _mm512_add_ps(
                        _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p), _mm512_set1_ps(beta)),
                        *v,
                    ),
                };
                _mm512_mask_storeu_ps(p, mk, v);
            }
        }
    }

    /// `R` rows × `V` vectors of 8 columns: full vectors loaded and stored whole, a partial
    /// last one through AVX2's masked loads and stores (masked lanes are not touched).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const V: usize>(&self) {
        use std::arch::x86_64::*;
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks: [__m256i; V] = std::array::from_fn(|h| {
            _mm256_cmpgt_epi32(_mm256_set1_epi32(self.cols[h] as i32), lane)
        });
        let full: [bool; V] = std::array::from_fn(|h| self.cols[h] >= 8);
        let load = |p: *const f32, h: usize| {
            if full[h] {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, masks[h])
            }
        };
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for kk in 0..self.k {
            let bp = self.b.wrapping_add(kk * self.ldb);
            let mut bv = [_mm256_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = load(bp.wrapping_add(8 * h), h);
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*self.a.add(i * self.rsa + kk * self.csa));
                for (acc, b) in acc.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, *b, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (h, v) in acc.iter().enumerate() {
                let p = self.c.wrapping_add(i * self.ldc + 8 * h);
                let v = match self.mode {
                    Mode::Store => *v,
                    Mode::Scale(beta) => {
                        _mm256_add_ps(_mm256_mul_ps(load(p, h), _mm256_set1_ps(beta)), *v)
                    }
                };
                if full[h] {
                    _mm256_storeu_ps(p, v);
                } else {
                    _mm256_maskstore_ps(p, masks[h], v);
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn avx512<const R: usize, const V: usize>(&self) {
        unreachable!("no kernel off x86-64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn avx2<const R: usize, const V: usize>(&self) {
        unreachable!("no kernel off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels this CPU runs, whatever the tier's limit.
    fn supported() -> Vec<Kernel> {
        [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&t| t <= isa::detected())
            .filter_map(kernel_of)
            .collect()
    }

    /// A matrix of `rows`×`cols` with distinct values, stored row-major, transposed, or with
    /// padded rows behind an offset.
    fn stored(rows: usize, cols: usize, how: usize, seed: u32) -> (Vec<f32>, usize, usize, usize) {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        match how {
            0 => ((0..rows * cols).map(|_| next()).collect(), 0, cols, 1),
            1 => ((0..rows * cols).map(|_| next()).collect(), 0, 1, rows),
            _ => (
                (0..5 + rows * (cols + 3)).map(|_| next()).collect(),
                5,
                cols + 3,
                1,
            ),
        }
    }

    fn at(m: &MatRef<'_, f32>, i: usize, j: usize) -> f64 {
        m.data[m.offset + i * m.rs + j * m.cs] as f64
    }

    #[test]
    fn matches_a_plain_sum_on_edges_views_and_betas() {
        let kernels = supported();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 nor AVX-512F (the gemm crate runs)");
        }
        let shapes = [
            (12, 32, 32),
            (13, 33, 31),
            (1, 5, 1),
            (25, 300, 70),
            (150, 530, 100),
            // matrix–vector products: tiles of 8 and 4 vectors, partial ones
            (1, 300, 290),
            (2, 70, 130),
            (3, 40, 75),
            (4, 9, 64),
        ];
        for &(m, k, n) in &shapes {
            for how in 0..3 {
                let (ad, ao, ars, acs) = stored(m, k, how, 1);
                let (bd, bo, brs, bcs) = stored(k, n, (how + 1) % 3, 2);
                let a = MatRef {
                    data: &ad,
                    offset: ao,
                    rows: m,
                    cols: k,
                    rs: ars,
                    cs: acs,
                };
                let b = MatRef {
                    data: &bd,
                    offset: bo,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                for (beta, &kernel) in [0.0f32, 1.0, 0.5]
                    .into_iter()
                    .flat_map(|beta| kernels.iter().map(move |k| (beta, k)))
                {
                    let before: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
                    let mut out = before.clone();
                    // SAFETY: `out` holds m·n initialised floats.
                    unsafe { sgemm(kernel, a, b, beta, out.as_mut_ptr(), 2) };
                    for i in 0..m {
                        for j in 0..n {
                            let (mut want, mut size) =
                                (beta as f64 * before[i * n + j] as f64, 0.0);
                            for p in 0..k {
                                want += at(&a, i, p) * at(&b, p, j);
                                size += (at(&a, i, p) * at(&b, p, j)).abs();
                            }
                            let got = out[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (size + 1.0),
                                "{kernel:?} ({m},{k},{n}) layout {how} beta {beta} at ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn neither_the_thread_count_nor_the_tier_changes_a_bit() {
        let kernels = supported();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 nor AVX-512F");
        }
        for &(m, k, n) in &[(300, 600, 90), (40, 700, 520), (1, 784, 512), (3, 400, 300)] {
            let (ad, _, _, _) = stored(m, k, 0, 3);
            let (bd, _, brs, bcs) = stored(k, n, 1, 4);
            let a = MatRef {
                data: &ad,
                offset: 0,
                rows: m,
                cols: k,
                rs: k,
                cs: 1,
            };
            let b = MatRef {
                data: &bd,
                offset: 0,
                rows: k,
                cols: n,
                rs: brs,
                cs: bcs,
            };
            let run = |kernel, t| {
                let mut out = vec![1.0f32; m * n];
                // SAFETY: `out` holds m·n initialised floats; the CPU runs `kernel`.
                unsafe { sgemm(kernel, a, b, 1.0, out.as_mut_ptr(), t) };
                out
            };
            // Every kernel and thread count gives the bits of the first kernel on one thread.
            let Some(&first) = kernels.first() else {
                return;
            };
            let one = run(first, 1);
            for &kernel in &kernels {
                for t in [1, 2, 3, 4, 7] {
                    assert!(
                        one.iter()
                            .zip(run(kernel, t))
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{kernel:?} on {t} threads"
                    );
                }
            }
        }
    }
}
