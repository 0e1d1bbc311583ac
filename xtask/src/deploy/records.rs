//! The release history and the deploy lock, written once over any store of
//! immutable, uniquely named records (Docker volumes, swarm configs): such a
//! store gives exactly one primitive, "create if no record has this name",
//! and that is enough for both.
//! - History: record `<scope>-history-<seq>`. A writer creates seq+1 of the
//!   seq it read: two writers that read the same seq cannot both succeed, so
//!   no record is ever lost (compare-and-swap). Older records are removed
//!   after the new one exists: a crash in between leaves two, the newer wins.
//! - Lock: record `<scope>-lock`, created only if absent. Records cannot
//!   change, so the holder renews by writing `<scope>-lockbeat-<n>` records
//!   that name the lock they renew; a reader takes the newest beat of the
//!   current lock as its renewal time.
use std::{collections::HashMap, sync::Mutex};

use anyhow::{bail, Context, Result};

use super::{
    lock::{LockInfo, LockStore, Renewal},
    release::History,
};

pub const HISTORY: &str = "history";
pub const LOCK: &str = "lock";
pub const BEAT: &str = "lockbeat";

/// One stored record: `token` names exactly this record (never a later one of the same name).
#[derive(Debug, Clone)]
pub struct Record {
    pub token: String,
    pub name: String,
    pub data: String,
}

/// What a backend provides. Every record carries the scope and its role as labels.
#[allow(async_fn_in_trait)]
pub trait RecordStore {
    fn scope(&self) -> &str;
    /// Creates the record unless one with `name` exists; returns its token, or None when one existed.
    async fn create(&self, name: &str, role: &str, data: &str) -> Result<Option<String>>;
    async fn list(&self, role: &str) -> Result<Vec<Record>>;
    /// Removes the record `token` names; one already gone is fine.
    async fn remove(&self, token: &str) -> Result<()>;
}

/// The history a release record store holds, and its lock.
pub struct Ledger<S> {
    pub store: S,
    /// The history record last read or written: the next write must be the one after it.
    seen: Mutex<Option<u64>>,
}

/// Where a target keeps its history: written only as a successor of the version read.
#[allow(async_fn_in_trait)]
pub trait HistoryStore {
    async fn read_history(&self) -> Result<History>;
    async fn write_history(&self, history: &History) -> Result<()>;
}

fn numbered(records: &[Record], prefix: &str) -> Vec<(u64, Record)> {
    records
        .iter()
        .filter_map(|r| Some((r.name.strip_prefix(prefix)?.parse().ok()?, r.clone())))
        .collect()
}

impl<S: RecordStore> Ledger<S> {
    pub fn new(store: S) -> Ledger<S> {
        Ledger {
            store,
            seen: Mutex::new(None),
        }
    }

    fn prefix(&self, role: &str) -> String {
        format!("{}-{role}-", self.store.scope())
    }

    /// Every record of the environment: for throwaway environments only.
    pub async fn remove_all(&self) -> Result<()> {
        for role in [HISTORY, LOCK, BEAT] {
            for record in self.store.list(role).await? {
                self.store.remove(&record.token).await?;
            }
        }
        Ok(())
    }

    async fn beats(&self) -> Result<Vec<(u64, Record)>> {
        Ok(numbered(&self.store.list(BEAT).await?, &self.prefix(BEAT)))
    }
}

impl<S: RecordStore> HistoryStore for Ledger<S> {
    async fn read_history(&self) -> Result<History> {
        let records = numbered(&self.store.list(HISTORY).await?, &self.prefix(HISTORY));
        let newest = records.into_iter().max_by_key(|(seq, _)| *seq);
        *self.seen.lock().expect("history version") = newest.as_ref().map(|(seq, _)| *seq);
        match newest {
            None => Ok(History::default()),
            Some((seq, record)) => serde_json::from_str(&record.data).with_context(|| {
                format!(
                    "parsing history record {seq} of {} ({})",
                    self.store.scope(),
                    record.name
                )
            }),
        }
    }

    async fn write_history(&self, history: &History) -> Result<()> {
        let scope = self.store.scope().to_owned();
        let read = *self.seen.lock().expect("history version");
        let seq = read.unwrap_or(0) + 1;
        let name = format!("{}{seq}", self.prefix(HISTORY));
        if self
            .store
            .create(&name, HISTORY, &serde_json::to_string(history)?)
            .await?
            .is_none()
        {
            bail!(
                "the history of {scope} changed since it was read (record {seq} exists): another writer got there first; nothing was overwritten, run the command again"
            );
        }
        *self.seen.lock().expect("history version") = Some(seq);
        let older = numbered(&self.store.list(HISTORY).await?, &self.prefix(HISTORY));
        for (_, record) in older.into_iter().filter(|(s, _)| *s < seq) {
            self.store.remove(&record.token).await?;
        }
        Ok(())
    }
}

impl<S: RecordStore> LockStore for Ledger<S> {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        let name = format!("{}-{LOCK}", self.store.scope());
        self.store
            .create(&name, LOCK, &serde_json::to_string(info)?)
            .await
    }

    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        let Some(lock) = self.store.list(LOCK).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut info: LockInfo = serde_json::from_str(&lock.data)
            .with_context(|| format!("parsing the lock record {}", lock.name))?;
        let renewed = self
            .beats()
            .await?
            .into_iter()
            .filter_map(|(_, beat)| serde_json::from_str::<Beat>(&beat.data).ok())
            .filter(|beat| beat.lock == lock.token)
            .map(|beat| beat.at)
            .max();
        info.renewed = renewed;
        Ok(Some((lock.token, info)))
    }

    async fn lock_remove(&self, token: &str) -> Result<()> {
        self.store.remove(token).await?;
        // Beats of locks that no longer exist are worth nothing.
        for (_, beat) in self.beats().await? {
            self.store.remove(&beat.token).await?;
        }
        Ok(())
    }

    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal> {
        match self.lock_read().await? {
            Some((current, _)) if current == token => {}
            _ => return Ok(Renewal::Lost),
        }
        let beats = self.beats().await?;
        let next = beats.iter().map(|(n, _)| n).max().copied().unwrap_or(0) + 1;
        let beat = serde_json::to_string(&Beat {
            lock: token.to_owned(),
            at,
        })?;
        let name = format!("{}{next}", self.prefix(BEAT));
        if self.store.create(&name, BEAT, &beat).await?.is_none() {
            // Another renewal of ours cannot race this one; someone else wrote a beat.
            return Ok(Renewal::Lost);
        }
        for (_, old) in beats {
            self.store.remove(&old.token).await?;
        }
        Ok(Renewal::Renewed)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Beat {
    /// The token of the lock this beat renews.
    lock: String,
    /// Unix seconds.
    at: i64,
}

/// `LockStore` and `HistoryStore` for a target whose `ledger` field keeps
/// its records: written once for every such target.
macro_rules! ledger_records {
    ($target:ty) => {
        impl $crate::deploy::lock::LockStore for $target {
            async fn lock_create(
                &self,
                info: &$crate::deploy::lock::LockInfo,
            ) -> anyhow::Result<Option<String>> {
                self.ledger.lock_create(info).await
            }
            async fn lock_read(
                &self,
            ) -> anyhow::Result<Option<(String, $crate::deploy::lock::LockInfo)>> {
                self.ledger.lock_read().await
            }
            async fn lock_remove(&self, token: &str) -> anyhow::Result<()> {
                self.ledger.lock_remove(token).await
            }
            async fn lock_renew(
                &self,
                token: &str,
                at: i64,
            ) -> anyhow::Result<$crate::deploy::lock::Renewal> {
                self.ledger.lock_renew(token, at).await
            }
        }

        impl $crate::deploy::records::HistoryStore for $target {
            async fn read_history(&self) -> anyhow::Result<$crate::deploy::release::History> {
                self.ledger.read_history().await
            }
            async fn write_history(
                &self,
                history: &$crate::deploy::release::History,
            ) -> anyhow::Result<()> {
                self.ledger.write_history(history).await
            }
        }
    };
}
pub(crate) use ledger_records;

/// The label filter that lists one role's records of a scope.
pub fn label_filter(scope: &str, role: &str) -> HashMap<String, Vec<String>> {
    let wanted = labels(scope, role)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    HashMap::from([("label".to_owned(), wanted)])
}

/// Labels every record carries, for a backend that stores them as labels.
pub fn labels(scope: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            crate::targets::docker::labels::SCOPE.to_owned(),
            scope.to_owned(),
        ),
        (
            crate::targets::docker::labels::ROLE.to_owned(),
            role.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primitive in memory, as both real backends behave.
    #[derive(Default)]
    struct Memory(Mutex<Vec<(String, String, String)>>, Mutex<u64>);

    impl RecordStore for Memory {
        fn scope(&self) -> &str {
            "app-test"
        }
        async fn create(&self, name: &str, role: &str, data: &str) -> Result<Option<String>> {
            let mut records = self.0.lock().unwrap();
            if records.iter().any(|(n, _, _)| n == name) {
                return Ok(None);
            }
            records.push((name.into(), role.into(), data.into()));
            Ok(Some(name.into()))
        }
        async fn list(&self, role: &str) -> Result<Vec<Record>> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r, _)| r == role)
                .map(|(n, _, d)| Record {
                    token: n.clone(),
                    name: n.clone(),
                    data: d.clone(),
                })
                .collect())
        }
        async fn remove(&self, token: &str) -> Result<()> {
            self.0.lock().unwrap().retain(|(n, _, _)| n != token);
            Ok(())
        }
    }

    #[tokio::test]
    async fn two_writers_of_the_same_version_cannot_both_win() {
        let ledger = Ledger::new(Memory::default());
        let mut history = ledger.read_history().await.unwrap();
        history.next_seq = 1;
        ledger.write_history(&history).await.unwrap();
        // A second writer read the same version before the first wrote.
        let other = Ledger::new(Memory::default());
        *other.store.0.lock().unwrap() = ledger.store.0.lock().unwrap().clone();
        let mut mine = ledger.read_history().await.unwrap();
        let mut theirs = other.read_history().await.unwrap();
        mine.next_seq = 2;
        theirs.next_seq = 3;
        ledger.write_history(&mine).await.unwrap();
        *other.store.0.lock().unwrap() = ledger.store.0.lock().unwrap().clone();
        let lost = other.write_history(&theirs).await.unwrap_err();
        assert!(
            format!("{lost:#}").contains("changed since it was read"),
            "{lost:#}"
        );
        assert_eq!(
            other.read_history().await.unwrap().next_seq,
            2,
            "the first write stands"
        );
    }

    #[tokio::test]
    async fn a_renewed_lock_carries_its_renewal_and_a_replaced_one_is_lost() {
        let ledger = Ledger::new(Memory::default());
        let info = LockInfo::mine("deploy", std::time::Duration::from_secs(60));
        let token = ledger.lock_create(&info).await.unwrap().unwrap();
        let (read_token, read) = ledger.lock_read().await.unwrap().unwrap();
        assert_eq!(read_token, token);
        assert_eq!(read.renewed, None);
        let at = info.since + 50;
        assert_eq!(
            ledger.lock_renew(&token, at).await.unwrap(),
            Renewal::Renewed
        );
        let (_, read) = ledger.lock_read().await.unwrap().unwrap();
        assert_eq!(read.renewed, Some(at));
        assert!(!read.expired(info.since + 100), "renewed at +50, ttl 60");
        assert!(read.expired(info.since + 111));
        // Taken over: the old holder's renewal finds another lock.
        ledger.lock_remove(&token).await.unwrap();
        let mut other = LockInfo::mine("deploy", std::time::Duration::from_secs(60));
        other.pid += 1;
        ledger
            .store
            .0
            .lock()
            .unwrap()
            .retain(|(n, _, _)| !n.ends_with("-lock"));
        *ledger.store.1.lock().unwrap() += 1;
        ledger.store.0.lock().unwrap().push((
            "app-test-lock#2".into(),
            LOCK.into(),
            serde_json::to_string(&other).unwrap(),
        ));
        assert_eq!(
            ledger.lock_renew(&token, at + 1).await.unwrap(),
            Renewal::Lost
        );
    }
}
