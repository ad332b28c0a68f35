//! Test support: a fake cradle server built on `proto`, and a simulated lossy network.
#![allow(dead_code)]

pub(crate) mod fake_server;
pub(crate) mod sim;
