//! Random programs over the whole public tensor API with random shapes (zero, small, huge and
//! overflowing dimensions): every call returns `Ok` with a tensor that satisfies its invariants
//! or `Err`; none panics or aborts. The same decoder drives the cargo-fuzz target `ops`.

use nabla::testing::run_program;
use nabla::Rng;

#[test]
fn random_programs_never_crash() {
    // NABLA_PROGRAMS=N runs more programs (a longer search than the default's few seconds).
    let n: usize = std::env::var("NABLA_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let mut rng = Rng::new(0xF022);
    let mut succeeded = 0;
    for _ in 0..n {
        let len = 8 + rng.below(120);
        let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        succeeded += run_program(&bytes);
    }
    // The programs must do real work, not fail at their first call.
    eprintln!("{n} programs, {succeeded} operations returned Ok");
    assert!(succeeded > 2 * n, "only {succeeded} operations succeeded");
}
