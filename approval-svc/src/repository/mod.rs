//! SQL, and nothing else: every statement approval-svc runs, each a short transaction. No
//! function here calls the network, so no transaction or row lock is ever held across a call
//! to order-svc. The attempt writes also come in batch form (one transaction for many
//! challenges), which [`crate::write_batch`] uses to share commits under load.

pub mod attempts;
pub mod challenges;
pub mod completer;
