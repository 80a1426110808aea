//! Side by side, in one process, on the same operands: each product of the fashion and wide
//! MLPs through nabla (`Tensor::matmul_t`, which cuts a large product into one single-threaded
//! `gemm` call per row or column range and thread; `kernels/matmul.rs`), through the `gemm` crate's
//! own rayon split, and through `gemm` on one thread, all on a pool of 2 threads. Prints median
//! and best GFLOP/s and whether the three gave the same bits.
//! `cargo run --release -p nabla --example gemm_split`.

use gemm::Parallelism;
use nabla::Tensor;
use std::time::Instant;

/// One product's operands, as stored, with the strides the product reads them with.
struct Operands {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    /// Row and column strides of a and b.
    strides: [isize; 4],
}

impl Operands {
    /// `a·b` through the `gemm` crate with parallelism `par`, into a new buffer.
    fn gemm(&self, par: Parallelism) -> Vec<f32> {
        let (m, k, n) = (self.m, self.k, self.n);
        let [rsa, csa, rsb, csb] = self.strides;
        let mut c = vec![0f32; m * n];
        // SAFETY: the strides describe a (m×k) and b (k×n) exactly; c holds m×n, row-major.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                csa,
                rsa,
                self.b.as_ptr(),
                csb,
                rsb,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        c
    }
}

fn main() {
    let shapes = [
        (128, 784, 512, false, false),
        (128, 512, 256, false, false),
        (784, 128, 512, true, false),
        (512, 128, 256, true, false),
        (128, 256, 512, false, true),
        (512, 2048, 2048, false, false),
        (2048, 512, 2048, true, false),
        (512, 2048, 2048, false, true),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a pool of 2 threads");
    for (m, k, n, ta, tb) in shapes {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let at = Tensor::<f32>::randn(&a_shape, 0.0, 1.0, 1).expect("a");
        let bt = Tensor::<f32>::randn(&b_shape, 0.0, 1.0, 2).expect("b");
        let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
        let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
        let ops = Operands {
            m,
            k,
            n,
            a: at.to_vec().expect("a's values"),
            b: bt.to_vec().expect("b's values"),
            strides: [rsa, csa, rsb, csb],
        };
        // Seconds of one product (nabla's result read out after the clock stops) and its values.
        let run = |v: usize| {
            let s = Instant::now();
            match v {
                0 => {
                    let c = at.matmul_t(&bt, ta, tb).expect("product");
                    (s.elapsed().as_secs_f64(), c.to_vec().expect("values"))
                }
                1 => (0.0, ops.gemm(Parallelism::Rayon(2))),
                _ => (0.0, ops.gemm(Parallelism::None)),
            }
        };
        let reps = (4e10 / (2.0 * (m * k * n) as f64)).clamp(20.0, 3000.0) as usize;
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        let mut outs = Vec::new();
        for r in 0..reps {
            for (v, t) in times.iter_mut().enumerate() {
                let s = Instant::now();
                let (secs, c) = pool.install(|| run(v));
                t.push(if v == 0 {
                    secs
                } else {
                    s.elapsed().as_secs_f64()
                });
                if r == 0 {
                    outs.push(c);
                }
            }
        }
        let bits = |c: &Vec<f32>| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let same = bits(&outs[0]) == bits(&outs[1]) && bits(&outs[0]) == bits(&outs[2]);
        let flops = 2.0 * (m * k * n) as f64;
        let rate = |t: &mut Vec<f64>| {
            t.sort_by(f64::total_cmp);
            format!(
                "{:.0}/{:.0}",
                flops / t[t.len() / 2] / 1e9,
                flops / t[0] / 1e9
            )
        };
        let [nabla, rayon2, one] = times.map(|mut t| rate(&mut t));
        println!(
            "{m}x{k}{}x{n}{}: nabla {nabla}  gemm rayon2 {rayon2}  gemm one thread {one} \
             GFLOP/s (median/best), same bits {same}",
            if ta { "(T)" } else { "" },
            if tb { "(T)" } else { "" },
        );
    }
}
