//! The resilience stack and the fault layer against a real tonic server on loopback.

mod common;
mod faults;
mod metrics;
mod stack;
