//! What data-parallel training needs from its processes: rank, size, an all-gather and a
//! broadcast. [`crate::dist::MpiWorld`] (feature `mpi`) implements it over MPI;
//! [`ThreadGroup`] over threads of one process (for tests and for trying it without MPI).

use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// A group of processes (ranks `0..size`) that train one model together.
pub trait Collective {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `local` (the same length on all ranks), concatenated in rank order.
    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>>;
    /// [`Collective::all_gather`] of f32 values (gradients: half the bytes).
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Rank 0's `buf` on every rank.
    fn broadcast(&self, buf: &mut [f64]) -> Result<()>;
}

/// Ranks as threads of one process.
pub struct ThreadGroup;

struct Shared {
    size: usize,
    state: Mutex<Round>,
    turn: Condvar,
}

#[derive(Default)]
struct Round {
    generation: u64,
    arrived: usize,
    slots: Vec<Vec<f64>>,
    result: Arc<Vec<f64>>,
}

/// One rank of a [`ThreadGroup`].
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `size` ranks, one per thread that will use it.
    pub fn ranks(size: usize) -> Vec<ThreadRank> {
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Round {
                slots: vec![Vec::new(); size],
                ..Default::default()
            }),
            turn: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ThreadRank {
    /// Deposits `local`; when every rank has, returns all of them in rank order.
    fn exchange(&self, local: &[f64]) -> Result<Arc<Vec<f64>>> {
        let poisoned = |_| Error::arg("ThreadGroup", "a rank panicked");
        let s = &self.shared;
        let mut round = s.state.lock().map_err(poisoned)?;
        let generation = round.generation;
        round.slots[self.rank] = local.to_vec();
        round.arrived += 1;
        if round.arrived == s.size {
            round.result = Arc::new(round.slots.concat());
            round.arrived = 0;
            round.generation += 1;
            s.turn.notify_all();
        } else {
            while round.generation == generation {
                round = s.turn.wait(round).map_err(poisoned)?;
            }
        }
        Ok(round.result.clone())
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(&self, local: &[f64]) -> Result<Vec<f64>> {
        Ok(self.exchange(local)?.to_vec())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        let wide: Vec<f64> = local.iter().map(|&v| v as f64).collect();
        Ok(self.exchange(&wide)?.iter().map(|&v| v as f32).collect())
    }

    fn broadcast(&self, buf: &mut [f64]) -> Result<()> {
        let all = self.exchange(buf)?;
        buf.copy_from_slice(&all[..buf.len()]);
        Ok(())
    }
}
