//! Shape arithmetic: element counts, NumPy broadcasting, axis checks. Strides live in
//! [`Layout`](super::Layout).

use crate::error::{Error, Result};

/// Formats a shape as `[2, 3]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Number of elements of a shape (1 for a scalar `[]`, 0 if any dimension is 0). Saturates
/// rather than overflowing; use [`checked_numel`] to validate a shape.
pub fn numel(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// Number of elements, or an error when the product overflows what memory could hold.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| {
            Error::shape(
                op,
                format!(
                    "shape {} has too many elements to allocate",
                    fmt_shape(shape)
                ),
            )
        })
}

/// The NumPy broadcast of two shapes: align at the right; each pair of
/// dimensions must be equal or one of them 1.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(
                op,
                format!(
                    "{} and {}: cannot broadcast, dimension {i} of the result is {da} vs {db}",
                    fmt_shape(a),
                    fmt_shape(b)
                ),
            ));
        };
    }
    Ok(out)
}

/// Checks that `src` broadcasts to `dst` (one-directional, as `broadcast_to` needs).
pub fn check_broadcast_to(op: &'static str, src: &[usize], dst: &[usize]) -> Result<()> {
    let ok = src.len() <= dst.len()
        && src
            .iter()
            .rev()
            .zip(dst.iter().rev())
            .all(|(&s, &d)| s == d || s == 1);
    if ok {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!("cannot broadcast {} to {}", fmt_shape(src), fmt_shape(dst)),
        ))
    }
}

/// Checks an axis against a rank.
pub fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(Error::arg(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        ))
    }
}

/// Validates and sorts a list of reduction axes (no duplicates, each < rank).
pub fn normalize_axes(op: &'static str, axes: &[usize], rank: usize) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            return Err(Error::arg(op, format!("axis {} is listed twice", w[0])));
        }
    }
    for &a in &sorted {
        check_axis(op, a, rank)?;
    }
    Ok(sorted)
}

/// The shape after reducing `axes` (sorted), keeping them as 1 or dropping them.
pub fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdim) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(d),
        })
        .collect()
}

/// The axes of `target`-broadcast-to-`shape` that must be summed to go back to `target`,
/// for gradients of broadcast operands. Returns (axes of `shape` to sum, keepdim-able).
pub fn sum_to_axes(shape: &[usize], target: &[usize]) -> Vec<usize> {
    let offset = shape.len() - target.len();
    (0..shape.len())
        .filter(|&i| i < offset || (target[i - offset] == 1 && shape[i] != 1))
        .collect()
}
