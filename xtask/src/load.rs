//! A keep-alive load generator for deploy tests and benchmarks (they aim it
//! at 127.0.0.1 only).
//! No retries: every connection error and every non-2xx counts as failed.
use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Mutex,
};

pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

impl Load {
    /// `connections` workers, each on one kept-alive connection, as fast as they can.
    pub fn start(client: reqwest::Client, url: String, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..connections)
            .map(|_| {
                let (client, url, stop, ok, failed, errors) = (
                    client.clone(),
                    url.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    errors.clone(),
                );
                tokio::spawn(async move {
                    // Bounded by the stop flag and by count, so a stuck test cannot load forever.
                    for _ in 0..2_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!("HTTP {}", r.status()));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!("{e:?}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            tasks,
        }
    }

    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn failed_so_far(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let errors = self
            .errors
            .lock()
            .unwrap()
            .iter()
            .take(10)
            .cloned()
            .collect();
        LoadReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            errors,
        }
    }
}
