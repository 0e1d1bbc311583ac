//! The Docker target over several hosts (`target.hosts`): one Docker target
//! per host, each with its own balancer and `deploy.replicas` instances,
//! reached from the deploying machine (over SSH, typically), never run on
//! them.
//!
//! To the strategies the fleet is one pool of `replicas × hosts` instances
//! filled host by host: a rolling deploy in batches of `deploy.surge`
//! replaces the first host's instances, then the next host's (a surge of
//! `replicas` rolls one host per batch), and each host's balancer moves to
//! the new instances on that host only. A blue-green deploy starts every
//! host's green instances and switches all balancers. A failure undoes
//! every host back to the active release.
//!
//! Records: the lock and the history live on the first host listed (one
//! place that decides, with the engine's create-if-absent); every history
//! write is mirrored to the other hosts, so a fleet whose first host is lost
//! keeps its history on the next one (see docs/FLEET.md).
mod target;

use anyhow::{bail, Result};
use futures_util::future::join_all;

use super::docker::{DockerTarget, Placement};
use crate::{
    deploy::{
        lock::{LockInfo, LockStore, Renewal},
        records::HistoryStore,
        release::{History, Release},
    },
    environment::Environment,
};

/// One host of the fleet.
pub struct Member {
    /// The host as `target.hosts` names it (its address, for messages).
    pub host: String,
    pub target: DockerTarget,
}

pub struct FleetTarget {
    members: Vec<Member>,
    /// `deploy.replicas`: instances on each host.
    per_host: usize,
}

impl FleetTarget {
    /// Every host reached before anything is done: a host that does not
    /// answer is named, with every other one that does not either, and
    /// nothing has been changed anywhere.
    pub async fn connect(env: &Environment) -> Result<FleetTarget> {
        let hosts = env.engine_hosts();
        let connected = join_all(hosts.iter().map(|host| async move {
            let placement = Placement::of(env, Some(host))?;
            DockerTarget::connect_at(env, placement).await
        }))
        .await;
        let mut members = Vec::new();
        let mut unreachable = Vec::new();
        for (host, result) in hosts.iter().zip(connected) {
            match result {
                Ok(target) => members.push(Member {
                    host: label(host),
                    target,
                }),
                Err(e) => unreachable.push(format!("{host}: {e:#}")),
            }
        }
        if !unreachable.is_empty() {
            bail!(
                "{} of the {} hosts of {} cannot be reached; nothing was changed on any host:\n  {}",
                unreachable.len(),
                hosts.len(),
                env.path.display(),
                unreachable.join("\n  ")
            );
        }
        Ok(FleetTarget {
            members,
            per_host: env.file.deploy.replicas,
        })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn primary(&self) -> &DockerTarget {
        &self.members[0].target
    }

    /// `release` as one host runs it: `replicas` of its own.
    fn on_host(&self, release: &Release) -> Release {
        let mut own = release.clone();
        own.replicas = self.per_host;
        own
    }

    /// Instances each host runs when the pool holds `count`, host by host.
    fn spread(&self, count: usize) -> Vec<usize> {
        spread(count, self.per_host, self.members.len())
    }

    /// Runs `op` on every host at once; every failure named by its host.
    async fn each<'a, T, F, Fut>(&'a self, op: F) -> Result<Vec<T>>
    where
        F: Fn(&'a Member) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let results = join_all(self.members.iter().map(&op)).await;
        let mut values = Vec::new();
        let mut failed = Vec::new();
        for (member, result) in self.members.iter().zip(results) {
            match result {
                Ok(v) => values.push(v),
                Err(e) => failed.push(format!("host {}: {e:#}", member.host)),
            }
        }
        match failed.is_empty() {
            true => Ok(values),
            false => bail!("{}", failed.join("; ")),
        }
    }
}

/// The host part of an engine address, for messages and names.
fn label(host: &str) -> String {
    crate::ssh::host_of(host).unwrap_or_else(|_| host.to_owned())
}

/// `count` instances over `hosts` hosts of `per_host` each, filling the
/// first host first: 5 of 3 per host over 3 hosts -> [3, 2, 0].
pub fn spread(count: usize, per_host: usize, hosts: usize) -> Vec<usize> {
    (0..hosts)
        .map(|i| count.saturating_sub(i * per_host).min(per_host))
        .collect()
}

impl LockStore for FleetTarget {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        self.primary().lock_create(info).await
    }
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        self.primary().lock_read().await
    }
    async fn lock_remove(&self, token: &str) -> Result<()> {
        self.primary().lock_remove(token).await
    }
    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal> {
        self.primary().lock_renew(token, at).await
    }
}

impl HistoryStore for FleetTarget {
    async fn read_history(&self) -> Result<History> {
        self.primary().read_history().await
    }

    /// Written on the first host (where a concurrent writer is caught), then
    /// mirrored: a mirror that fails is a warning, the next write retries.
    async fn write_history(&self, history: &History) -> Result<()> {
        self.primary().write_history(history).await?;
        let mirrors = join_all(self.members[1..].iter().map(|m| async move {
            m.target.read_history().await?;
            m.target.write_history(history).await
        }))
        .await;
        for (member, result) in self.members[1..].iter().zip(mirrors) {
            if let Err(e) = result {
                eprintln!(
                    "warning: mirroring the release history to host {}: {e:#} (the next write tries again)",
                    member.host
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn the_pool_fills_host_by_host() {
        assert_eq!(spread(0, 3, 3), [0, 0, 0]);
        assert_eq!(spread(1, 3, 3), [1, 0, 0]);
        assert_eq!(spread(5, 3, 3), [3, 2, 0]);
        assert_eq!(spread(9, 3, 3), [3, 3, 3]);
        assert_eq!(spread(12, 3, 3), [3, 3, 3]);
    }
}
