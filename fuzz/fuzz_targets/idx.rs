//! The IDX reader (plain and gzip) on arbitrary bytes: it must return Ok or Err, never panic,
//! and never allocate more than the input can justify.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(arr) = nabla::data::idx::idx_from_bytes(data) {
        let n: usize = arr.dims.iter().product();
        assert_eq!(n, arr.data.len());
    }
});
