//! Data-parallel training over MPI (feature `mpi`): [`MpiWorld`] is the [`Collective`] of the
//! processes `mpirun` started (Open MPI or MPICH, on one machine or a cluster). Give it to
//! [`Trainer::with_collective`](crate::train::Trainer::with_collective).
//!
//! ```no_run
//! # fn main() -> nabla::Result<()> {
//! use nabla::dist::MpiWorld;
//! let world = MpiWorld::init()?;                  // once per process, under mpirun
//! println!("rank {} of {}", world.rank(), world.size());
//! # Ok(()) }
//! ```

use std::cell::RefCell;

use mpi::environment::Universe;
use mpi::request::{LocalScope, Request};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::error::{Error, Result};
use crate::train::collective::Cursor;
use crate::train::{BucketSink, Collective};

/// The world communicator of an MPI job.
pub struct MpiWorld {
    world: SimpleCommunicator,
    /// The send buffer of the last bucketed exchange, kept for the next.
    send_cache: RefCell<Vec<f32>>,
    // Finalizes MPI when dropped, after the communicator.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI (once per process; a second call is an error).
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| {
            Error::arg(
                "MpiWorld::init",
                "MPI is already initialised in this process",
            )
        })?;
        Ok(MpiWorld {
            world: universe.world(),
            send_cache: RefCell::default(),
            _universe: universe,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        MpiWorld::rank(self)
    }

    fn size(&self) -> usize {
        MpiWorld::size(self)
    }

    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>> {
        let mut all = vec![0.0; local.len() * self.size()];
        self.world.all_gather_into(local, &mut all[..]);
        Ok(all)
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        let mut all = vec![0.0; local.len() * self.size()];
        self.world.all_gather_into(local, &mut all[..]);
        Ok(all)
    }

    fn broadcast(&self, buf: &mut [f64]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    /// One non-blocking all-gather (`MPI_Iallgather`) per bucket, started when the bucket is
    /// sent; every `send`/`progress` tests the ones in flight so they advance while the
    /// producer computes (MPI progresses only inside its calls); all are awaited at the end.
    /// The send buffer is kept from one call to the next.
    fn all_gather_buckets(
        &self,
        sizes: &[usize],
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
        into: &mut Vec<f32>,
    ) -> Result<()> {
        let total: usize = sizes.iter().sum();
        let mut send = self.send_cache.take();
        send.resize(total, 0.0);
        into.resize(total * self.size(), 0.0);
        let outcome = mpi::request::scope(|scope| {
            let mut sink = Streams {
                world: &self.world,
                scope,
                cursor: Cursor::new(sizes),
                send: &mut send[..],
                recv: &mut into[..],
                ranks: self.size(),
                flying: Vec::new(),
            };
            let outcome = produce(&mut sink);
            // Buckets not sent go out as zeros.
            for k in sink.cursor.rest() {
                sink.send[..sizes[k]].fill(0.0);
                sink.start(sizes[k]);
            }
            for request in sink.flying {
                request.wait();
            }
            outcome
        });
        *self.send_cache.borrow_mut() = send;
        outcome
    }
}

/// The buckets of one [`MpiWorld::all_gather_buckets`]: the parts of the send and receive
/// buffers not yet used, and the exchanges in flight.
struct Streams<'a, 's> {
    world: &'a SimpleCommunicator,
    scope: &'s LocalScope<'a>,
    cursor: Cursor<'a>,
    send: &'a mut [f32],
    recv: &'a mut [f32],
    ranks: usize,
    flying: Vec<Request<'a, [f32], &'s LocalScope<'a>>>,
}

impl<'a> Streams<'a, '_> {
    /// Starts the all-gather of the next `len` values of the send buffer.
    fn start(&mut self, len: usize) {
        let (out, rest) = std::mem::take(&mut self.send).split_at_mut(len);
        self.send = rest;
        let (into, rest) = std::mem::take(&mut self.recv).split_at_mut(len * self.ranks);
        self.recv = rest;
        let out: &'a [f32] = out;
        let request = self.world.immediate_all_gather_into(self.scope, out, into);
        self.flying.push(request);
    }
}

impl BucketSink for Streams<'_, '_> {
    fn send(&mut self, values: &[f32]) -> Result<()> {
        self.cursor.accept(values.len())?;
        self.send[..values.len()].copy_from_slice(values);
        self.start(values.len());
        self.progress()
    }

    fn progress(&mut self) -> Result<()> {
        let flying = std::mem::take(&mut self.flying);
        for request in flying {
            if let Err(still) = request.test() {
                self.flying.push(still);
            }
        }
        Ok(())
    }
}
