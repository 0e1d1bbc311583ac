use super::*;
use crate::haproxy::Slot;

fn row(slot: u16, addr: &str, status: ServerStatus, weight: u32) -> ServerStat {
    ServerStat {
        name: format!("s{slot}"),
        slot: Some(Slot(slot)),
        addr: addr.into(),
        status,
        weight,
        user_weight: weight,
        check_status: String::new(),
        check_running: false,
        check_code: None,
        check_desc: String::new(),
        check_failures: 0,
        current_sessions: 0,
        total_sessions: 0,
        selected_total: 0,
        hrsp_2xx: 0,
        hrsp_4xx: 0,
        hrsp_5xx: 0,
        connect_errors: 0,
        response_errors: 0,
        last_change_seconds: 0,
    }
}

fn texts(commands: &[Command]) -> Vec<&str> {
    commands.iter().map(Command::as_str).collect()
}

fn set(addrs: &[&str]) -> HashSet<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

#[test]
fn weights_go_up_before_any_goes_down_and_gone_tasks_leave() {
    let rows = [
        row(1, "10.0.0.2:8080", ServerStatus::Up, 128),
        row(2, "10.0.0.3:8080", ServerStatus::Up, 0),
        row(3, "10.0.0.9:8080", ServerStatus::Down, 128),
    ];
    let weights = even_weights(&["10.0.0.3:8080".to_owned()], 1);
    let live = set(&["10.0.0.2:8080", "10.0.0.3:8080"]);
    let commands = route_commands(&rows, &weights, &live).unwrap();
    assert_eq!(
        texts(&commands),
        [
            "set weight app/s2 128",
            "set weight app/s1 0",
            "set server app/s3 state maint",
        ]
    );
}

#[test]
fn the_last_up_server_in_traffic_keeps_its_weight_until_one_that_should_serve_is_up() {
    // The new task has its slot but HAProxy has not seen it UP yet.
    let rows = [
        row(1, "10.0.0.2:8080", ServerStatus::Up, 128),
        row(2, "10.0.0.3:8080", ServerStatus::Down, 0),
    ];
    let weights = even_weights(&["10.0.0.3:8080".to_owned()], 1);
    let live = set(&["10.0.0.3:8080"]);
    let commands = route_commands(&rows, &weights, &live).unwrap();
    assert_eq!(texts(&commands), ["set weight app/s2 128"]);
}

#[test]
fn nothing_to_change_sends_nothing() {
    let rows = [row(1, "10.0.0.2:8080", ServerStatus::Up, 128)];
    let weights = even_weights(&["10.0.0.2:8080".to_owned()], 3);
    let commands = route_commands(&rows, &weights, &set(&["10.0.0.2:8080"])).unwrap();
    assert!(commands.is_empty(), "{commands:?}");
}

fn task(id: &str, slot: i64, release: &str, state: &str, desired: &str) -> TaskView {
    TaskView {
        id: id.into(),
        name: format!("svc.{slot}"),
        slot,
        release: release.into(),
        state: state.into(),
        desired: desired.into(),
        exit_code: None,
        error: None,
        addr: None,
    }
}

#[test]
fn ready_tasks_come_first_then_unreplaced_then_replaced_then_draining() {
    let all = vec![
        task("new1", 1, "r2", "running", "running"),
        task("old1", 1, "r1", "running", "running"),
        task("old2", 2, "r1", "running", "running"),
        task("old3", 3, "r1", "running", "shutdown"),
    ];
    let ready = [&all[0]];
    let order: Vec<&str> = preference(&ready, &all, "r2")
        .into_iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(order, ["new1", "old2", "old1", "old3"]);
}
