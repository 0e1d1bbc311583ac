//! Command-line glue: parse flags, call the concept modules, report for
//! people (tables) or machines (`--json`).
pub mod image;
pub mod lifecycle;
pub mod observe;
mod orchestrated;
pub mod releases;
mod swarm_observe;

pub use image::{build, push, scan, BuildArgs, PushArgs, ScanArgs};
