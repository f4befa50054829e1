//! Resilience middleware (work in progress).
