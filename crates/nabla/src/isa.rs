//! Instruction-set tiers: which vector instructions nabla's kernels may use.
//!
//! Every kernel that has more than one path chooses it here, at run time, from the tier
//! [`active`] returns: the widest the CPU has ([`detected`]), held down by a limit set with
//! the environment variable `NABLA_MAX_ISA` (`scalar`, `avx2` or `avx512`) or by [`set_max`].
//! The switch reaches the matrix products (the `gemm` crate's kernels of that tier and our own
//! small-product kernel), the optimizers' and the element-wise loops (compiled once per tier),
//! and the transposed-operand copies. So one AVX-512 machine can measure and test the AVX2 and
//! the portable paths, next to peers held to the same tier (`XLA_FLAGS=--xla_cpu_max_isa=AVX2`,
//! `ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`).
//!
//! What a tier changes in results: element-wise, reduction and optimizer loops give the same
//! bits on every tier (their arithmetic is written out in a fixed order and never contracted
//! into fused multiply-adds); matrix products do not (a tier's kernel blocks its sums and fuses
//! its multiply-adds its own way), so they agree with the scalar path to rounding, about
//! `k·ε` relative to the sum of |products|. On any one tier, results are bit-identical for every
//! thread count.
//!
//! ```
//! use nabla::isa::{self, Isa};
//! let widest = isa::detected();
//! assert_eq!(isa::set_max(Some(Isa::Scalar)), Isa::Scalar); // hold every kernel to scalar
//! assert_eq!(isa::set_max(None), widest); // and lift the limit again
//! assert!("avx1024".parse::<Isa>().is_err());
//! ```

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction-set tier, ordered from narrowest to widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// No vector instructions beyond the target's baseline (SSE2 on x86-64), which the compiler
    /// may still use for 4-lane loops; the `gemm` crate's scalar kernel. Every other
    /// architecture reports this tier (there the `gemm` crate picks its own kernels).
    Scalar,
    /// AVX2 with FMA: 8-lane f32 vectors, 16 registers (Intel Haswell and later, AMD Zen).
    Avx2,
    /// AVX-512 (F, VL, BW, DQ, CD): 16-lane f32 vectors, 32 registers and lane masks.
    Avx512,
}

impl Isa {
    /// Every tier, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The tier's name as `NABLA_MAX_ISA` and `--max-isa` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "scalar" | "none" | "sse2" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            _ => Err(Error::arg(
                "instruction-set tier",
                format!("unknown tier {s:?}: expected scalar, avx2 or avx512"),
            )),
        }
    }
}

/// The widest tier this CPU runs (checked once).
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if pulp::x86::V4::try_new().is_some() {
                return Isa::Avx512;
            }
            if pulp::x86::V3::try_new().is_some() {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// No limit read or set yet (the environment is read on first use).
const UNREAD: u8 = u8::MAX;
/// No limit.
const NONE: u8 = u8::MAX - 1;
static LIMIT: AtomicU8 = AtomicU8::new(UNREAD);

fn encode(limit: Option<Isa>) -> u8 {
    limit.map_or(NONE, |t| t as u8)
}

fn decode(v: u8) -> Option<Isa> {
    Isa::ALL.get(v as usize).copied()
}

/// The limit `NABLA_MAX_ISA` asks for: `Ok(None)` when it is unset or empty, an error naming
/// the value when it is not a tier. (The library ignores a value it cannot read — [`active`]
/// then uses the widest tier — so programs call this at start to report it; `nabla` does.)
pub fn from_env() -> Result<Option<Isa>> {
    match std::env::var("NABLA_MAX_ISA") {
        Ok(v) if !v.trim().is_empty() => v.parse::<Isa>().map(Some).map_err(|_| {
            Error::arg(
                "NABLA_MAX_ISA",
                format!("unknown tier {v:?}: expected scalar, avx2 or avx512"),
            )
        }),
        _ => Ok(None),
    }
}

/// The limit in force: set by [`set_max`], else read from `NABLA_MAX_ISA` on first use.
pub fn limit() -> Option<Isa> {
    let v = LIMIT.load(Ordering::Relaxed);
    if v != UNREAD {
        return decode(v);
    }
    let from_env = from_env().ok().flatten();
    // Keep a limit set meanwhile by another thread.
    let _ = LIMIT.compare_exchange(
        UNREAD,
        encode(from_env),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    decode(LIMIT.load(Ordering::Relaxed))
}

/// Holds every kernel to at most `max` (`None` lifts the limit) for the whole process, and
/// returns the tier now active. A kernel already running finishes on the tier it started on,
/// but an operation is several kernels (attention's backward runs a product per tile, a
/// product is cut into parts for threads): set the limit between operations, not while
/// another thread runs one. Otherwise that operation may run some parts on each tier, and its
/// result, while still correct to rounding, may match neither tier's bits (a test that
/// switched tiers beside a running attention backward saw 4,364 of 393,216 key-gradient
/// values differ in their last bits).
pub fn set_max(max: Option<Isa>) -> Isa {
    LIMIT.store(encode(max), Ordering::Relaxed);
    active()
}

/// The tier the kernels use now: the narrower of [`detected`] and [`limit`].
#[inline]
pub fn active() -> Isa {
    let d = detected();
    match limit() {
        Some(l) if l < d => l,
        _ => d,
    }
}

/// Runs `f` compiled for the active tier's vector instructions (through `pulp`), so the loops
/// the compiler vectorises inside it use them; the default build's baseline is SSE2. `f` must
/// be inlined into this call to gain: mark the closure `#[inline(always)]` (and what it calls
/// in the hot loop), since the compiler's own choice may leave it out of line, compiled for
/// SSE2 (a draft of Adam's update ran so, at the scalar tier's speed on every tier). Inside,
/// keep loop-invariant branches out of the loops: a store under a branch vectorises only
/// where masked stores are cheap (AVX-512; Adam and SGD ran one value at a time under AVX2).
/// The arithmetic is unchanged, so results are the same bits on every tier.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Run<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Run<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> R {
            (self.0)()
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let tier = active();
        if tier == Isa::Avx512 {
            if let Some(s) = pulp::x86::V4::try_new() {
                return pulp::Simd::vectorize(s, Run(f));
            }
        }
        if tier >= Isa::Avx2 {
            if let Some(s) = pulp::x86::V3::try_new() {
                return pulp::Simd::vectorize(s, Run(f));
            }
        }
        f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        pulp::Arch::new().dispatch(Run(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_bad_names_are_errors() {
        for t in Isa::ALL {
            assert_eq!(t.name().parse::<Isa>().unwrap(), t);
            assert_eq!(t.to_string().to_uppercase().parse::<Isa>().unwrap(), t);
        }
        assert_eq!("AVX-512".parse::<Isa>().unwrap(), Isa::Avx512);
        let e = "neon2".parse::<Isa>().unwrap_err().to_string();
        assert!(e.contains("neon2") && e.contains("avx2"), "{e}");
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
    }
}
