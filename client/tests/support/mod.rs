//! Test support: a fake cradle server built on `proto`, a simulated lossy network, and a
//! transport wired straight to a fake server, a fake server on a loopback socket.
#![allow(dead_code)]

pub(crate) mod fake_server;
pub(crate) mod in_memory;
pub(crate) mod sim;
pub(crate) mod udp_server;
