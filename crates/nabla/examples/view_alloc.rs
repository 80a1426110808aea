//! Bytes allocated by a transpose-heavy expression, `(A·Bᵀ)ᵀ·C` with 2048×2048 f32 inputs,
//! counted by a global allocator wrapper. With views, the two transposes allocate nothing: the
//! products read them through strides. Run with
//! `cargo run --release -p nabla --example view_alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use nabla::Tensor;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Bytes in allocations of 4 MiB or more: tensor buffers (the GEMM's packing buffers are ~1 MiB).
static LARGE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        if layout.size() >= 4 << 20 {
            LARGE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> nabla::Result<()> {
    let n = 2048;
    let a = Tensor::<f32>::randn(&[n, n], 0.0, 1.0, 1)?;
    let b = Tensor::<f32>::randn(&[n, n], 0.0, 1.0, 2)?;
    let c = Tensor::<f32>::randn(&[n, n], 0.0, 1.0, 3)?;
    let before = ALLOCATED.load(Ordering::Relaxed);
    let calls = CALLS.load(Ordering::Relaxed);
    let large = LARGE.load(Ordering::Relaxed);
    let out = a.matmul(&b.t()?)?.t()?.matmul(&c)?;
    let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
    let calls = CALLS.load(Ordering::Relaxed) - calls;
    let large = LARGE.load(Ordering::Relaxed) - large;
    let result_bytes = out.numel() * 4;
    println!(
        "(A·Bᵀ)ᵀ·C, {n}×{n} f32: {bytes} bytes allocated in {calls} allocations \
         ({:.2} × the {result_bytes}-byte result), \
         {large} bytes of them in tensor buffers (4 MiB or more)",
        bytes as f64 / result_bytes as f64
    );
    Ok(())
}
