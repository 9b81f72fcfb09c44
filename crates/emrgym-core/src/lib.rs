//! The few primitives every EMRGym layer shares and that must behave the same everywhere:
//! the seeded random-number generator ([`rng`]). It depends on nothing of EMRGym.

pub mod rng;

pub use rng::{Rng, splitmix64};
