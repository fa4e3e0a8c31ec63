//! End-to-end tests of the `squall` binary: one test binary, one module per area.

mod alertmanager;
mod cli;
mod docker;
mod harness;
mod server;
