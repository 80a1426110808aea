//! How a tensor reads its storage: an offset, a shape and a stride per axis. Views
//! (transpose, permute, narrow, broadcast, unsqueeze/squeeze, reshape of a contiguous tensor)
//! are new layouts over the same storage, made in O(rank) time.
//!
//! Invariant, checked where a layout is paired with a storage: every element the layout
//! addresses lies inside the storage (`span_end() <= storage.len()`). Storage never changes
//! length, so the check holds for the layout's lifetime.

use std::ops::{Deref, DerefMut};

use super::shape::numel;

const INLINE: usize = 6;

/// A short list of dimensions or strides, stored inline up to rank 6 so that making a tensor
/// or a view allocates nothing for its layout.
#[derive(Clone)]
enum Dims {
    Inline { len: u8, d: [usize; INLINE] },
    Heap(Vec<usize>),
}

impl Dims {
    fn from_slice(s: &[usize]) -> Self {
        if s.len() <= INLINE {
            let mut d = [0; INLINE];
            d[..s.len()].copy_from_slice(s);
            Dims::Inline {
                len: s.len() as u8,
                d,
            }
        } else {
            Dims::Heap(s.to_vec())
        }
    }

    fn insert(&mut self, at: usize, v: usize) {
        let mut all = self.to_vec();
        all.insert(at, v);
        *self = Dims::from_slice(&all);
    }

    fn remove(&mut self, at: usize) {
        let mut all = self.to_vec();
        all.remove(at);
        *self = Dims::from_slice(&all);
    }
}

impl Deref for Dims {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        match self {
            Dims::Inline { len, d } => &d[..*len as usize],
            Dims::Heap(v) => v,
        }
    }
}

impl DerefMut for Dims {
    fn deref_mut(&mut self) -> &mut [usize] {
        match self {
            Dims::Inline { len, d } => &mut d[..*len as usize],
            Dims::Heap(v) => v,
        }
    }
}

impl FromIterator<usize> for Dims {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let v: Vec<usize> = iter.into_iter().collect();
        Dims::from_slice(&v)
    }
}

impl PartialEq for Dims {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Dims {}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Offset, shape and strides (in elements) of a tensor over its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    offset: usize,
    shape: Dims,
    strides: Dims,
}

impl Layout {
    /// Row-major layout of `shape` starting at element 0.
    pub fn contiguous(shape: Vec<usize>) -> Self {
        Self::contiguous_at(0, &shape)
    }

    /// Row-major layout of `shape` starting at `offset`. Strides saturate instead of
    /// overflowing: only an empty shape, which no stride ever indexes, can get that far.
    fn contiguous_at(offset: usize, shape: &[usize]) -> Self {
        let mut strides = Dims::from_slice(shape);
        let mut acc: usize = 1;
        for (s, &d) in strides.iter_mut().zip(shape).rev() {
            *s = acc;
            acc = acc.saturating_mul(d);
        }
        Layout {
            offset,
            shape: Dims::from_slice(shape),
            strides,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element strides, one per axis (0 along a broadcast axis).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Index of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements addressed.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// True when the elements are the row-major run `offset..offset + numel` (axes of size 1
    /// may have any stride).
    pub fn is_contiguous(&self) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(self.strides.iter()).rev() {
            if d != 1 {
                if s != expected {
                    return false;
                }
                expected *= d;
            }
        }
        true
    }

    /// The storage range of a contiguous layout.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.numel())
    }

    /// One past the largest storage index addressed (the offset for an empty layout), or
    /// `None` if that index overflows.
    pub fn span_end(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(self.offset);
        }
        self.shape
            .iter()
            .zip(self.strides.iter())
            .try_fold(self.offset, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            })?
            .checked_add(1)
    }

    /// True when two index tuples address the same element (a broadcast view).
    pub fn has_overlap(&self) -> bool {
        self.shape
            .iter()
            .zip(self.strides.iter())
            .any(|(&d, &s)| d > 1 && s == 0)
    }

    /// Axes reordered: `out.shape[i] = shape[perm[i]]` (perm already validated).
    pub fn permute(&self, perm: &[usize]) -> Self {
        Layout {
            offset: self.offset,
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
        }
    }

    /// `len` entries from `start` along `axis` (range already validated).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Self {
        let mut out = self.clone();
        out.shape[axis] = len;
        if out.shape.contains(&0) {
            out.offset = 0; // an empty view addresses nothing; keep its offset inside any storage
        } else {
            out.offset += start * self.strides[axis];
        }
        out
    }

    /// Read as the larger shape `dst` (broadcast already validated): stride 0 along every new
    /// or stretched axis.
    pub fn broadcast_to(&self, dst: &[usize]) -> Self {
        let lead = dst.len() - self.shape.len();
        let strides = (0..dst.len())
            .map(|i| {
                if i < lead || (self.shape[i - lead] == 1 && dst[i] != 1) {
                    0
                } else {
                    self.strides[i - lead]
                }
            })
            .collect();
        Layout {
            offset: self.offset,
            shape: Dims::from_slice(dst),
            strides,
        }
    }

    /// The same elements under another shape, when that needs no copy (the layout is
    /// contiguous); the element count must already match.
    pub fn reshape(&self, shape: &[usize]) -> Option<Self> {
        self.is_contiguous()
            .then(|| Self::contiguous_at(self.offset, shape))
    }

    /// A new axis of size 1 at `axis` (≤ rank).
    pub fn unsqueeze(&self, axis: usize) -> Self {
        let mut out = self.clone();
        let stride = if axis < self.shape.len() {
            self.strides[axis].saturating_mul(self.shape[axis])
        } else {
            1
        };
        out.shape.insert(axis, 1);
        out.strides.insert(axis, stride);
        out
    }

    /// Removes an axis of size 1.
    pub fn squeeze(&self, axis: usize) -> Self {
        let mut out = self.clone();
        out.shape.remove(axis);
        out.strides.remove(axis);
        out
    }

    /// The layout with adjacent axes merged wherever one stride steps over the other, so that
    /// kernels walk the longest possible rows: `(shape, strides)`, at least one axis.
    pub fn coalesced(&self) -> (Vec<usize>, Vec<usize>) {
        let mut shape: Vec<usize> = Vec::with_capacity(self.shape.len().max(1));
        let mut strides: Vec<usize> = Vec::with_capacity(self.shape.len().max(1));
        for (&d, &s) in self.shape.iter().zip(self.strides.iter()) {
            if d == 1 {
                continue;
            }
            match (shape.last_mut(), strides.last_mut()) {
                (Some(pd), Some(ps)) if *ps == s * d => {
                    *pd *= d;
                    *ps = s;
                }
                _ => {
                    shape.push(d);
                    strides.push(s);
                }
            }
        }
        if shape.is_empty() {
            shape.push(1);
            strides.push(1);
        }
        (shape, strides)
    }

    /// The layout with every broadcast (stride-0) axis cut to length 1: each stored value it
    /// addresses, once.
    pub fn distinct(&self) -> Self {
        let mut out = self.clone();
        for (d, &s) in out.shape.iter_mut().zip(self.strides.iter()) {
            if s == 0 && *d > 1 {
                *d = 1;
            }
        }
        out
    }

    /// Calls `row(start, len, stride)` for every run along the innermost (coalesced) axis, in
    /// row-major order of the elements.
    pub fn for_each_row(&self, mut row: impl FnMut(usize, usize, usize)) {
        self.for_each_row_while(|start, len, stride| {
            row(start, len, stride);
            true
        });
    }

    /// Like [`for_each_row`](Layout::for_each_row), stopping after the first row for which
    /// `row` returns false.
    pub fn for_each_row_while(&self, mut row: impl FnMut(usize, usize, usize) -> bool) {
        if self.shape.contains(&0) {
            return;
        }
        let (shape, strides) = self.coalesced();
        let rank = shape.len();
        let (len, stride) = (shape[rank - 1], strides[rank - 1]);
        walk(
            &shape[..rank - 1],
            &strides[..rank - 1],
            self.offset,
            |base| row(base, len, stride),
        );
    }
}

/// Calls `f(base)` with the storage index of every element of the axes `shape` (strides
/// `strides`, starting at `offset`), in row-major order, until `f` returns false: the starts
/// of the rows (or planes) that kernels walk along the remaining axes.
pub(crate) fn walk(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    mut f: impl FnMut(usize) -> bool,
) {
    let mut idx = vec![0usize; shape.len()];
    let mut base = offset;
    loop {
        if !f(base) {
            return;
        }
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_contiguity_facts() {
        let l = Layout::contiguous(vec![2, 3, 4]);
        assert!(l.is_contiguous());
        assert_eq!(l.span_end(), Some(24));
        let p = l.permute(&[2, 0, 1]);
        assert!(!p.is_contiguous());
        assert_eq!(p.span_end(), Some(24));
        let n = l.narrow(1, 1, 2);
        assert_eq!((n.offset(), n.span_end()), (4, Some(24)));
        assert!(!n.is_contiguous());
        assert!(l.narrow(0, 1, 1).is_contiguous());
        let b = Layout::contiguous(vec![3, 1]).broadcast_to(&[2, 3, 5]);
        assert_eq!(b.strides(), &[0, 1, 0]);
        assert!(b.has_overlap());
        assert_eq!(b.span_end(), Some(3));
        let u = l.unsqueeze(1);
        assert!(u.is_contiguous());
        assert_eq!(u.squeeze(1), l);
        let deep = Layout::contiguous(vec![1, 2, 1, 2, 1, 2, 1, 2]);
        assert_eq!(deep.unsqueeze(3).squeeze(3), deep);
        assert_eq!(deep.shape(), &[1, 2, 1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn rows_visit_every_element_in_order() {
        let l = Layout::contiguous(vec![2, 3]).permute(&[1, 0]);
        let mut seen = Vec::new();
        l.for_each_row(|start, len, stride| seen.extend((0..len).map(|j| start + j * stride)));
        assert_eq!(seen, vec![0, 3, 1, 4, 2, 5]);
        let c = Layout::contiguous(vec![2, 3, 4]).narrow(0, 1, 1);
        let mut rows = Vec::new();
        c.for_each_row(|s, len, st| rows.push((s, len, st)));
        assert_eq!(rows, vec![(12, 12, 1)]);
    }
}
