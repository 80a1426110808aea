//! Strided views against a naive reference: random chains of permute, narrow, unsqueeze and
//! broadcast applied both as O(1) views and as explicit copies (index arithmetic on plain
//! vectors); values, element-wise ops, products, reductions and gradients must agree.

mod common;
use common::unravel;
use nabla::testing::assert_close;
use nabla::{Rng, Tensor};

/// A tensor as plain row-major data, transformed by naive copies.
#[derive(Clone, Debug)]
struct Plain {
    data: Vec<f64>,
    shape: Vec<usize>,
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

impl Plain {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    fn map_index(&self, shape: Vec<usize>, src: impl Fn(&[usize]) -> Vec<usize>) -> Plain {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| self.data[ravel(&src(&unravel(i, &shape)), &self.shape)])
            .collect();
        Plain { data, shape }
    }
    fn permute(&self, perm: &[usize]) -> Plain {
        let shape = perm.iter().map(|&p| self.shape[p]).collect();
        self.map_index(shape, |idx| {
            let mut src = vec![0; idx.len()];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = idx[i];
            }
            src
        })
    }
    fn narrow(&self, axis: usize, start: usize, len: usize) -> Plain {
        let mut shape = self.shape.clone();
        shape[axis] = len;
        self.map_index(shape, |idx| {
            let mut src = idx.to_vec();
            src[axis] += start;
            src
        })
    }
    fn unsqueeze(&self, axis: usize) -> Plain {
        let mut shape = self.shape.clone();
        shape.insert(axis, 1);
        Plain {
            data: self.data.clone(),
            shape,
        }
    }
    fn broadcast_to(&self, shape: &[usize]) -> Plain {
        let lead = shape.len() - self.shape.len();
        self.map_index(shape.to_vec(), |idx| {
            (0..self.shape.len())
                .map(|d| if self.shape[d] == 1 { 0 } else { idx[d + lead] })
                .collect()
        })
    }
}

/// A random chain of views applied to both representations.
fn random_view(rng: &mut Rng) -> (Tensor<f64>, Plain) {
    let rank = 1 + rng.below(3);
    let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(5)).collect();
    let base = Tensor::<f64>::randn(&shape, 0.0, 1.0, rng.below(1000) as u64).unwrap();
    let mut plain = Plain {
        data: base.to_vec().unwrap(),
        shape,
    };
    let mut t = base;
    for _ in 0..1 + rng.below(4) {
        let r = t.rank();
        match rng.below(4) {
            0 if r > 0 => {
                let mut perm: Vec<usize> = (0..r).collect();
                rng.shuffle(&mut perm);
                t = t.permute(&perm).unwrap();
                plain = plain.permute(&perm);
            }
            1 if r > 0 => {
                let axis = rng.below(r);
                let dim = t.shape()[axis];
                let start = rng.below(dim);
                let len = 1 + rng.below(dim - start);
                t = t.narrow(axis, start, len).unwrap();
                plain = plain.narrow(axis, start, len);
            }
            2 if r < 4 => {
                let axis = rng.below(r + 1);
                t = t.unsqueeze(axis).unwrap();
                plain = plain.unsqueeze(axis);
            }
            _ => {
                // stretch every size-1 axis to a random size, maybe add a leading axis
                let mut shape: Vec<usize> = t
                    .shape()
                    .iter()
                    .map(|&d| if d == 1 { 1 + rng.below(3) } else { d })
                    .collect();
                if r < 4 && rng.below(2) == 0 {
                    shape.insert(0, 2);
                }
                t = t.broadcast_to(&shape).unwrap();
                plain = plain.broadcast_to(&shape);
            }
        }
        assert_eq!(t.shape(), &plain.shape[..]);
    }
    (t, plain)
}

fn from_plain(p: &Plain) -> Tensor<f64> {
    Tensor::from_vec(p.data.clone(), &p.shape).unwrap()
}

#[test]
fn views_read_the_same_values_as_copies() {
    let mut rng = Rng::new(11);
    let mut non_contiguous = 0;
    for case in 0..500 {
        let (v, p) = random_view(&mut rng);
        non_contiguous += usize::from(!v.is_contiguous());
        assert_eq!(v.to_vec().unwrap(), p.data, "case {case}: {:?}", v.layout());
        assert_eq!(v.numel(), p.numel());
        // element-wise, unary and binary, against the copy
        let c = from_plain(&p);
        assert_eq!(
            v.exp().unwrap().to_vec().unwrap(),
            c.exp().unwrap().to_vec().unwrap()
        );
        let (w, q) = random_view(&mut rng);
        if let Ok(sum) = c.add(&from_plain(&q)) {
            assert_eq!(v.add(&w).unwrap().to_vec().unwrap(), sum.to_vec().unwrap());
        }
        // reductions and softmax read a contiguous copy internally
        let last = v.rank() - 1;
        assert_close(
            &v.sum(&[last], false).unwrap(),
            &c.sum(&[last], false).unwrap(),
            1e-12,
            0.0,
        )
        .unwrap();
        assert_eq!(
            v.softmax(last).unwrap().to_vec().unwrap(),
            c.softmax(last).unwrap().to_vec().unwrap()
        );
        // products read strided operands directly
        if v.rank() == 2 {
            let k = v.shape()[1];
            let m = Tensor::<f64>::randn(&[k, 3], 0.0, 1.0, case).unwrap();
            assert_close(&v.matmul(&m).unwrap(), &c.matmul(&m).unwrap(), 1e-12, 1e-12).unwrap();
            let left = Tensor::<f64>::randn(&[2, v.shape()[0]], 0.0, 1.0, case).unwrap();
            assert_close(
                &left.matmul(&v).unwrap(),
                &left.matmul(&c).unwrap(),
                1e-12,
                1e-12,
            )
            .unwrap();
        }
        if v.rank() == 3 && v.shape()[0] > 0 {
            let k = v.shape()[2];
            let m = Tensor::<f64>::randn(&[k, 2], 0.0, 1.0, case).unwrap();
            assert_close(&v.matmul(&m).unwrap(), &c.matmul(&m).unwrap(), 1e-12, 1e-12).unwrap();
        }
    }
    assert!(
        non_contiguous > 200,
        "only {non_contiguous} non-contiguous views"
    );
}

#[test]
fn gradients_through_view_chains_match_copies() {
    let mut rng = Rng::new(12);
    for _ in 0..200 {
        let rank = 1 + rng.below(3);
        let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(4)).collect();
        let x = Tensor::<f64>::randn(&shape, 0.0, 1.0, rng.below(100) as u64)
            .unwrap()
            .requires_grad();
        // a chain of views, then a weighted sum: the gradient scatters the weights back
        let mut v = x.clone();
        let mut perm: Vec<usize> = (0..rank).collect();
        rng.shuffle(&mut perm);
        v = v.permute(&perm).unwrap();
        let axis = rng.below(rank);
        let dim = v.shape()[axis];
        let start = rng.below(dim);
        v = v.narrow(axis, start, dim - start).unwrap();
        v = v
            .unsqueeze(0)
            .unwrap()
            .broadcast_to(&[[2].as_slice(), v.shape()].concat())
            .unwrap();
        let w = Tensor::<f64>::randn(v.shape(), 0.0, 1.0, 5).unwrap();
        let g = v.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let got = g.get(&x).unwrap().to_vec().unwrap();
        // reference: accumulate each weight at the source index of its element
        let mut want = vec![0.0; x.numel()];
        let ws = w.to_vec().unwrap();
        let vshape = v.shape().to_vec();
        for (i, &wi) in ws.iter().enumerate() {
            let idx = unravel(i, &vshape);
            let mut pidx = idx[1..].to_vec();
            pidx[axis] += start;
            let mut src = vec![0; rank];
            for (j, &p) in perm.iter().enumerate() {
                src[p] = pidx[j];
            }
            want[ravel(&src, &shape)] += wi;
        }
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }
}

#[test]
fn views_share_storage_and_copy_nothing() {
    let x = Tensor::<f32>::zeros(&[64, 32]).unwrap();
    for v in [
        x.t().unwrap(),
        x.permute(&[1, 0]).unwrap(),
        x.narrow(0, 3, 10).unwrap(),
        x.unsqueeze(1).unwrap(),
        x.unsqueeze(0).unwrap().broadcast_to(&[5, 64, 32]).unwrap(),
        x.reshape(&[32, 64]).unwrap(),
        x.narrow(0, 2, 1).unwrap().squeeze(0).unwrap(),
    ] {
        assert_eq!(v.storage_bytes(), x.storage_bytes());
        v.version(); // shared counter
    }
    // a write through a view is seen by the base, and bumps the shared version
    let col = x.narrow(1, 4, 1).unwrap();
    col.update_data(|d| d.fill(2.0)).unwrap();
    assert_eq!(x.version(), 1);
    let xs = x.to_vec().unwrap();
    assert_eq!((xs[4], xs[36], xs[5]), (2.0, 2.0, 0.0));
    // a write through a broadcast view is refused
    let e = x.unsqueeze(0).unwrap().broadcast_to(&[2, 64, 32]).unwrap();
    assert!(e.update_data(|d| d.fill(1.0)).is_err());
    // contiguous() of a contiguous tensor is the tensor itself; of a view, a copy
    assert_eq!(x.contiguous().unwrap().id(), x.id());
    let tc = x.t().unwrap().contiguous().unwrap();
    assert!(tc.is_contiguous() && tc.storage_bytes() == x.storage_bytes());
    // graph_stats counts a storage shared by views once
    let w = Tensor::<f32>::ones(&[32, 8]).unwrap().requires_grad();
    let y = x.matmul(&w).unwrap();
    let loss = y.t().unwrap().narrow(0, 0, 4).unwrap().sum_all().unwrap();
    let stats = loss.graph_stats();
    assert_eq!(
        stats.saved_bytes,
        64 * 8 * 4 + 4,
        "y once, plus the scalar loss"
    );
}

#[test]
fn permuted_copies_in_planes_and_tiles_put_every_value_in_place() {
    // Transposed planes of ≥ 16 × 16 (copied in tiles, with short edge tiles), planes whose
    // rows are contiguous runs, and planes read value by value, under leading axes.
    let cases: [(&[usize], &[usize]); 6] = [
        (&[37, 21], &[1, 0]),
        (&[3, 40, 17], &[0, 2, 1]),
        (&[2, 19, 3, 33], &[1, 3, 0, 2]),
        (&[2, 16, 16], &[2, 1, 0]),
        (&[12, 4, 5, 32], &[0, 2, 1, 3]),
        (&[5, 3, 7], &[2, 0, 1]),
    ];
    for (shape, perm) in cases {
        let n: usize = shape.iter().product();
        let x = Tensor::<f64>::from_vec((0..n).map(|i| i as f64).collect(), shape).unwrap();
        let v = x.permute(perm).unwrap();
        let got = v.contiguous().unwrap().to_vec().unwrap();
        let mut strides = vec![1; shape.len()];
        for d in (0..shape.len() - 1).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        for (flat, &g) in got.iter().enumerate() {
            // The view's index of `flat`, axis by axis from the last; axis i of the view is
            // axis perm[i] of x.
            let (mut rest, mut at) = (flat, 0);
            for (i, &d) in v.shape().iter().enumerate().rev() {
                at += (rest % d) * strides[perm[i]];
                rest /= d;
            }
            assert_eq!(g, at as f64, "{shape:?} permuted {perm:?}, element {flat}");
        }
    }
}
