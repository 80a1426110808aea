//! Process-wide allocator tuning for training loops.
//!
//! A training step allocates and frees the same large buffers every iteration. glibc serves
//! blocks above its mmap threshold (128 KiB at first) with fresh `mmap`s and returns them to the
//! kernel on `free`, so every step pays page faults to touch them again; measured on the
//! development machine this was about half of the run time of a small MLP at batch 2000.
//! [`retain_freed_memory`] raises the threshold (to 32 MiB, glibc's maximum) and stops heap
//! trimming, so freed buffers are reused instead.
//!
//! The `nabla` tool calls it for `train` and `bench`. The Fashion-MNIST MLP measured no faster
//! with it (`bench/README.md`, "Speed v2"), but the baby GPT's step frees and allocates dozens
//! of 0.4–1.5 MB activations, and glibc's own threshold left 135,000 page faults in 300 steps
//! where this leaves 56,000 (about the process's 198 MB touched once). Two experiments
//! (`examples/backprop_memory.rs`, `examples/l1_vs_l2.rs`) call it too.

/// Keeps freed memory in the process for reuse (glibc on Linux; a no-op elsewhere). Call it once
/// at the start of a program that trains; it changes allocator settings for the whole process.
/// Returns whether the settings were applied.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator parameters; both values are in range.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
