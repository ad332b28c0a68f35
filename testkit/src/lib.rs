//! Test support for cradle: a linearizability checker for histories recorded by clients of a
//! real or simulated node (`linearizability`), and the one seeded pseudo-random generator the
//! project's tests and simulations share (`Rng`).
//!
//! It is for tests only. It must never become a dependency of a shipping crate (`proto`,
//! `dataplane`, `storage`, `control`, `client` or the `cradle` binary take it as a
//! dev-dependency at most), must never do I/O, read a clock or draw unseeded randomness (a
//! history carries its own times; a generator its seed), and must never weaken what it
//! checks to make a history pass: a checker that accepts too much is worse than none.
#![forbid(unsafe_code)]

pub mod linearizability;
mod rng;

pub use rng::Rng;
