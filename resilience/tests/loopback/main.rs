//! The resilience stack and the fault layer against a real tonic server on loopback.

mod balance;
mod common;
mod faults;
mod fleet;
mod metrics;
mod stack;
