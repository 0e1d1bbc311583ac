//! One deploy per environment at a time. The lock is a record in the target
//! (created only if absent, so two deployers cannot both win), naming its
//! holder. A holder that is gone (same host, dead pid) or whose time-to-live
//! has passed is taken over, with a warning.
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::release;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub since: i64,
    pub ttl_seconds: u64,
    pub command: String,
    /// Unix seconds of the holder's last renewal, read from the store (never written in the lock itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed: Option<i64>,
}

impl LockInfo {
    pub fn mine(command: &str, ttl: Duration) -> LockInfo {
        LockInfo {
            holder: release::deployer(),
            host: release::hostname(),
            pid: std::process::id(),
            since: chrono::Utc::now().timestamp(),
            ttl_seconds: ttl.as_secs(),
            command: command.to_owned(),
            renewed: None,
        }
    }

    /// Past its time-to-live since it was taken or last renewed.
    pub fn expired(&self, now: i64) -> bool {
        let last = self.renewed.unwrap_or(self.since).max(self.since);
        now > last.saturating_add(self.ttl_seconds.min(i64::MAX as u64) as i64)
    }

    /// Only provable on the holder's own host: a pid elsewhere means nothing here.
    pub fn holder_gone(&self) -> bool {
        self.host == release::hostname()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub fn describe(&self) -> String {
        let since = chrono::DateTime::from_timestamp(self.since, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let renewed = self
            .renewed
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| format!(", renewed {}", t.to_rfc3339()))
            .unwrap_or_default();
        format!(
            "{} (pid {} on {}, `{}`, since {since}{renewed}, expires {}s after its last renewal)",
            self.holder, self.pid, self.host, self.command, self.ttl_seconds
        )
    }
}

/// Where a target keeps its lock. `create` must be atomic: None when one
/// exists, else the token that names exactly the lock it made.
#[allow(async_fn_in_trait)]
pub trait LockStore {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>>;
    /// The current lock and an opaque token that names exactly that lock.
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>>;
    /// Removes the lock named by `token`, and no newer one.
    async fn lock_remove(&self, token: &str) -> Result<()>;
    /// Marks the lock `token` names as alive at `at` (unix seconds); `Lost` when it is not the current lock.
    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    Lost,
}

pub struct Held {
    pub info: LockInfo,
    /// Names exactly this lock in the store.
    pub token: String,
    /// Set when a stale lock was taken over: the previous holder may have left work half done.
    pub took_over: Option<LockInfo>,
}

pub async fn acquire(store: &impl LockStore, env: &str, info: LockInfo) -> Result<Held> {
    if let Some(token) = store.lock_create(&info).await? {
        return Ok(Held {
            info,
            token,
            took_over: None,
        });
    }
    let Some((token, existing)) = store.lock_read().await? else {
        // Released between our create and read: try once more.
        if let Some(token) = store.lock_create(&info).await? {
            return Ok(Held {
                info,
                token,
                took_over: None,
            });
        }
        bail!("environment {env} is locked by another deploy that just started; try again");
    };
    let now = chrono::Utc::now().timestamp();
    let why = if existing.holder_gone() {
        "its process is gone"
    } else if existing.expired(now) {
        "its time-to-live has passed"
    } else {
        bail!(
            "environment {env} is locked by {}\nwait for it to finish, or if it is stuck: cargo xtask lock release -e {env}",
            existing.describe()
        );
    };
    eprintln!(
        "warning: taking over the lock on {env} from {}: {why}",
        existing.describe()
    );
    store.lock_remove(&token).await?;
    let Some(token) = store.lock_create(&info).await? else {
        bail!("environment {env}: another deploy took over the stale lock first; try again");
    };
    Ok(Held {
        info,
        token,
        took_over: Some(existing),
    })
}

/// Runs `work` holding the environment's lock, renewed every third of its
/// time-to-live while `work` runs, and releases it whatever `work` returned:
/// `work`'s error is the headline, a failed release second. When a renewal
/// finds the lock taken over (this process was stopped or stalled past its
/// time-to-live), `work` is dropped where it stands, so it changes nothing
/// more, and the error says so: the run that took the lock finishes the job.
pub async fn while_held<T>(
    store: &impl LockStore,
    env: &crate::environment::Environment,
    command: &str,
    work: impl AsyncFnOnce(&Held) -> Result<T>,
) -> Result<T> {
    let ttl = Duration::from_secs(env.file.deploy.lock_ttl_seconds);
    let held = acquire(store, &env.name, LockInfo::mine(command, ttl)).await?;
    let every = Duration::from_secs((ttl.as_secs() / 3).max(1));
    let result = tokio::select! {
        biased;
        lost = keep_renewed(store, &env.name, &held, every) => Err(lost),
        result = work(&held) => result,
    };
    let unlocked = release(store, &held).await;
    let value = result?;
    anyhow::Context::context(unlocked, "releasing the lock")?;
    Ok(value)
}

/// Renews until the lock turns out lost; returns why. A failed renewal is
/// retried on the next tick: only a lock that is someone else's now is lost.
/// Its own clock decides first: a run stopped (SIGSTOP, Ctrl-Z, a frozen
/// VM) past its time-to-live may have been taken over, so it gives up on
/// its first look after resuming, before `work` is polled again (the select
/// is biased) and without waiting for the store to answer.
async fn keep_renewed(
    store: &impl LockStore,
    env: &str,
    held: &Held,
    every: Duration,
) -> anyhow::Error {
    let ttl = held.info.ttl_seconds.min(i64::MAX as u64) as i64;
    let mut renewed_at = held.info.since;
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::time::sleep(every.min(Duration::from_secs(1))).await;
        let now = chrono::Utc::now().timestamp();
        if now >= renewed_at.saturating_add(ttl) {
            return anyhow::anyhow!(
                "lost the lock on {env}: its time-to-live ({ttl}s) passed without a renewal while this run was stopped or stalled, so another run may have taken it over; this run stopped without changing anything more (see `cargo xtask status -e {env}`)"
            );
        }
        if tokio::time::Instant::now() < next {
            continue;
        }
        next = tokio::time::Instant::now() + every;
        match store.lock_renew(&held.token, now).await {
            Ok(Renewal::Renewed) => renewed_at = now,
            Ok(Renewal::Lost) => {
                return anyhow::anyhow!(
                    "lost the lock on {env}: another run took it over while this one was stopped or stalled past its time-to-live; this run stopped without changing anything more (see `cargo xtask status -e {env}`)"
                )
            }
            Err(e) => eprintln!("warning: renewing the lock on {env}: {e:#}; trying again"),
        }
    }
}

/// Whether an earlier run died without cleaning up: its lock is stale (the
/// holder is gone or past its time-to-live), or no lock is held while a
/// release is still recorded in progress.
pub async fn abandoned(
    store: &impl LockStore,
    history: &crate::deploy::release::History,
) -> Result<bool> {
    let current = store.lock_read().await?;
    let now = chrono::Utc::now().timestamp();
    let stale = current
        .as_ref()
        .is_some_and(|(_, info)| info.holder_gone() || info.expired(now));
    Ok(stale || (current.is_none() && history.in_progress().is_some()))
}

pub async fn release(store: &impl LockStore, held: &Held) -> Result<()> {
    if let Some((token, _)) = store.lock_read().await? {
        if token == held.token {
            store.lock_remove(&token).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_liveness() {
        let mut info = LockInfo::mine("deploy", Duration::from_secs(60));
        assert!(!info.expired(info.since + 59));
        assert!(info.expired(info.since + 61));
        assert!(!info.holder_gone(), "this process is alive");
        info.pid = u32::MAX - 1;
        assert!(info.holder_gone());
        info.host = "elsewhere".into();
        assert!(!info.holder_gone(), "a pid on another host proves nothing");
    }
}
