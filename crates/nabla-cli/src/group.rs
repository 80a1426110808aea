//! `nabla train --distributed`: joining the MPI job `mpirun` started (built with the `mpi`
//! feature), or a clear error.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use nabla::train::{BucketSink, Collective};

/// This process's place in the run: rank 0 of 1 unless distributed.
pub struct Group {
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub size: usize,
    collective: Option<Box<dyn Collective>>,
    /// Time and bytes spent in collectives (what this rank received).
    pub comm: Rc<Traffic>,
}

/// Time in collectives, bytes received and calls.
#[derive(Default)]
pub struct Traffic {
    /// Seconds spent on collectives and not hidden behind computation: the calls, and for
    /// the gradient exchange (which overlaps backward) its time minus the producer's compute.
    pub seconds: Cell<f64>,
    /// Bytes received from the other ranks.
    pub bytes: Cell<u64>,
    /// Gradient exchanges (one per step).
    pub gradient_calls: Cell<u64>,
}

/// Counts a collective's time and traffic.
struct Timed {
    inner: Box<dyn Collective>,
    traffic: Rc<Traffic>,
}

impl Timed {
    fn count<R>(&self, elems: usize, elem_bytes: usize, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        let t_ = &self.traffic;
        t_.seconds.set(t_.seconds.get() + t.elapsed().as_secs_f64());
        let others = self.inner.size().saturating_sub(1);
        t_.bytes
            .set(t_.bytes.get() + (elems * elem_bytes * others) as u64);
        r
    }
}

impl Collective for Timed {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, local: &[f64]) -> nabla::Result<Vec<f64>> {
        self.count(local.len(), 8, || self.inner.all_gather(local))
    }
    fn all_gather_f32(&self, local: &[f32]) -> nabla::Result<Vec<f32>> {
        self.count(local.len(), 4, || self.inner.all_gather_f32(local))
    }
    fn broadcast(&self, buf: &mut [f64]) -> nabla::Result<()> {
        let n = if self.rank() == 0 { 0 } else { buf.len() };
        self.count(n, 8, || self.inner.broadcast(buf))
    }
    fn sum_slices(
        &self,
        sizes: &[usize],
        per: usize,
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> nabla::Result<()>,
        into: &mut Vec<f32>,
    ) -> nabla::Result<()> {
        let t = &self.traffic;
        t.gradient_calls.set(t.gradient_calls.get() + 1);
        let mut compute = 0.0;
        let start = Instant::now();
        let done = self.inner.sum_slices(
            sizes,
            per,
            &mut |sink| {
                let began = Instant::now();
                let mut timed = TimedSink {
                    inner: sink,
                    seconds: 0.0,
                };
                let r = produce(&mut timed);
                compute += began.elapsed().as_secs_f64() - timed.seconds;
                r
            },
            into,
        );
        // The producer's own compute (backward) was not communication.
        let exposed = (start.elapsed().as_secs_f64() - compute).max(0.0);
        t.seconds.set(t.seconds.get() + exposed);
        // MpiWorld reduce-scatters ((N−1)/N of the values, per + 1 times) or, where that is
        // no fewer bytes, all-gathers ((N−1)·per times).
        let n = self.inner.size();
        let total: usize = sizes.iter().sum();
        let others = n.saturating_sub(1);
        let received = (4 * total * (per + 1) * others / n.max(1)).min(4 * total * per * others);
        t.bytes.set(t.bytes.get() + received as u64);
        done
    }
}

/// Times the calls into a [`BucketSink`] (starting exchanges, letting them progress).
struct TimedSink<'a> {
    inner: &'a mut dyn BucketSink,
    seconds: f64,
}

impl BucketSink for TimedSink<'_> {
    fn send(&mut self, values: &[f32]) -> nabla::Result<()> {
        let t = Instant::now();
        let r = self.inner.send(values);
        self.seconds += t.elapsed().as_secs_f64();
        r
    }
    fn progress(&mut self) -> nabla::Result<()> {
        let t = Instant::now();
        let r = self.inner.progress();
        self.seconds += t.elapsed().as_secs_f64();
        r
    }
}

impl Group {
    /// One process alone, or (with `distributed`) the MPI world.
    pub fn join(distributed: bool) -> Result<Group> {
        if !distributed {
            return Ok(Group {
                rank: 0,
                size: 1,
                collective: None,
                comm: Rc::default(),
            });
        }
        mpi_world()
    }

    /// Rank 0: the one that prints and writes the run directory.
    pub fn leader(&self) -> bool {
        self.rank == 0
    }

    /// The collective for the trainer (once), counting its traffic into [`Group::comm`].
    pub fn take(&mut self) -> Option<Box<dyn Collective>> {
        let inner = self.collective.take()?;
        Some(Box::new(Timed {
            inner,
            traffic: self.comm.clone(),
        }))
    }

    /// One line about communication (distributed runs), for the summary.
    pub fn report(&self) -> Option<String> {
        let t = &self.comm;
        let steps = t.gradient_calls.get();
        (self.size > 1 && steps > 0).then(|| {
            format!(
                "{} ranks: {:.3} s in collectives ({:.2} ms and {:.2} MB received per step, {steps} steps)",
                self.size,
                t.seconds.get(),
                1e3 * t.seconds.get() / steps as f64,
                t.bytes.get() as f64 / steps as f64 / 1e6
            )
        })
    }
}

#[cfg(feature = "mpi")]
fn mpi_world() -> Result<Group> {
    let world = nabla::dist::MpiWorld::init()?;
    Ok(Group {
        rank: world.rank(),
        size: world.size(),
        collective: Some(Box::new(world)),
        comm: Rc::default(),
    })
}

#[cfg(not(feature = "mpi"))]
fn mpi_world() -> Result<Group> {
    anyhow::bail!(
        "--distributed needs a nabla built with MPI: `cargo build --release -p nabla-cli \
         --features mpi` (with Open MPI: apt-get install openmpi-bin libopenmpi-dev libclang-dev), \
         then `mpirun -np N nabla train --distributed ...`"
    )
}
