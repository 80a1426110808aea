//! The `gemm` crate's packed matrix product, on the kernels of the active instruction-set tier
//! ([`crate::isa::active`]). The crate picks the widest kernel the CPU has by itself, once, with
//! no way to hold it lower; its generic driver (`gemm_common::gemm::gemm_basic_generic`) and
//! each tier's micro-kernels (`gemm_f32`/`gemm_f64::microkernel::{scalar, fma, avx512f}`) are
//! public, so we call them directly with the tier's vector width, as the crate's own dispatch
//! does. Off x86-64 the crate's own choice runs.

use gemm_common::Parallelism;

/// `dst = alpha·dst + beta·lhs·rhs` (m×k times k×n) for one float type, `dst` read only when
/// `read_dst`; strides in elements (column stride `cs`, row stride `rs`).
macro_rules! tiered {
    ($name:ident, $t:ident, $krate:ident, $lanes:literal) => {
        /// The product on the active tier's kernels (see the module documentation).
        ///
        /// # Safety
        /// As `gemm::gemm`: the pointers and strides address m×n, m×k and k×n matrices of
        /// valid, initialised (`dst` only when `read_dst`) elements; `dst` does not overlap the
        /// operands.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut $t,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const $t,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const $t,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: $t,
            beta: $t,
            threads: usize,
        ) {
            let par = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            // The micro-kernels prefer a column-major destination: compute the transpose,
            // (AB)ᵀ = BᵀAᵀ, when the destination's columns are closer than its rows (as the
            // crate's `gemm` does).
            let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) =
                if dst_cs.abs() < dst_rs.abs() {
                    (
                        n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs,
                    )
                } else {
                    (
                        m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                    )
                };
            debug_assert!(dst_cs >= 0 && dst_rs >= 0 && lhs_cs >= 0 && rhs_rs >= 0);
            macro_rules! run {
                ($simd:expr, $module:ident, $n:expr) => {{
                    use $krate::microkernel::$module::$t as u;
                    gemm_common::gemm::gemm_basic_generic::<
                        _,
                        $t,
                        { $n },
                        { u::MR_DIV_N * $n },
                        { u::NR },
                        { u::MR_DIV_N },
                        { u::H_M },
                        { u::H_N },
                    >(
                        $simd,
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        alpha,
                        beta,
                        false,
                        false,
                        false,
                        |a, b, c| a * b + c,
                        &u::UKR,
                        &u::H_UKR,
                        false,
                        par,
                    )
                }};
            }
            #[cfg(target_arch = "x86_64")]
            {
                use crate::isa::{active, Isa};
                use gemm_common::simd::{MixedSimd, Scalar, V3, V4};
                let tier = active();
                if tier >= Isa::Avx512 {
                    if let Some(s) = <V4 as MixedSimd<$t, $t, $t, $t>>::try_new() {
                        return run!(s, avx512f, 2 * $lanes);
                    }
                }
                if tier >= Isa::Avx2 {
                    if let Some(s) = <V3 as MixedSimd<$t, $t, $t, $t>>::try_new() {
                        return run!(s, fma, $lanes);
                    }
                }
                run!(Scalar, scalar, 1)
            }
            #[cfg(not(target_arch = "x86_64"))]
            $krate::gemm::$t::get_gemm_fn()(
                m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                alpha, beta, false, false, false, par,
            )
        }
    };
}

tiered!(gemm_f32, f32, gemm_f32, 8);
tiered!(gemm_f64, f64, gemm_f64, 4);
