//! Integration tests: the real `fileapp` binary, real processes, real files, on 127.0.0.1.
//! One test binary; each module is a group of scenarios.

mod cli;
mod control;
mod failover;
mod faults;
mod folders;
mod identity;
mod natlab;
mod proxy;
mod punch;
mod relay;
mod relay_splice;
mod shared;
mod terminal;
mod transfer;
mod util;
mod wire;
