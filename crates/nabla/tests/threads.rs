//! `threads::warm`: the same results as without it, from inside and outside a pool, nested,
//! the pool usable after it returns, and its spinners reaching the other threads.

use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::Tensor;

/// Three Adam steps of a 300-256-128-10 MLP at batch 96 (products large enough to be split
/// among threads and to run side by side in backward); the final weights' bits.
fn train_bits() -> Vec<Vec<u32>> {
    let m = Mlp::<f32>::new(&MlpConfig::new(&[300, 256, 128, 10])).unwrap();
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-3)).unwrap();
    let x = Tensor::<f32>::randn(&[96, 300], 0.0, 1.0, 7).unwrap();
    let labels: Vec<usize> = (0..96).map(|i| i % 10).collect();
    for _ in 0..3 {
        let out = m.forward(&x).unwrap();
        let l = loss::cross_entropy(&out, Target::Classes(&labels), 0.0, Reduction::Mean).unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
    }
    m.named_parameters()
        .iter()
        .map(|(_, p)| p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn warm_gives_the_same_bits_inside_and_outside_a_pool_and_nested() {
    let cold = pool(1).install(train_bits);
    for threads in [2, 3] {
        let p = pool(threads);
        assert_eq!(p.install(|| nabla::threads::warm(train_bits)), cold);
        assert_eq!(
            p.install(|| nabla::threads::warm(|| nabla::threads::warm(train_bits))),
            cold
        );
        assert_eq!(p.install(train_bits), cold);
    }
    // Called from a thread outside any pool (the spinners go to the global pool).
    assert_eq!(nabla::threads::warm(train_bits), cold);
}

#[test]
fn warm_returns_and_leaves_the_pool_usable() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = pool(2);
    for _ in 0..20 {
        assert_eq!(p.install(|| nabla::threads::warm(|| 7)), 7);
    }
    // Every thread of the pool is free again: two jobs that each wait for the other finish.
    let arrived = AtomicUsize::new(0);
    p.scope(|s| {
        for _ in 0..2 {
            s.spawn(|_| {
                arrived.fetch_add(1, Ordering::SeqCst);
                let start = std::time::Instant::now();
                while arrived.load(Ordering::SeqCst) < 2 {
                    assert!(
                        start.elapsed().as_secs() < 60,
                        "a thread of the pool is still held after warm returned"
                    );
                    std::hint::spin_loop();
                }
            });
        }
    });
}

#[test]
fn the_other_thread_spins_even_when_the_caller_looks_for_work_first() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let p = pool(2);
    let spinning = p.install(|| {
        // Keep the other thread busy while `warm` starts its spinner.
        let (started, release) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, r) = (Arc::clone(&started), Arc::clone(&release));
        rayon::spawn(move || {
            s.store(true, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
        while !started.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        nabla::threads::warm(|| {
            // The caller looks for work first (as a step's first split does when it waits): a
            // spinner it could take back would then never reach the other thread.
            rayon::yield_now();
            // A job for the spinner to run, which holds it until this thread has seen it spin:
            // the check then depends neither on the spinner's 2 ms idle limit nor on this
            // thread being scheduled in time (tests run side by side on few cores).
            let seen = Arc::new(AtomicBool::new(false));
            let s = Arc::clone(&seen);
            rayon::spawn(move || {
                let start = Instant::now();
                while !s.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
                    std::hint::spin_loop();
                }
            });
            release.store(true, Ordering::SeqCst);
            let start = Instant::now();
            while nabla::threads::spinning() == 0 && start.elapsed() < Duration::from_secs(20) {
                std::hint::spin_loop();
            }
            let spinning = nabla::threads::spinning();
            seen.store(true, Ordering::SeqCst);
            spinning
        })
    });
    assert_eq!(spinning, 1, "no thread spins for warm");
}
