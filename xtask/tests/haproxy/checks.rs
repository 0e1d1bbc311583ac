//! What health checks report, and what `state ready` does before any check:
//! the facts a deploy gate is built on.
use std::time::Duration;

use xtask::haproxy::{runtime, AdminState, Command, ServerStatus, Slot};

use super::{client, spec, Stack};

#[tokio::test]
async fn a_server_whose_ready_answers_503_is_down_with_its_check_status() {
    let stack = Stack::start("unready", |_, _| {}).await;
    // A required database nobody serves: /health 200, /ready 503 for ever.
    let (_app, address) = stack
        .app(&["DATABASE_URL=postgres://app:secret@127.0.0.1:1/app"])
        .await;
    stack
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    stack
        .wait_for(Slot(1), "DOWN", |s| s.status == ServerStatus::Down)
        .await;
    let server = stack.server(Slot(1)).await;
    assert_eq!(server.check_status, "L7STS", "{server:#?}");
    assert_eq!(server.check_code, Some(503));
    assert!(server.check_failures >= 1);
    let answer = client().get(stack.url("/version")).send().await.unwrap();
    assert_eq!(answer.status(), 503, "no server can take it");
}

/// The experiment behind the doc comment of `xtask::haproxy`.
#[tokio::test]
async fn ready_after_maint_is_up_at_once_before_any_check() {
    let stack = Stack::start("maint-ready", |s, _| s.check_interval_ms = 2000).await;
    let (_app, address) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    stack
        .wait_for(Slot(1), "UP", |s| s.status == ServerStatus::Up)
        .await;

    // A healthy server back from maint, read in the same command line.
    let at_ready = state_right_after(
        &stack,
        &[
            Command::set_state(Slot(1), AdminState::Maint),
            Command::set_state(Slot(1), AdminState::Ready),
        ],
    )
    .await;
    println!(
        "healthy, maint -> ready: {:?} {}",
        at_ready.status, at_ready.check_status
    );
    assert!(at_ready.status.takes_traffic(), "{at_ready:#?}");

    // The slot pointed at an address nothing listens on, then ready: still
    // UP (one failure from DOWN) with the old instance's stale L7OK, until
    // its first check: the slot's check timer keeps ticking during MAINT, so
    // that comes at its next tick, anywhere within `inter`.
    let at_ready = state_right_after(
        &stack,
        &[
            Command::set_state(Slot(1), AdminState::Maint),
            Command::set_addr(Slot(1), address, 1),
            Command::set_state(Slot(1), AdminState::Ready),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    println!(
        "dead address, maint -> ready: {:?} {}",
        at_ready.status, at_ready.check_status
    );
    assert_eq!(
        at_ready.status,
        ServerStatus::GoingDown("1/2".into()),
        "{at_ready:#?}"
    );
    assert!(at_ready.status.takes_traffic());
    assert_eq!(
        at_ready.check_status, "L7OK",
        "set addr keeps the last result"
    );
    stack
        .wait_for(Slot(1), "DOWN", |s| s.status == ServerStatus::Down)
        .await;
    println!("DOWN after {:?} (inter 2000 ms, fall 2)", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "one failed check is enough"
    );

    // Back to the live port: one passed check makes it plain UP.
    let at_ready = state_right_after(
        &stack,
        &[
            Command::set_state(Slot(1), AdminState::Maint),
            Command::set_addr(Slot(1), address, 8080),
            Command::set_state(Slot(1), AdminState::Ready),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        at_ready.status,
        ServerStatus::GoingDown("1/2".into()),
        "{at_ready:#?}"
    );
    assert_eq!(
        at_ready.check_status, "L4CON",
        "the dead port's result, stale"
    );
    stack
        .wait_for(Slot(1), "UP", |s| s.status == ServerStatus::Up)
        .await;
    println!("plain UP after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "one passed check is enough"
    );
}

/// Runs `commands` and `show stat` in one command line: the state at the
/// very moment the last command took effect, before any check could run.
async fn state_right_after(stack: &Stack, commands: &[Command]) -> runtime::ServerStat {
    let mut line = runtime::join(commands);
    line.push(';');
    line.push_str(Command::show_stat().as_str());
    let raw = stack.balancer.exec_raw(&line).await.unwrap();
    let answers = runtime::split_answers(&raw);
    runtime::check_answers(commands, &raw).unwrap();
    let csv = answers.last().unwrap();
    runtime::parse_show_stat(csv)
        .unwrap()
        .into_iter()
        .find(|s| s.slot == Some(Slot(1)))
        .unwrap()
}
