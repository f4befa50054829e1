//! The resilience stack and the fault layer against a real tonic server on loopback.

mod common;
mod balance;
mod faults;
mod fleet;
mod metrics;
mod stack;
