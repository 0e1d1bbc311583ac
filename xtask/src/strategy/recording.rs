//! A target in memory that records every call and can be told to fail, so
//! the strategy and frame tests assert the exact sequence of calls (as the
//! Kubernetes tests assert API calls against the fake server). Instances of
//! a release answer their probes unless the release is marked sick.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::{bail, Result};

use crate::{
    deploy::{
        lock::{LockInfo, LockStore, Renewal},
        records::HistoryStore,
        release::{History, Release},
    },
    gate::{Gate, ProbeResult},
    progress::Step,
    targets::{Caps, Check, InstanceState, InstanceView, Observation, Seen, Split, Target},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sickness {
    /// Answers 503 forever.
    NeverReady,
    /// Exits with code 2 at start.
    Crashes,
}

#[derive(Default)]
pub struct Recording {
    pub native: bool,
    pub calls: Mutex<Vec<String>>,
    /// (release, instance id), in start order.
    instances: Mutex<Vec<(String, String)>>,
    current: Mutex<Split>,
    pub sick: Mutex<HashMap<String, Sickness>>,
    /// A call (its recorded line's first word) that fails with an error.
    pub fail_on: Mutex<Option<String>>,
    pub history: Arc<Mutex<History>>,
    /// Scripted histories, returned by the next reads before the stored one.
    pub reads: Mutex<Vec<History>>,
    /// Writes from this number on (1-based) fail.
    pub fail_writes_from: Mutex<Option<usize>>,
    writes: Mutex<usize>,
    pub lock: Mutex<Option<(String, LockInfo)>>,
    pub lose_lock: Mutex<bool>,
    /// The next this many observations fail, as a dropped engine connection does.
    pub drop_observes: Mutex<u32>,
}

impl Recording {
    pub fn new(native: bool) -> Recording {
        Recording {
            native,
            ..Default::default()
        }
    }

    fn call(&self, line: String) -> Result<()> {
        self.calls.lock().unwrap().push(line.clone());
        let word = line.split(' ').next().unwrap_or_default().to_owned();
        if self.fail_on.lock().unwrap().as_deref() == Some(&word) {
            bail!("{word} failed (injected)");
        }
        Ok(())
    }

    /// The calls so far, with repeated observations folded into one line, and forgotten.
    pub fn take(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for line in self.calls.lock().unwrap().drain(..) {
            if out.last() != Some(&line) || !line.starts_with("observe") {
                out.push(line);
            }
        }
        out
    }

    fn count(&self, release: &str) -> usize {
        self.instances
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == release)
            .count()
    }
}

fn describe(split: &Split) -> String {
    split
        .0
        .iter()
        .map(|(r, p)| format!("{r}={p}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl LockStore for Recording {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        let mut lock = self.lock.lock().unwrap();
        if lock.is_some() {
            return Ok(None);
        }
        *lock = Some(("lock-1".into(), info.clone()));
        Ok(Some("lock-1".into()))
    }
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        Ok(self.lock.lock().unwrap().clone())
    }
    async fn lock_remove(&self, token: &str) -> Result<()> {
        let mut lock = self.lock.lock().unwrap();
        if lock.as_ref().is_some_and(|(t, _)| t == token) {
            *lock = None;
        }
        Ok(())
    }
    async fn lock_renew(&self, _token: &str, _at: i64) -> Result<Renewal> {
        Ok(match *self.lose_lock.lock().unwrap() {
            true => Renewal::Lost,
            false => Renewal::Renewed,
        })
    }
}

impl HistoryStore for Recording {
    async fn read_history(&self) -> Result<History> {
        let mut reads = self.reads.lock().unwrap();
        if !reads.is_empty() {
            return Ok(reads.remove(0));
        }
        Ok(self.history.lock().unwrap().clone())
    }
    async fn write_history(&self, history: &History) -> Result<()> {
        let mut writes = self.writes.lock().unwrap();
        *writes += 1;
        self.calls.lock().unwrap().push("write_history".into());
        if self
            .fail_writes_from
            .lock()
            .unwrap()
            .is_some_and(|n| *writes >= n)
        {
            bail!("the engine did not answer (injected)");
        }
        *self.history.lock().unwrap() = history.clone();
        Ok(())
    }
}

impl Target for Recording {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: self.native,
        }
    }
    fn public_url(&self) -> String {
        String::new()
    }
    fn public_client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::new())
    }
    async fn admit(&self, release: &mut Release) -> Result<()> {
        release.image_id = format!("sha256:{}", release.image);
        Ok(())
    }
    async fn prepare(&self, release: &Release) -> Result<()> {
        self.call(format!("prepare {}", release.id))
    }
    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        self.call(format!("start {} {count}", release.id))?;
        let mut instances = self.instances.lock().unwrap();
        let have = instances.iter().filter(|(r, _)| *r == release.id).count();
        for n in have..count {
            instances.push((release.id.clone(), format!("{}-{n}", release.id)));
        }
        Ok(())
    }
    async fn replace(&self, release: &Release) -> Result<()> {
        self.call(format!("replace {}", release.id))?;
        let mut instances = self.instances.lock().unwrap();
        instances.clear();
        for n in 0..release.replicas {
            instances.push((release.id.clone(), format!("{}-{n}", release.id)));
        }
        Ok(())
    }
    async fn observe(&self, release: &Release) -> Result<Observation> {
        self.call(format!("observe {}", release.id))?;
        {
            let mut dropped = self.drop_observes.lock().unwrap();
            if *dropped > 0 {
                *dropped -= 1;
                bail!("connection closed before message completed (injected)");
            }
        }
        let sick = self.sick.lock().unwrap().get(&release.id).copied();
        let instances = self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == release.id)
            .map(|(_, id)| Seen {
                id: id.clone(),
                name: id.clone(),
                state: match sick {
                    Some(Sickness::Crashes) => InstanceState::Exited { code: 2 },
                    _ => InstanceState::Running { restarts: 0 },
                },
                check: Some(Check::Probe(ProbeResult {
                    url: format!("http://{id}/ready"),
                    status: Some(if sick.is_some() { 503 } else { 200 }),
                    latency_ms: 1.0,
                    error: None,
                })),
                detail: None,
            })
            .collect();
        Ok(Observation {
            instances,
            verdict: None,
            settled: true,
        })
    }
    async fn follow(&self, release: &Release, ready: &[String]) -> Result<()> {
        self.call(format!("follow {} {}", release.id, ready.len()))
    }
    async fn shift(&self, split: &Split) -> Result<()> {
        self.call(format!("shift {}", describe(split)))?;
        for (release, _) in &split.0 {
            if self.count(release) == 0 {
                bail!("no instance of {release}");
            }
        }
        *self.current.lock().unwrap() = split.clone();
        Ok(())
    }
    async fn split(&self) -> Result<Split> {
        Ok(self.current.lock().unwrap().clone())
    }
    async fn undo(&self, to: Option<&Release>, _gate: &Gate<'_>, _step: &Step) -> Result<()> {
        self.call(format!(
            "undo {}",
            to.map(|r| r.id.as_str()).unwrap_or("nothing")
        ))?;
        let mut instances = self.instances.lock().unwrap();
        instances.retain(|(r, _)| Some(r.as_str()) == to.map(|t| t.id.as_str()));
        *self.current.lock().unwrap() = to.map(|t| Split::all(&t.id)).unwrap_or_default();
        Ok(())
    }
    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        self.call(format!("retire {release} keep {keep}"))
    }
    async fn logs(&self, _release: &Release, instance: Option<&str>, _lines: usize) -> String {
        instance.map(|i| format!("logs of {i}")).unwrap_or_default()
    }
    async fn instances(&self) -> Result<Vec<InstanceView>> {
        Ok(vec![])
    }
    async fn probes(
        &self,
        _path: &str,
        _timeout: std::time::Duration,
    ) -> Result<Vec<(String, ProbeResult)>> {
        Ok(vec![])
    }
    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
    async fn stop_all(&self) -> Result<()> {
        self.call("stop_all".into())
    }
    async fn prune(
        &self,
        kept: &[Release],
        _dry_run: bool,
    ) -> Result<Option<crate::targets::docker::Pruned>> {
        let ids: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
        self.call(format!("prune keeping {}", ids.join(",")))?;
        Ok(None)
    }
    async fn plan(&self, _release: &Release) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
}
