//! Compose's servers come from DNS: `--scale app=N` makes Docker's DNS
//! answer the service name with N addresses, and each must get a slot. Here
//! a tiny DNS server on 127.0.0.1 plays Docker's 127.0.0.11 and answers
//! `app` with two loopback addresses, each running an app replica.
use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use xtask::haproxy::ServerStatus;

use super::{client, compose::Front};

/// Answers A queries for `name` with `addresses` (which the test may
/// change, as compose does when it scales); anything else with no record.
struct Dns {
    port: u16,
    addresses: Arc<Mutex<Vec<Ipv4Addr>>>,
    stop: Arc<AtomicBool>,
}

impl Dns {
    fn start(name: &'static str, addresses: Vec<Ipv4Addr>) -> Dns {
        let addresses = Arc::new(Mutex::new(addresses));
        let answered = addresses.clone();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let current = answered.lock().unwrap().clone();
                if let Some(answer) = answer(&buf[..len], name, &current) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        Dns {
            port,
            addresses,
            stop,
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A response to a one-question query (RFC 1035 4.1): the header with the
/// query's id, the question copied, one A record per address when the
/// question is `name` IN A. HAProxy's EDNS record is left unanswered.
fn answer(query: &[u8], name: &str, addresses: &[Ipv4Addr]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let matches = labels.join(".").eq_ignore_ascii_case(name) && qtype == 1;
    let records: &[Ipv4Addr] = if matches { addresses } else { &[] };
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1]); // response, recursion available; 1 question
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional records
    out.extend_from_slice(question);
    for address in records {
        // A pointer to the question's name, type A, class IN, ttl 1 s, 4 bytes.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        out.extend_from_slice(&address.octets());
    }
    Some(out)
}

/// Until exactly `expected` (sorted `ip:port`) are the slots checked UP;
/// how long that took.
async fn wait_for_up(front: &Front, expected: &[String]) -> Duration {
    let start = Instant::now();
    loop {
        let mut up: Vec<String> = front
            .servers()
            .into_iter()
            .filter(|s| s.status == ServerStatus::Up)
            .map(|s| s.addr)
            .collect();
        up.sort();
        if up == expected {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("slots UP: {up:?}, expected {expected:?}:\n{}", front.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn compose_replicas_behind_one_dns_name_each_get_a_slot_also_after_a_scale_up() {
    let replicas = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
    // Both replicas run; DNS names one of them first (`--scale app=1`).
    let dns = Dns::start("app", replicas[..1].to_vec());
    let front = Front::replicas(&["127.0.0.2", "127.0.0.3"], |s| {
        s.app_host = "app".into();
        s.nameserver = format!("127.0.0.1:{}", dns.port);
    })
    .await;
    let port = front.app_port;
    let address = |a: &Ipv4Addr| format!("{a}:{port}");
    wait_for_up(&front, &[address(&replicas[0])]).await;

    // `--scale app=2`: the next answer has both; no reload, no new config.
    *dns.addresses.lock().unwrap() = replicas.to_vec();
    let mut both: Vec<String> = replicas.iter().map(address).collect();
    both.sort();
    let took = wait_for_up(&front, &both).await;
    // The resolver asks every second (`timeout resolve`), then the new
    // slot's checks pass (measured here: 0.9 s in all).
    assert!(
        took < Duration::from_secs(5),
        "the new replica took {took:?}"
    );

    let client = client();
    for _ in 0..40 {
        let answer = client.get(front.url("/version")).send().await.unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
    }
    // Round robin over the two: 20 each at least (the requests that
    // waited for the front to serve went to the first alone).
    let served: Vec<(String, u64)> = front
        .servers()
        .into_iter()
        .filter(|s| s.hrsp_2xx > 0)
        .map(|s| (s.addr, s.hrsp_2xx))
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served.iter().all(|(_, n)| *n >= 20), "{served:?}");
}
