//! SQL, and nothing else: every statement approval-svc runs, each a short transaction. No
//! function here calls the network, so no transaction or row lock is ever held across a call
//! to order-svc.

pub mod challenges;
pub mod completer;

pub use challenges::*;
