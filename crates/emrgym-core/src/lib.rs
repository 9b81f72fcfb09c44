//! The few primitives every EMRGym layer shares and that must behave the same everywhere:
//! the seeded random-number generator ([`rng`]), the topological sort ([`graph`]) and locks
//! that recover from poisoning instead of reading as empty ([`sync`]). It depends on nothing
//! of EMRGym.

pub mod graph;
pub mod rng;
pub mod sync;

pub use graph::topological_order;
pub use rng::{Rng, splitmix64};
