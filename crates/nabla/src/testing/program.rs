//! Random programs over the public tensor API, decoded from bytes: the fuzz target
//! `fuzz/fuzz_targets/ops.rs` and a seeded property test run them. Shapes are drawn from a
//! table that mixes small sizes with zero, huge and overflowing ones; every constructor, view,
//! operation, reduction, backward pass and in-place edit is reachable. A call may return `Err`;
//! what it may not do is panic, abort or return a tensor that breaks its own invariants.

use crate::autograd::{checkpoint, grad, no_grad, GradOptions, Step};
use crate::error::Result;
use crate::tensor::{with_allocation_limit, Tensor};

/// Dimensions the decoder picks from: small, empty, and sizes whose products overflow or
/// cannot be allocated.
const DIMS: [usize; 16] = [
    0,
    1,
    1,
    2,
    2,
    3,
    3,
    4,
    5,
    7,
    1 << 20,
    1 << 31,
    1 << 40,
    1 << 62,
    usize::MAX / 2 + 1,
    usize::MAX,
];

/// Bytes any one buffer may take while a program runs (larger ones are allocation errors).
pub const PROGRAM_ALLOCATION_LIMIT: usize = 1 << 22;

/// Largest matrix product (m·k·n multiply-adds) a program may ask for: views can make tiny
/// storages look huge, and the product's work is not bounded by its output's size.
const MAX_PRODUCT_WORK: u128 = 1 << 22;

struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n.max(1)
    }
    fn dim(&mut self) -> usize {
        DIMS[self.below(DIMS.len())]
    }
    fn small(&mut self) -> usize {
        self.below(6)
    }
    fn shape(&mut self) -> Vec<usize> {
        let rank = self.below(5);
        (0..rank).map(|_| self.dim()).collect()
    }
    fn float(&mut self) -> f64 {
        const VALUES: [f64; 12] = [
            0.0,
            1.0,
            -1.0,
            0.5,
            2.0,
            -3.0,
            1e-3,
            1e30,
            -1e30,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        VALUES[self.below(VALUES.len())]
    }
    fn indices(&mut self) -> Vec<usize> {
        let n = self.below(9);
        (0..n).map(|_| self.below(8)).collect()
    }
}

/// Checks what every returned tensor must satisfy: its layout lies inside its storage, and a
/// small one reads back as exactly `numel` values.
fn check(t: &Tensor<f64>) {
    let end = t.layout().span_end();
    assert!(
        t.numel() == 0 || end.is_some_and(|e| e * 8 <= t.storage_bytes()),
        "layout {:?} outside a storage of {} bytes",
        t.layout(),
        t.storage_bytes()
    );
    if t.numel() <= 1 << 12 {
        let v = t.to_vec().expect("a small tensor reads back");
        assert_eq!(v.len(), t.numel());
    }
}

fn product_work(a: &Tensor<f64>, b: &Tensor<f64>) -> u128 {
    let dims = |t: &Tensor<f64>| {
        t.shape()
            .iter()
            .fold(1u128, |a, &d| a.saturating_mul(d as u128))
    };
    let k = a.shape().last().copied().unwrap_or(1) as u128;
    dims(a).saturating_mul(dims(b)) / k.max(1)
}

fn step(bytes: &mut Bytes<'_>, pool: &[Tensor<f64>]) -> Result<Option<Tensor<f64>>> {
    let pick = |bytes: &mut Bytes<'_>, pool: &[Tensor<f64>]| pool[bytes.below(pool.len())].clone();
    let op = bytes.below(52);
    if pool.is_empty() && op >= 8 {
        return Ok(None);
    }
    let t = match op {
        0 => Tensor::zeros(&bytes.shape())?,
        1 => Tensor::ones(&bytes.shape())?,
        2 => Tensor::full(&bytes.shape(), bytes.float())?,
        3 => Tensor::randn(&bytes.shape(), 0.0, 1.0, bytes.byte() as u64)?,
        4 => Tensor::rand_uniform(&bytes.shape(), -2.0, 2.0, bytes.byte() as u64)?,
        5 => Tensor::arange(bytes.float(), bytes.float(), bytes.float())?,
        6 => {
            let shape = bytes.shape();
            let n = bytes.below(40);
            Tensor::from_vec((0..n).map(|i| i as f64 - 3.0).collect(), &shape)?
        }
        7 => Tensor::scalar(bytes.float()),
        8 => pick(bytes, pool).neg()?,
        9 => pick(bytes, pool).exp()?,
        10 => pick(bytes, pool).log()?,
        11 => pick(bytes, pool).sqrt()?,
        12 => pick(bytes, pool).abs()?,
        13 => pick(bytes, pool).relu()?,
        14 => pick(bytes, pool).leaky_relu(0.1)?,
        15 => pick(bytes, pool).sigmoid()?,
        16 => pick(bytes, pool).tanh()?,
        17 => pick(bytes, pool).gelu()?.softplus()?,
        18 => pick(bytes, pool).clamp(bytes.float(), bytes.float())?,
        19 => pick(bytes, pool).pow_scalar(bytes.float())?,
        20 => pick(bytes, pool)
            .add_scalar(bytes.float())?
            .mul_scalar(bytes.float())?,
        21 => pick(bytes, pool).add(&pick(bytes, pool))?,
        22 => pick(bytes, pool).sub(&pick(bytes, pool))?,
        23 => pick(bytes, pool).mul(&pick(bytes, pool))?,
        24 => pick(bytes, pool).div(&pick(bytes, pool))?,
        25 | 26 => {
            let (a, b) = (pick(bytes, pool), pick(bytes, pool));
            if product_work(&a, &b) > MAX_PRODUCT_WORK {
                return Ok(None);
            }
            let (ta, tb) = (bytes.byte() & 1 == 1, bytes.byte() & 1 == 1);
            a.matmul_t(&b, ta && op == 26, tb && op == 26)?
        }
        27 => {
            let (x, w, b) = (pick(bytes, pool), pick(bytes, pool), pick(bytes, pool));
            if product_work(&x, &w) > MAX_PRODUCT_WORK {
                return Ok(None);
            }
            x.linear(&w, &b)?
        }
        28 => pick(bytes, pool).reshape(&bytes.shape())?,
        29 => {
            let x = pick(bytes, pool);
            let perm: Vec<usize> = (0..x.rank()).map(|_| bytes.below(x.rank() + 1)).collect();
            x.permute(&perm)?
        }
        30 => pick(bytes, pool).transpose(bytes.small(), bytes.small())?,
        31 => pick(bytes, pool).t()?,
        32 => pick(bytes, pool).unsqueeze(bytes.small())?,
        33 => pick(bytes, pool).squeeze(bytes.small())?,
        34 => pick(bytes, pool).broadcast_to(&bytes.shape())?,
        35 => {
            let x = pick(bytes, pool);
            let (axis, start, len) = (bytes.small(), bytes.dim(), bytes.dim());
            x.narrow(axis, start, len.min(3))?
        }
        36 => pick(bytes, pool).contiguous()?,
        37 => {
            let axes: Vec<usize> = (0..1 + bytes.below(2)).map(|_| bytes.small()).collect();
            pick(bytes, pool).sum(&axes, bytes.byte() & 1 == 1)?
        }
        38 => pick(bytes, pool).mean_all()?,
        39 => {
            let axes = [bytes.small()];
            pick(bytes, pool).max(&axes, bytes.byte() & 1 == 1)?
        }
        40 => pick(bytes, pool).softmax(bytes.small())?,
        41 => pick(bytes, pool).log_softmax(bytes.small())?,
        42 => pick(bytes, pool).index_select(bytes.small(), &bytes.indices())?,
        43 => pick(bytes, pool).gather(bytes.small(), &bytes.indices())?,
        44 => {
            let parts = [pick(bytes, pool), pick(bytes, pool)];
            Tensor::concat(&[&parts[0], &parts[1]], bytes.small())?
        }
        45 => {
            let x = pick(bytes, pool).requires_grad();
            let y = x.exp()?.mul(&x)?.sum_all()?;
            let g = y.backward()?;
            g.get(&x).cloned().unwrap_or(x)
        }
        46 => {
            let x = pick(bytes, pool);
            let v = bytes.float();
            x.update_data(|d| d.iter_mut().for_each(|e| *e = v))?;
            x
        }
        47 => {
            let step = match bytes.below(4) {
                0 => Step::Relu,
                1 => Step::LeakyRelu(bytes.float()),
                2 => Step::Clamp(bytes.float(), bytes.float()),
                _ => Step::Sign,
            };
            pick(bytes, pool).step_mul(&pick(bytes, pool), step)?
        }
        48 => {
            let (x, axis, len) = (pick(bytes, pool), bytes.small(), bytes.dim());
            if bytes.byte() & 1 == 1 {
                x.index_add(axis, &bytes.indices(), len)?
            } else {
                x.scatter_add(axis, &bytes.indices(), len)?
            }
        }
        49 => {
            // a second derivative through whatever the pool holds
            let (x, w) = (pick(bytes, pool).requires_grad(), pick(bytes, pool));
            let y = x.tanh()?.mul(&w)?.sum_all()?;
            let opts = GradOptions {
                create_graph: true,
                allow_unused: true,
                ..Default::default()
            };
            let g = grad(&[y], std::slice::from_ref(&x), opts)?.remove(0);
            let again = GradOptions {
                allow_unused: true,
                ..Default::default()
            };
            grad(&[g.sum_all()?], &[x], again)?.remove(0)
        }
        50 => {
            let (x, w) = (pick(bytes, pool).requires_grad(), pick(bytes, pool));
            let y = checkpoint(move |xs| xs[0].sigmoid()?.mul(&w), std::slice::from_ref(&x))?;
            let g = y.sum_all()?.backward()?;
            g.get(&x).cloned().unwrap_or(y)
        }
        _ => {
            let x = pick(bytes, pool);
            let target = pick(bytes, pool);
            let _ = x.argmax(bytes.small());
            let _ = x.all_finite();
            let _ = x.item();
            let _ = x.cast::<f32>()?;
            no_grad(|| x.softmax_cross_entropy(&target))?
        }
    };
    Ok(Some(t))
}

/// Decodes and runs one program; returns how many operations succeeded. Panics only if the
/// library broke an invariant (which is what the fuzzer looks for).
pub fn run_program(data: &[u8]) -> usize {
    with_allocation_limit(PROGRAM_ALLOCATION_LIMIT, || {
        let mut bytes = Bytes { data, at: 0 };
        let mut pool: Vec<Tensor<f64>> = Vec::new();
        let mut ok = 0;
        while !bytes.done() && ok < 64 {
            if let Ok(Some(t)) = step(&mut bytes, &pool) {
                check(&t);
                ok += 1;
                if pool.len() < 6 {
                    pool.push(t);
                } else {
                    let i = bytes.below(6);
                    pool[i] = t;
                }
            }
        }
        ok
    })
}
