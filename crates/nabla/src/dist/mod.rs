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
use crate::train::collective::{gather_then_sum, Cursor};
use crate::train::{BucketSink, Collective};

/// The world communicator of an MPI job.
pub struct MpiWorld {
    world: SimpleCommunicator,
    /// The send buffer of the last bucketed exchange, kept for the next.
    send_cache: RefCell<Vec<f32>>,
    /// The reduce-scatter's receive and sum buffers, kept likewise (no fresh pages per step).
    scatter_cache: RefCell<(Vec<f32>, Vec<f32>)>,
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
            scatter_cache: RefCell::default(),
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

    /// Every rank's chunk of each bucket (`summed`: this rank's chunks, bucket after bucket)
    /// into `into` (Σ sizes values), by point-to-point messages.
    fn gather_chunks(&self, sizes: &[usize], summed: &[f32], into: &mut [f32]) {
        let (n, me) = (self.size(), self.rank());
        mpi::request::scope(|scope| {
            let mut flying = Vec::new();
            let (mut rest, mut mine) = (into, summed);
            for (k, &len) in sizes.iter().enumerate() {
                let (ours, tail) = mine.split_at(chunk(len, n, me).len());
                mine = tail;
                let tag = (PHASE2 + k % PHASE2) as mpi::Tag;
                for c in 0..n {
                    let (part, tail) =
                        std::mem::take(&mut rest).split_at_mut(chunk(len, n, c).len());
                    rest = tail;
                    let peer = self.world.process_at_rank(c as mpi::Rank);
                    if c == me {
                        part.copy_from_slice(ours);
                        continue;
                    }
                    flying.push(peer.immediate_receive_into_with_tag(scope, part, tag));
                    flying.push(peer.immediate_send_with_tag(scope, ours, tag));
                }
            }
            for request in flying {
                request.wait();
            }
        });
    }
}

/// Tags: the scatter's messages use `0..PHASE2`, the gather's `PHASE2..2·PHASE2` (MPI
/// guarantees tags up to 32767).
const PHASE2: usize = 16_384;

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

    /// A reduce-scatter in fixed order, then an all-gather, overlapping backward: bucket k is
    /// cut into `size()` chunks; when a rank sends a bucket, chunk c goes to rank c
    /// (`MPI_Isend`/`MPI_Irecv`, tested for progress after every backward op). Once all are in,
    /// rank c adds its chunk over all slices in slice order — the same additions, in the same
    /// order, as adding whole gathered slices — and the summed chunks are exchanged. Each rank
    /// receives (N−1)/N·(per + 1) times the gradient's bytes: 2·(N−1)/N with one slice per
    /// rank, like a ring all-reduce, instead of the all-gather's (N−1)·per. Where that is no
    /// fewer bytes (2 ranks with one slice each, or 1 rank) the slices are all-gathered
    /// instead: one phase instead of two. Both add the same values in the same order.
    fn sum_slices(
        &self,
        sizes: &[usize],
        per: usize,
        produce: &mut dyn FnMut(&mut dyn BucketSink) -> Result<()>,
        into: &mut Vec<f32>,
    ) -> Result<()> {
        let (n, me) = (self.size(), self.rank());
        if per + 1 >= per * n {
            return gather_then_sum(self, sizes, per, produce, into);
        }
        let total: usize = sizes.iter().sum();
        let own: usize = sizes.iter().map(|&len| chunk(len, n, me).len()).sum();
        let order: Vec<usize> = (0..per).flat_map(|_| sizes.iter().copied()).collect();
        let mut send = self.send_cache.take();
        send.resize(per * total, 0.0);
        let (mut parts, mut summed) = self.scatter_cache.take();
        parts.resize(per * own * n, 0.0); // every slot is written before it is read
        let outcome = mpi::request::scope(|scope| {
            let mut sink = Scatter {
                world: &self.world,
                scope,
                cursor: Cursor::new(&order),
                send: &mut send[..],
                parts: &mut parts[..],
                ranks: n,
                rank: me,
                flying: Vec::new(),
            };
            let outcome = produce(&mut sink);
            for q in sink.cursor.rest() {
                sink.send[..order[q]].fill(0.0); // not sent: zeros, so no rank waits
                sink.start(q, order[q]);
            }
            for request in sink.flying {
                request.wait();
            }
            outcome
        });
        *self.send_cache.borrow_mut() = send;
        // Every rank takes part in the second half even after a local failure.
        summed.clear();
        let mut at = 0;
        for &len in sizes {
            let c = chunk(len, n, me).len();
            // Slice s = r·per + j; its part of this chunk, added in slice order.
            let part = |s: usize| {
                let start = n * ((s % per) * own + at) + (s / per) * c;
                &parts[start..start + c]
            };
            let first = summed.len();
            summed.extend_from_slice(part(0));
            for s in 1..per * n {
                let acc = &mut summed[first..];
                acc.iter_mut().zip(part(s)).for_each(|(a, b)| *a += b);
            }
            at += c;
        }
        into.resize(total, 0.0); // every value is written by the gather
        self.gather_chunks(sizes, &summed, into);
        *self.scatter_cache.borrow_mut() = (parts, summed);
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
        test_all(&mut self.flying);
        Ok(())
    }
}

/// The first half of one [`MpiWorld::sum_slices`]: the parts of the send buffer and of the
/// buffer for the chunks this rank owns not yet used, and the messages in flight.
struct Scatter<'a, 's> {
    world: &'a SimpleCommunicator,
    scope: &'s LocalScope<'a>,
    cursor: Cursor<'a>,
    send: &'a mut [f32],
    /// For each bucket sent, every rank's part of this rank's chunk, in rank order.
    parts: &'a mut [f32],
    ranks: usize,
    rank: usize,
    flying: Vec<Request<'a, [f32], &'s LocalScope<'a>>>,
}

impl<'a> Scatter<'a, '_> {
    /// Sends bucket `q` (the next `len` values of the send buffer): chunk c to rank c; this
    /// rank's chunk from every rank into the next slots.
    fn start(&mut self, q: usize, len: usize) {
        let (out, rest) = std::mem::take(&mut self.send).split_at_mut(len);
        self.send = rest;
        let out: &'a [f32] = out;
        let mine = chunk(len, self.ranks, self.rank);
        let (mut slots, rest) =
            std::mem::take(&mut self.parts).split_at_mut(mine.len() * self.ranks);
        self.parts = rest;
        let tag = (q % PHASE2) as mpi::Tag;
        for c in 0..self.ranks {
            let (slot, tail) = std::mem::take(&mut slots).split_at_mut(mine.len());
            slots = tail;
            if c == self.rank {
                slot.copy_from_slice(&out[mine.clone()]);
                continue;
            }
            let peer = self.world.process_at_rank(c as mpi::Rank);
            self.flying
                .push(peer.immediate_receive_into_with_tag(self.scope, slot, tag));
            let theirs = &out[chunk(len, self.ranks, c)];
            self.flying
                .push(peer.immediate_send_with_tag(self.scope, theirs, tag));
        }
    }
}

impl BucketSink for Scatter<'_, '_> {
    fn send(&mut self, values: &[f32]) -> Result<()> {
        let q = self.cursor.accept(values.len())?;
        self.send[..values.len()].copy_from_slice(values);
        self.start(q, values.len());
        self.progress()
    }

    fn progress(&mut self) -> Result<()> {
        test_all(&mut self.flying);
        Ok(())
    }
}

/// Tests every request in flight (letting MPI progress them); keeps those not complete.
fn test_all<'a>(flying: &mut Vec<Request<'a, [f32], &LocalScope<'a>>>) {
    for request in std::mem::take(flying) {
        if let Err(still) = request.test() {
            flying.push(still);
        }
    }
}

/// The chunk of a bucket of `len` values that rank `c` of `n` owns in a reduce-scatter: the
/// first `len % n` chunks get one value more.
fn chunk(len: usize, n: usize, c: usize) -> std::ops::Range<usize> {
    let (q, r) = (len / n, len % n);
    let start = c * q + c.min(r);
    start..start + q + usize::from(c < r)
}
