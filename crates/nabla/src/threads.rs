//! Keeping rayon's threads awake through a training loop.
//!
//! Each product, optimizer update or large element-wise op splits its work over rayon's
//! threads. Between two of them the other threads run out of work and, after a short spin, go
//! to sleep on a futex; the next split wakes them with a system call. A training step of a
//! small MLP has a dozen such splits, each worth tens to hundreds of microseconds, and a wake-up
//! in a virtual machine costs tens of microseconds (an inter-processor interrupt through the
//! hypervisor): [`warm`] keeps the other threads looking for work instead of sleeping.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A spinner that found no work for this long goes back to sleep (the thread is then woken by
/// the next parallel part, as without [`warm`]): a long serial stretch, or the time after the
/// closure returned, costs at most this much spinning.
const IDLE_LIMIT: Duration = Duration::from_millis(2);

/// Calls that start no spinner after one that found no work at all (a model whose steps have no
/// parallel part, such as a 2-64-64-3 MLP: spinning would only burn the other cores).
const SKIP_AFTER_USELESS: usize = 256;

/// The spinners started from one thread, shared with them.
struct Spinners {
    /// The pool size they were started for.
    threads: usize,
    /// How many are spinning now.
    running: Arc<AtomicUsize>,
    /// Copies of the last start not yet taken by the threads they were queued for.
    pending: Arc<AtomicUsize>,
    /// How many ended without having run a single job since the last call looked.
    useless: Arc<AtomicUsize>,
    /// Calls left that start none.
    skip: usize,
}

thread_local! {
    /// The spinners started by this thread's [`warm`] calls: the next call (the next training
    /// step) reuses those still running instead of starting new ones, which would wake the
    /// sleeping threads again.
    static SPINNING: RefCell<Option<Spinners>> = const { RefCell::new(None) };

    /// Whether this thread runs a spinner now: a second one reaching it returns at once.
    static SPINNING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` while the other threads of the current rayon pool keep looking for work instead of
/// going to sleep between the parallel parts of `f`: each runs a job that executes whatever
/// work appears, until none has come for 2 ms (so they also stay awake from one call to the
/// next, such as from one training step to the next). Results do not change — only who waits
/// how: the other cores spin while they wait, so wrap work that keeps them busy, such as a
/// training step, not code that waits for input. Where a spinner found no work at all (the
/// steps have no parallel part), the next 256 calls start none. With one thread it just runs
/// `f`.
///
/// ```
/// use nabla::Tensor;
/// let a = Tensor::<f32>::ones(&[256, 256]).unwrap();
/// let s = nabla::threads::warm(|| {
///     (0..3).map(|_| a.matmul(&a).unwrap().sum_all().unwrap().item().unwrap()).sum::<f32>()
/// });
/// assert_eq!(s, 3.0 * 256.0f32.powi(3));
/// ```
pub fn warm<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads >= 2 {
        let caller = rayon::current_thread_index();
        // At most one spinner on each thread but one: the caller's (or, for a caller outside
        // the pool, the core it runs on).
        let wanted = threads - 1;
        let started = SPINNING.with(|s| {
            let mut s = s.borrow_mut();
            // Spinners of a pool of this size (the same pool, unless the caller moved to another
            // one of the same size: then only the speed-up is lost).
            let sp = match &mut *s {
                Some(sp) if sp.threads == threads => sp,
                other => other.insert(Spinners {
                    threads,
                    running: Arc::new(AtomicUsize::new(0)),
                    pending: Arc::new(AtomicUsize::new(0)),
                    useless: Arc::new(AtomicUsize::new(0)),
                    skip: 0,
                }),
            };
            if sp.useless.swap(0, Ordering::AcqRel) > 0 {
                sp.skip = SKIP_AFTER_USELESS;
            }
            if sp.skip > 0 {
                sp.skip -= 1;
                return None;
            }
            // None while the copies of the last start are still on their way (a thread slow to
            // wake): each call would queue more.
            (sp.pending.load(Ordering::Acquire) == 0 && sp.running.load(Ordering::Acquire) < wanted)
                .then(|| {
                    (
                        Arc::clone(&sp.running),
                        Arc::clone(&sp.pending),
                        Arc::clone(&sp.useless),
                    )
                })
        });
        if let Some((running, pending, useless)) = started {
            pending.store(threads - usize::from(caller.is_some()), Ordering::Release);
            // One job on each thread of the pool, queued for that thread alone: a job on the
            // caller's own queue (`rayon::spawn`) could be taken back by the caller as soon as it
            // looked for work inside `f`, before a sleeping thread woke to steal it, and then no
            // thread spun at all. The caller's copy, a copy reaching a thread that already
            // spins, and copies beyond `wanted` return at once.
            rayon::spawn_broadcast(move |ctx| {
                if Some(ctx.index()) == caller {
                    return;
                }
                pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(_here) = SpinningHere::claim(&running, wanted) {
                    if !spin() {
                        useless.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
            if caller.is_some() {
                // The caller's own copy waits in its queue until it next looks for work, which
                // `f` may never do (a step without parallel parts): take it now (it returns at
                // once; or a job of the caller's own, as any rayon wait would), so that copies
                // cannot pile up.
                rayon::yield_local();
            }
        }
    }
    f()
}

/// How many threads of the current pool are spinning for [`warm`] calls made on this thread
/// right now (0 before the first call, and once they went back to sleep): to check that a
/// training loop keeps the other cores looking for work.
///
/// ```
/// let spinning = nabla::threads::warm(|| nabla::threads::spinning());
/// assert!(spinning < rayon::current_num_threads());
/// ```
pub fn spinning() -> usize {
    SPINNING.with(|s| {
        s.borrow()
            .as_ref()
            .map_or(0, |sp| sp.running.load(Ordering::Acquire))
    })
}

/// A place among the `wanted` spinners, held by the current thread until dropped (also on
/// unwinding), which marks it as spinning meanwhile.
struct SpinningHere<'a>(&'a AtomicUsize);

impl<'a> SpinningHere<'a> {
    /// A place in `running` if this thread does not spin already and fewer than `wanted` do.
    fn claim(running: &'a AtomicUsize, wanted: usize) -> Option<Self> {
        if SPINNING_HERE.get() {
            return None;
        }
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < wanted).then_some(r + 1)
            })
            .ok()?;
        SPINNING_HERE.set(true);
        Some(SpinningHere(running))
    }
}

impl Drop for SpinningHere<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        SPINNING_HERE.set(false);
    }
}

/// [`warm`] when `on`, else just `f()`.
pub fn warm_if<R>(on: bool, f: impl FnOnce() -> R) -> R {
    if on {
        warm(f)
    } else {
        f()
    }
}

/// Runs the pool's pending jobs until none came for [`IDLE_LIMIT`], pausing briefly whenever
/// there are none; whether it ran any.
fn spin() -> bool {
    let (mut last_work, mut ran) = (Instant::now(), false);
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => (last_work, ran) = (Instant::now(), true),
            Some(rayon::Yield::Idle) if last_work.elapsed() <= IDLE_LIMIT => {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
            _ => return ran,
        }
    }
}

/// Sets up rayon's global pool for training on this thread: `threads` threads (default: one
/// per core), this (the calling) thread being one of them when there are two or more, so a
/// parallel kernel keeps part of its work here and wakes only the others instead of putting
/// this thread to sleep and waking all of them (a Fashion-MNIST epoch on 2 threads switched
/// context ~4,400 times instead of 21,000–39,000; a GPT step on 2 threads took 28 instead of
/// 45 ms). With one thread the pool's only worker stays a thread of its own, so that work
/// handed to the pool by any other thread always finds a worker. Call it once, before any
/// parallel work; an error if `threads` is 0 or the pool was already built. Results do not
/// depend on it (every kernel gives the same bits on any thread count).
///
/// ```no_run
/// nabla::threads::init_pool(None).unwrap(); // first thing in main
/// ```
pub fn init_pool(threads: Option<usize>) -> crate::Result<()> {
    let n = match threads {
        Some(0) => return Err(crate::Error::arg("threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let builder = rayon::ThreadPoolBuilder::new().num_threads(n);
    let builder = if n >= 2 {
        builder.use_current_thread()
    } else {
        builder
    };
    builder
        .build_global()
        .map_err(|e| crate::Error::arg("threads", format!("cannot configure the thread pool: {e}")))
}
