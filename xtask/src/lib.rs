//! The library behind `cargo xtask`; integration tests use it directly.
pub mod ci;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod lint;
pub mod nginx;
pub mod report;
pub mod setup;
pub mod workspace;
