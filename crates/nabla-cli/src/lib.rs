//! The `nabla` command line as a library: argument definitions, data-set resolution, the
//! training loop, evaluation, and the PNG plots (which the experiments in `examples/` reuse).

#![allow(missing_docs)]

pub mod args;
pub mod bench;
pub mod commands;
pub mod dataset;
pub mod experiment;
pub mod interop;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod train;
