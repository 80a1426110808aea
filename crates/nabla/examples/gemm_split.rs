//! Side by side, in one process, on the same operands: each product of the fashion and wide
//! MLPs through the `gemm` crate's own rayon split over 2 threads, through nabla's split (one
//! single-threaded `gemm` call per column range, one per thread; `kernels/matmul.rs`), and on
//! one thread. Prints median and best GFLOP/s and whether the three gave the same bits.
//! `cargo run --release -p nabla --example gemm_split`.

use gemm::{gemm, Parallelism};
use std::time::Instant;

/// The output pointer, shared by the two halves (disjoint columns).
struct P(*mut f32);
// SAFETY: the two calls that share it write disjoint columns.
unsafe impl Send for P {}
unsafe impl Sync for P {}

/// `c = a·b` (m×k times k×n, row stride `ldc`) through the `gemm` crate.
///
/// # Safety
/// The pointers and strides describe valid matrices of these sizes.
#[allow(clippy::too_many_arguments)]
unsafe fn call(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    ldc: isize,
    par: Parallelism,
) {
    gemm(
        m, n, k, c, 1, ldc, false, a, csa, rsa, b, csb, rsb, 0.0, 1.0, false, false, false, par,
    );
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
        .unwrap();
    for (m, k, n, ta, tb) in shapes {
        let av: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32) * 0.1).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32) * 0.1).collect();
        let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
        let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
        let mut c = vec![0f32; m * n];
        let reps = (4e10 / (2.0 * (m * k * n) as f64)).clamp(20.0, 3000.0) as usize;
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        let mut outs = Vec::new();
        for r in 0..reps {
            for (v, times) in t.iter_mut().enumerate() {
                let cp = P(c.as_mut_ptr());
                let s = Instant::now();
                // SAFETY: av is m×k and bv k×n with the strides given; c holds m×n; the halves write
                // disjoint columns.
                pool.install(|| unsafe {
                    match v {
                        0 => call(
                            m,
                            k,
                            n,
                            av.as_ptr(),
                            rsa,
                            csa,
                            bv.as_ptr(),
                            rsb,
                            csb,
                            cp.0,
                            n as isize,
                            Parallelism::Rayon(2),
                        ),
                        1 => {
                            let h = (n / 2).div_ceil(16) * 16;
                            let cp = &cp;
                            rayon::join(
                                || {
                                    call(
                                        m,
                                        k,
                                        h,
                                        av.as_ptr(),
                                        rsa,
                                        csa,
                                        bv.as_ptr(),
                                        rsb,
                                        csb,
                                        cp.0,
                                        n as isize,
                                        Parallelism::None,
                                    )
                                },
                                || {
                                    call(
                                        m,
                                        k,
                                        n - h,
                                        av.as_ptr(),
                                        rsa,
                                        csa,
                                        bv.as_ptr().offset(h as isize * csb),
                                        rsb,
                                        csb,
                                        cp.0.add(h),
                                        n as isize,
                                        Parallelism::None,
                                    )
                                },
                            );
                        }
                        _ => call(
                            m,
                            k,
                            n,
                            av.as_ptr(),
                            rsa,
                            csa,
                            bv.as_ptr(),
                            rsb,
                            csb,
                            cp.0,
                            n as isize,
                            Parallelism::None,
                        ),
                    }
                });
                times.push(s.elapsed().as_secs_f64());
                if r == 0 {
                    outs.push(c.clone());
                }
            }
        }
        let same = outs[0]
            .iter()
            .zip(&outs[1])
            .all(|(x, y)| x.to_bits() == y.to_bits())
            && outs[0] == outs[2];
        let f = |v: &mut Vec<f64>| {
            v.sort_by(|x, y| x.partial_cmp(y).unwrap());
            (
                2.0 * (m * k * n) as f64 / v[v.len() / 2] / 1e9,
                2.0 * (m * k * n) as f64 / v[0] / 1e9,
            )
        };
        let (r0, r1, r2) = (f(&mut t[0]), f(&mut t[1]), f(&mut t[2]));
        println!("{m}x{k}{}x{n}{}: rayon2 {:.0}/{:.0}  split {:.0}/{:.0}  one {:.0}/{:.0} GFLOP/s (median/best) same bits {same}", if ta {"(T)"} else {""}, if tb {"(T)"} else {""}, r0.0, r0.1, r1.0, r1.1, r2.0, r2.1);
    }
}
