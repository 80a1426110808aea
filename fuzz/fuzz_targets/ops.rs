//! Random op sequences over the public tensor API, with random shapes (zero, small, huge and
//! overflowing dimensions): constructors, views, element-wise ops, matrix products, reductions,
//! backward passes and in-place edits. Every call must return Ok (with a tensor that keeps its
//! invariants) or Err; a panic or an abort is a bug. The decoder is
//! `nabla::testing::run_program`, which the seeded property test `tests/programs.rs` also runs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nabla::testing::run_program(data);
});
