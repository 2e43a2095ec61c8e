//! The parts of onionlb's benchmark harness that the criterion benches
//! share with the `onionlb-bench` binary.

pub mod micro;
pub mod synthetic;
