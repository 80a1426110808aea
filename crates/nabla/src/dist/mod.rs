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

use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::error::{Error, Result};
use crate::train::Collective;

/// The world communicator of an MPI job.
pub struct MpiWorld {
    world: SimpleCommunicator,
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
}
