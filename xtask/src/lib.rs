//! The library behind `cargo xtask`; integration tests use it directly.
pub mod ci;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod engine;
pub mod image;
pub mod lint;
pub mod nginx;
pub mod progress;
pub mod registry;
pub mod report;
pub mod scan;
pub mod setup;
pub mod workspace;
