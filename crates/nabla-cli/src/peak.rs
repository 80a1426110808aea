//! `nabla bench --workload peak`: the machine's f32 fused multiply-add throughput, measured, so
//! that every GFLOP/s figure can be printed as a fraction of what the cores can do.
//!
//! Each thread runs 12 independent chains of vector FMAs (`a = a·b + c`, enough chains to hide
//! the FMA latency on two FMA units); the result is the FLOPs of all threads (2 per lane per
//! FMA) over the wall time, the best of five 0.2 s windows. Measured with the widest instructions the
//! active tier allows (`nabla::isa`: AVX-512, else AVX2+FMA, else SSE2's separate multiply and
//! add, the scalar tier's baseline), and with each narrower tier as well.

use std::time::{Duration, Instant};

/// FMA instructions per chain in one call of a kernel.
const ROUNDS: u64 = 1 << 20;
/// Independent accumulator chains.
const CHAINS: u64 = 12;

/// One kernel: runs `ROUNDS` × `CHAINS` vector FMAs; returns a value that depends on all of
/// them (so nothing is optimised away) and the FLOPs done.
type Kernel = fn() -> (f32, f64);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHAINS, ROUNDS};

    macro_rules! fma_chains {
        ($set1:ident, $fmadd:ident, $add:ident, $store:ident, $lanes:expr, $ty:ty) => {{
            // Opaque values: the compiler must not fold the chains into constants.
            let b = $set1(std::hint::black_box(0.999_999));
            let c = $set1(std::hint::black_box(1e-6));
            let mut acc: [$ty; CHAINS as usize] =
                [$set1(std::hint::black_box(1.0)); CHAINS as usize];
            for _ in 0..ROUNDS {
                for a in acc.iter_mut() {
                    *a = $fmadd(*a, b, c);
                }
            }
            let mut sum = acc[0];
            for a in &acc[1..] {
                sum = $add(sum, *a);
            }
            let mut out = [0f32; $lanes];
            $store(out.as_mut_ptr(), sum);
            (out.iter().sum(), (ROUNDS * CHAINS * 2 * $lanes) as f64)
        }};
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512() -> (f32, f64) {
        fma_chains!(
            _mm512_set1_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            _mm512_storeu_ps,
            16,
            __m512
        )
    }

    /// The scalar tier's peak: SSE2 (the x86-64 baseline, so always there), 4 lanes, a
    /// multiply then an add (no FMA in SSE2), 2 FLOPs per lane per pair.
    pub fn sse2() -> (f32, f64) {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            fma_chains!(
                _mm_set1_ps,
                mul_add_sse,
                _mm_add_ps,
                _mm_storeu_ps,
                4,
                __m128
            )
        }
    }

    /// `a·b + c` in two SSE instructions.
    #[inline(always)]
    unsafe fn mul_add_sse(a: __m128, b: __m128, c: __m128) -> __m128 {
        _mm_add_ps(_mm_mul_ps(a, b), c)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2() -> (f32, f64) {
        fma_chains!(
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            _mm256_storeu_ps,
            8,
            __m256
        )
    }
}

/// Off x86-64: scalar `mul_add`.
#[cfg(not(target_arch = "x86_64"))]
fn scalar() -> (f32, f64) {
    let (b, c) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-6f32),
    );
    let mut acc = [std::hint::black_box(1f32); CHAINS as usize];
    for _ in 0..ROUNDS / 16 {
        for a in acc.iter_mut() {
            *a = a.mul_add(b, c);
        }
    }
    (acc.iter().sum(), (ROUNDS / 16 * CHAINS * 2) as f64)
}

/// The kernels this CPU can run on the active tier, widest first: (name, kernel).
fn kernels() -> Vec<(&'static str, Kernel)> {
    let mut k: Vec<(&'static str, Kernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        // The kernels of the active tier and below (`NABLA_MAX_ISA`, `--max-isa`).
        let tier = nabla::isa::active();
        if tier >= nabla::isa::Isa::Avx512 && is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected on this CPU just above.
            k.push(("avx512f", || unsafe { x86::avx512() }));
        }
        if tier >= nabla::isa::Isa::Avx2
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were detected on this CPU just above.
            k.push(("avx2+fma", || unsafe { x86::avx2() }));
        }
    }
    #[cfg(target_arch = "x86_64")]
    k.push(("sse2", x86::sse2));
    #[cfg(not(target_arch = "x86_64"))]
    k.push(("scalar", scalar));
    k
}

/// GFLOP/s of `kernel` on `threads` threads, each running for about `time`.
fn measure(kernel: Kernel, threads: usize, time: Duration) -> f64 {
    kernel(); // warm up (clocks, page faults of the stack)
    let start = Instant::now();
    let flops: f64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(move || {
                    let (mut flops, mut sink) = (0.0, 0.0f32);
                    let t = Instant::now();
                    while t.elapsed() < time {
                        let (v, f) = kernel();
                        sink += v;
                        flops += f;
                    }
                    std::hint::black_box(sink);
                    flops
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0.0)).sum()
    });
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// The peak as a JSON line: the widest kernel's GFLOP/s, and every kernel's. Each is the best
/// of five 0.2 s windows: a shared or virtual machine loses cycles to others now and then, and
/// the peak is what the cores do when they are not taken away.
pub fn peak(threads: usize) -> serde_json::Value {
    let all: Vec<(&str, f64)> = kernels()
        .into_iter()
        .map(|(name, k)| {
            let best = (0..5)
                .map(|_| measure(k, threads, Duration::from_millis(200)))
                .fold(0.0, f64::max);
            (name, best)
        })
        .collect();
    let (isa, best) = all[0];
    let by_isa: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .map(|(n, g)| (n.to_string(), serde_json::json!(g)))
        .collect();
    serde_json::json!({
        "name": "peak", "system": "nabla", "threads": threads, "isa": isa,
        "gflops": best, "gflops_by_isa": by_isa,
    })
}
