//! Our own f32 kernel for small and thin products on x86-64 CPUs with AVX-512F (checked at
//! run time): no packing, a register tile of up to 12 rows × 32 columns (24 zmm accumulators),
//! B read in place when its rows are contiguous, A broadcast from wherever it lies, the whole
//! k sum in registers. The `gemm` crate packs its operands first, which costs more than the
//! product at these sizes: the (32,64,3) product of the tiny workload took 1.5 µs there and
//! 0.6 µs here (`cargo bench -p nabla --bench core -- small_products`). Large products stay with the `gemm` crate: a packed kernel
//! of ours reached only 0.85× of its speed there (bench/README.md).
//!
//! Every output element is computed the same way whoever computes it (k ascending, one
//! accumulator), so results are bit-identical for any thread count.

use super::operand::{with_rows_of, MatRef};

/// Products of at most this many multiply-adds come here (and thin ones, of at most 16 columns).
const SMALL_MAX: usize = 1 << 18;
/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
const NR: usize = 32;

/// Whether this CPU runs the kernel (AVX-512F, checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether a product of these sizes goes to this kernel: AVX-512F is here and the product is
/// small (at most 2¹⁸ multiply-adds) or thin (at most 16 columns), and B's rows are contiguous
/// or B is small enough (at most 2,048 values) that copying it costs less than `gemm`'s packing
/// (a 64×64 transposed B did not: 6.1 vs 5.0 µs). Measured in `benches/core.rs`
/// (`small_products`).
pub fn suits(m: usize, k: usize, n: usize, b_rows_contiguous: bool) -> bool {
    (m.saturating_mul(n).saturating_mul(k) <= SMALL_MAX || n <= 16)
        && (b_rows_contiguous || k.saturating_mul(n) <= 2048)
        && available()
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
/// never read (it may be uninitialised). The CPU, the shapes and the operands' bounds are
/// asserted here (an internal error: `gemm_into` checks them before calling).
///
/// # Safety
/// `out` is valid for writes of m·n floats (and initialised where beta ≠ 0).
pub unsafe fn sgemm(
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    out: *mut f32,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        available() && k == b.rows && m > 0 && n > 0 && k > 0 && a.in_bounds() && b.in_bounds(),
        "internal: sgemm operands disagree"
    );
    let o = Out { ptr: out, ld: n };
    let t = if m * n * k < (1 << 20) {
        1
    } else {
        threads.max(1)
    };
    if b.cs == 1 {
        return split(m, n, t, |r, c| tiles(&a, &b, beta, o, r, c));
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
        split(m, n, t, |r, c| tiles(&a, &b, beta, o, r, c));
    });
}

/// Runs `f(rows, columns)` on `t` threads, each on its own part of the m×n output: the axis
/// with more tiles cut into whole tiles (the same tiles one thread would compute).
fn split(m: usize, n: usize, t: usize, f: impl Fn(Range, Range) + Sync) {
    let tile = (MR, NR);
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
    rayon::scope(|s| {
        for p in 0..t {
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
fn tiles(a: &MatRef<'_, f32>, b: &MatRef<'_, f32>, beta: f32, o: Out, r: Range, c: Range) {
    let mode = if beta == 0.0 {
        Mode::Store
    } else {
        Mode::Scale(beta)
    };
    for j0 in (c.0..c.1).step_by(NR) {
        let cols = NR.min(c.1 - j0);
        let masks = [mask(cols), mask(cols.saturating_sub(16))];
        for i0 in (r.0..r.1).step_by(MR) {
            let rows = MR.min(r.1 - i0);
            let t = Tile {
                k: a.cols,
                a: a.data[a.offset + i0 * a.rs..].as_ptr(),
                rsa: a.rs,
                csa: a.cs,
                b: b.data[b.offset + j0..].as_ptr(),
                ldb: b.rs,
                masks,
                // SAFETY (of the pointer): row i0 < m, column j0 < n of the m×n output.
                c: unsafe { o.ptr.add(i0 * o.ld + j0) },
                ldc: o.ld,
                mode,
            };
            // SAFETY: `sgemm` checked `available()` and that every element of a and b lies in
            // its slice; the tile reads rows i0..i0+rows of A, all k rows and columns
            // j0..j0+cols of B and writes that rectangle of the output, which only this thread
            // writes (masked lanes are neither read nor written).
            unsafe { t.run(rows, cols > 16) };
        }
    }
}

/// The lane mask of the first `n` (at most 16) lanes.
fn mask(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
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
    masks: [u16; 2],
    c: *mut f32,
    ldc: usize,
    mode: Mode,
}

impl Tile {
    /// Runs the tile with `rows` (1..=MR) rows and one or two vectors of columns.
    ///
    /// # Safety
    /// AVX-512F is available and the pointers cover what the tile reads and writes.
    unsafe fn run(&self, rows: usize, two: bool) {
        macro_rules! by_rows {
            ($v:literal) => {
                match rows {
                    1 => self.tile::<1, $v>(),
                    2 => self.tile::<2, $v>(),
                    3 => self.tile::<3, $v>(),
                    4 => self.tile::<4, $v>(),
                    5 => self.tile::<5, $v>(),
                    6 => self.tile::<6, $v>(),
                    7 => self.tile::<7, $v>(),
                    8 => self.tile::<8, $v>(),
                    9 => self.tile::<9, $v>(),
                    10 => self.tile::<10, $v>(),
                    11 => self.tile::<11, $v>(),
                    _ => self.tile::<12, $v>(),
                }
            };
        }
        if two {
            by_rows!(2)
        } else {
            by_rows!(1)
        }
    }

    /// `R` rows × `V` vectors of 16 columns (the last ones masked).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize>(&self) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for kk in 0..self.k {
            let bp = self.b.wrapping_add(kk * self.ldb);
            let mut bv = [_mm512_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(self.masks[h], bp.wrapping_add(16 * h));
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
                let mk = self.masks[h];
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

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn tile<const R: usize, const V: usize>(&self) {
        unreachable!("available() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F (the gemm crate runs instead)");
            return;
        }
        let shapes = [
            (12, 32, 32),
            (13, 33, 31),
            (1, 5, 1),
            (25, 300, 70),
            (150, 530, 100),
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
                for beta in [0.0f32, 1.0, 0.5] {
                    let before: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
                    let mut out = before.clone();
                    // SAFETY: `out` holds m·n initialised floats.
                    unsafe { sgemm(a, b, beta, out.as_mut_ptr(), 2) };
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
                                "({m},{k},{n}) layout {how} beta {beta} at ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_thread_count_does_not_change_a_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for &(m, k, n) in &[(300, 600, 90), (40, 700, 520)] {
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
            let run = |t| {
                let mut out = vec![1.0f32; m * n];
                // SAFETY: `out` holds m·n initialised floats.
                unsafe { sgemm(a, b, 1.0, out.as_mut_ptr(), t) };
                out
            };
            let one = run(1);
            for t in [2, 3, 4, 7] {
                assert!(
                    one.iter()
                        .zip(run(t))
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{t} threads"
                );
            }
        }
    }
}
