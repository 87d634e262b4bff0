//! The commands a person runs, as tests so they cannot rot: `make demo`,
//! `make bench` at a reduced scale, and the command-line companion
//! (`kubectl integration`).

mod bench;
mod companion;
mod demo;
