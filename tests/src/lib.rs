//! The cross-service scenario suite lives in `tests/`: each file there is a scenario run by the
//! drill engine of [`lab_drill`] against the release binaries. This library is empty; it exists
//! because a Cargo package needs a target besides its tests.
#![forbid(unsafe_code)]
