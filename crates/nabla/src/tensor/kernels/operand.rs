//! A matrix operand as the products read it ([`MatRef`]: strides inside a storage slice), and
//! the row-major copy of a B operand that both product paths use (`with_rows_of`): the large
//! products of `matmul` before `gemm` packs a transposed B, and our own small-product kernel
//! (`sgemm`). Kept apart from both so that neither imports the other.

use crate::tensor::Float;

/// One matrix operand as the product reads it: `m[i][j] = data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    /// The storage the matrix lives in.
    pub data: &'a [T],
    /// Index of element (0, 0).
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The `rows × cols` matrix at `offset` in `data` whose rows are `rs` apart and whose
    /// columns are contiguous.
    pub(crate) fn row_major(
        data: &'a [T],
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
    ) -> Self {
        MatRef {
            data,
            offset,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose (strides swapped).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The same matrix over `data` (the same storage seen as another type).
    pub(super) fn with_data<'b, U>(&self, data: &'b [U]) -> MatRef<'b, U> {
        let MatRef {
            offset,
            rows,
            cols,
            rs,
            cs,
            ..
        } = *self;
        MatRef {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// True when every element lies inside `data` (the condition for the unsafe call).
    pub(crate) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c)?.checked_add(self.offset))
            .is_some_and(|last| last < self.data.len() && last <= isize::MAX as usize)
    }
}

/// Whether an m×n block whose rows are `ld ≥ n` apart fits in `len` values.
pub(super) fn block_fits(m: usize, n: usize, ld: usize, len: usize) -> bool {
    n <= ld
        && (m == 0
            || n == 0
            || (m - 1)
                .checked_mul(ld)
                .and_then(|r| r.checked_add(n))
                .is_some_and(|e| e <= len))
}

/// `out[i·ld + j] = beta·out[i·ld + j]` over an m×n block (0 where beta = 0, the old values
/// not read): a product with k = 0.
pub(super) fn scale_block<T: Float>(out: &mut [T], (m, n, ld): (usize, usize, usize), beta: T) {
    for row in out.chunks_mut(ld.max(1)).take(m) {
        for v in &mut row[..n] {
            *v = if beta == T::ZERO { T::ZERO } else { *v * beta };
        }
    }
}

thread_local! {
    /// A row-major copy of (part of) an f32 B, one per thread, reused (`with_rows_of`).
    static B_ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on columns `lo..lo + w` of `b` copied row-major (k×w) into this thread's buffer:
/// taken out of its slot for the call, so that a rayon job run inside `f` on this thread finds
/// the slot empty instead of the copy in use. Columns stored contiguously (a transposed
/// row-major matrix) go through `rows_of_columns`; other strides one value at a time.
pub(crate) fn with_rows_of<R>(
    b: &MatRef<'_, f32>,
    lo: usize,
    w: usize,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    let k = b.rows;
    let mut rows = B_ROWS.with(|c| c.take());
    if b.rs == 1 {
        rows_of_columns(b.data, b.offset + lo * b.cs, b.cs, k, w, &mut rows);
    } else {
        rows.clear();
        rows.extend(
            (0..k)
                .flat_map(|p| (lo..lo + w).map(move |j| (p, j)))
                .map(|(p, j)| b.data[b.offset + p * b.rs + j * b.cs]),
        );
    }
    let r = f(&rows[..k * w]);
    B_ROWS.with(|c| c.set(rows));
    r
}

/// Writes the k×w matrix whose column j is `src[off + j·cs ..][..k]` into `dst` row-major
/// (`dst[p·w + j]`): in 8×8 blocks transposed in AVX registers on the AVX2 and AVX-512 tiers, the
/// edges (and everything elsewhere) one value at a time.
pub(super) fn rows_of_columns(
    src: &[f32],
    off: usize,
    cs: usize,
    k: usize,
    w: usize,
    dst: &mut Vec<f32>,
) {
    if dst.len() < k * w {
        dst.resize(k * w, 0.0);
    }
    rows_of_columns_into(src, off, cs, k, w, &mut dst[..k * w]);
}

/// [`rows_of_columns`] into a slice of at least k·w values.
pub(super) fn rows_of_columns_into(
    src: &[f32],
    off: usize,
    cs: usize,
    k: usize,
    w: usize,
    dst: &mut [f32],
) {
    let dst = &mut dst[..k * w];
    let (mut jb, mut pb) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if crate::isa::active() >= crate::isa::Isa::Avx2 {
        (jb, pb) = (w / 8 * 8, k / 8 * 8);
        // SAFETY: the active tier has AVX2, so the CPU has AVX.
        unsafe { blocks_8x8(src, off, cs, (jb, pb), w, dst) };
    }
    for j in 0..w {
        let col = &src[off + j * cs..][..k];
        let from = if j < jb { pb } else { 0 };
        for (p, v) in col.iter().enumerate().skip(from) {
            dst[p * w + j] = *v;
        }
    }
}

/// The 8×8 blocks of `rows_of_columns` for columns 0..jb and rows 0..pb (multiples of 8).
///
/// # Safety
/// The CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn blocks_8x8(
    src: &[f32],
    off: usize,
    cs: usize,
    (jb, pb): (usize, usize),
    w: usize,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    for j0 in (0..jb).step_by(8) {
        for p0 in (0..pb).step_by(8) {
            // Row i of the block: column j0 + i of the matrix, values p0..p0+8 (bounds-checked).
            let r: [__m256; 8] = std::array::from_fn(|i| {
                _mm256_loadu_ps(src[off + (j0 + i) * cs + p0..][..8].as_ptr())
            });
            let o = transpose_8x8(r);
            for (q, v) in o.iter().enumerate() {
                _mm256_storeu_ps(dst[(p0 + q) * w + j0..][..8].as_mut_ptr(), *v);
            }
        }
    }
}

/// An 8 × 8 block of f32 transposed in AVX registers: row `q` of the result holds lane `q` of
/// each of the eight rows (shared by the product's B copy and the Winograd convolution's
/// channel transposes).
///
/// # Safety
/// The CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn transpose_8x8(
    r: [std::arch::x86_64::__m256; 8],
) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}
