//! Strategies, each written once against `Target` and matched exhaustively
//! on `environment::Strategy`: a new one is one file here plus one arm
//! below. A strategy ends when all traffic is on the new release; the frame
//! (`deploy`) verifies, retires the previous release, or undoes.
mod blue_green;
mod canary;
mod converge;
mod rolling;

pub use converge::converge;

use crate::{
    deploy::release::Release,
    environment::{CanaryConfig, DeployConfig, Strategy},
    gate::{analysis::Measurement, Failure, Gate},
    progress::Step,
    targets::Target,
};

/// What every strategy works with.
pub struct Run<'a, T> {
    pub target: &'a T,
    pub release: &'a Release,
    /// What serves before this run, if anything.
    pub previous: Option<&'a Release>,
    pub gate: &'a Gate<'a>,
    pub deploy: &'a DeployConfig,
    /// `[canary]`, for the canary strategy.
    pub canary: Option<&'a CanaryConfig>,
    /// What an analysis measured, kept with the release by the frame.
    pub measured: &'a std::sync::Mutex<Vec<Measurement>>,
    pub step: &'a Step,
}

pub async fn run<T: Target>(run: &Run<'_, T>) -> Result<(), Failure> {
    match run.release.strategy {
        Strategy::Rolling => rolling::run(run).await,
        Strategy::BlueGreen => blue_green::run(run).await,
        Strategy::Canary => canary::run(run).await,
    }
}

#[cfg(test)]
mod recording;
#[cfg(test)]
mod tests;
