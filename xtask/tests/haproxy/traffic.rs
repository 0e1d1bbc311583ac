//! Traffic moved by the runtime API only: weights, states, addresses, under
//! keep-alive load, without a reload and without a failed request.
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use xtask::{
    haproxy::{AdminState, Command, ServerStatus, Slot},
    load::Load,
};

use super::{client, spec, support, Stack};

/// Sends `count` requests, 8 at a time; all must be 200.
async fn send(stack: &Stack, count: usize) {
    let client = client();
    let url = stack.url("/version");
    let failed: Vec<String> = stream::iter(0..count)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(url).send().await.map(|r| r.status()) }
        })
        .buffer_unordered(8)
        .filter_map(|r| async move {
            match r {
                Ok(s) if s.is_success() => None,
                other => Some(format!("{other:?}")),
            }
        })
        .collect()
        .await;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

#[tokio::test]
async fn a_server_at_weight_zero_is_checked_but_gets_no_traffic_until_weighted() {
    let _serial = support::SERIAL.lock().await;
    let stack = Stack::start("weight0", |s, _| s.api_rate = 100_000).await;
    let (_a, a) = stack.app(&[]).await;
    let (_b, b) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[
            spec(1, a, 1, AdminState::Ready),
            spec(2, b, 0, AdminState::Ready),
        ])
        .await
        .unwrap();
    // Fully UP means `rise` checks passed on the new address.
    stack
        .wait_for(Slot(2), "UP after passing checks", |s| {
            s.status == ServerStatus::Up && s.check_status == "L7OK" && s.check_code == Some(200)
        })
        .await;
    send(&stack, 60).await;
    let idle = stack.server(Slot(2)).await;
    assert_eq!((idle.weight, idle.total_sessions), (0, 0), "{idle:#?}");
    assert_eq!(stack.server(Slot(1)).await.hrsp_2xx, 60);

    stack
        .balancer
        .exec(&[Command::set_weight(Slot(2), 1).unwrap()])
        .await
        .unwrap();
    send(&stack, 60).await;
    let weighted = stack.server(Slot(2)).await;
    assert!((25..=35).contains(&weighted.hrsp_2xx), "{weighted:#?}");
}

#[tokio::test]
async fn weights_one_to_nine_send_a_tenth_of_the_requests_to_the_canary() {
    let _serial = support::SERIAL.lock().await;
    let stack = Stack::start("weights", |s, _| s.api_rate = 100_000).await;
    let (_a, a) = stack.app(&[]).await;
    let (_b, b) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[
            spec(1, a, 1, AdminState::Ready),
            spec(2, b, 9, AdminState::Ready),
        ])
        .await
        .unwrap();
    for slot in [Slot(1), Slot(2)] {
        stack
            .wait_for(slot, "UP", |s| s.status == ServerStatus::Up)
            .await;
    }
    let before = stack.responses().await;
    send(&stack, 1000).await;
    let after = stack.responses().await;
    let delta =
        |server: &str| after.get(server).unwrap_or(&0.0) - before.get(server).unwrap_or(&0.0);
    let (canary, stable) = (delta("s1"), delta("s2"));
    let share = canary / (canary + stable);
    println!(
        "weights 1:9 -> s1 {canary} s2 {stable} ({:.1}% to the canary)",
        share * 100.0
    );
    assert_eq!(canary + stable, 1000.0, "the exporter counts every request");
    assert!((0.08..=0.12).contains(&share), "canary share {share}");
}

#[tokio::test]
async fn servers_switch_back_and_forth_under_keep_alive_load_without_a_failure_or_reload() {
    let _serial = support::SERIAL.lock().await;
    let stack = Stack::start("switch", |s, _| s.api_rate = 1_000_000).await;
    let (_a, a) = stack.app(&[]).await;
    let (_b, b) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[spec(1, a, 1, AdminState::Ready)])
        .await
        .unwrap();
    stack
        .wait_for(Slot(1), "UP", |s| s.status == ServerStatus::Up)
        .await;

    // One exec round trip, as the deploy will pay it per switch.
    let mut round_trips = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        stack
            .balancer
            .exec(&[Command::set_weight(Slot(1), 1).unwrap()])
            .await
            .unwrap();
        round_trips.push(started.elapsed());
    }
    round_trips.sort();
    println!(
        "exec round trip: min {:?} median {:?} max {:?}",
        round_trips[0], round_trips[10], round_trips[19]
    );
    let info_before = stack.balancer.exec_raw("show info").await.unwrap();

    let load = Load::start(client(), stack.url("/version"), 16);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut on, mut off) = ((Slot(1), a), (Slot(2), b));
    let mut switch_times = Vec::new();
    for _ in 0..10 {
        // New slot in with its weight, old slot drained: one exec.
        let mut commands = spec(off.0 .0, off.1, 1, AdminState::Ready)
            .commands()
            .unwrap();
        commands.push(Command::set_state(on.0, AdminState::Drain));
        let started = Instant::now();
        stack.balancer.exec(&commands).await.unwrap();
        switch_times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack
            .balancer
            .exec(&[Command::set_state(on.0, AdminState::Maint)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::mem::swap(&mut on, &mut off);
    }
    let report = load.stop().await;
    let servers = stack.balancer.servers().await.unwrap();
    let served: Vec<(String, u64)> = servers
        .iter()
        .take(2)
        .map(|s| (s.name.clone(), s.hrsp_2xx))
        .collect();
    println!(
        "10 switches under 16 keep-alive connections: {} ok, {} failed, per slot {served:?}, switch execs {:?}",
        report.ok, report.failed, switch_times
    );
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(
        report.ok > 500,
        "too little load to prove anything: {}",
        report.ok
    );
    assert!(served.iter().all(|(_, n)| *n > 100), "{served:?}");
    // Same process, never restarted or reloaded.
    let pid = |info: &str| {
        info.lines()
            .find(|l| l.starts_with("Pid:"))
            .map(str::to_owned)
    };
    let info_after = stack.balancer.exec_raw("show info").await.unwrap();
    assert_eq!(pid(&info_before), pid(&info_after));
    assert!(pid(&info_after).is_some(), "{info_after}");
}
