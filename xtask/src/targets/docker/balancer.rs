//! The balancer as the Docker target sees it: its container made or found,
//! its slots read as gate evidence, instances given slots, and a split made
//! into the runtime commands that set the slots' weights.
use std::{collections::BTreeMap, collections::HashMap, net::SocketAddr};

use anyhow::{Context, Result};

use super::{labels, traffic, DockerTarget, Instance, MAX_SERVERS};
use crate::{
    haproxy::{
        self, AdminState, Command, HaproxyBalancer, HaproxySettings, ServerSpec, ServerStat,
        ServerStatus,
    },
    targets::{Check, InstanceState, Split},
};

/// A slot's row in `show stat` as evidence for the gate: plain UP (HAProxy
/// checked this address since it became ready; `fall` >= 2 keeps "UP 1/2"
/// apart) is ready, DOWN is a failed check with its status and code,
/// anything else (UP 1/2 before the first check, DOWN 1/2 coming back) is
/// not ready yet. A DOWN row whose next check is under way may have lost
/// the last check's HTTP code (a fresh-clone run reported "L7STS, HTTP 0"):
/// it waits one more look rather than fail without its evidence.
pub(crate) fn check_of(row: &ServerStat) -> Check {
    match row.status {
        ServerStatus::Up => Check::Reported { ready: true },
        ServerStatus::Down if row.check_running && row.check_code.is_none() => {
            Check::Reported { ready: false }
        }
        ServerStatus::Down => Check::Failed {
            reason: format!(
                "balancer health check on {} failed: {}{}{}",
                row.addr,
                row.check_status,
                row.check_code
                    .map(|c| format!(", HTTP {c}"))
                    .unwrap_or_default(),
                if row.check_desc.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", row.check_desc)
                }
            ),
        },
        _ => Check::Reported { ready: false },
    }
}

/// The runtime commands that bring the balancer from `rows` to `split` over
/// `instances` (those with a slot), and the weight each instance gets.
/// Pure, so a caller that already read both (`route`) reads them once.
pub(super) fn shift_commands(
    split: &Split,
    rows: &[ServerStat],
    instances: &[(Instance, InstanceState)],
) -> Result<(Vec<Command>, BTreeMap<String, u16>)> {
    let mut running: BTreeMap<String, Vec<traffic::Candidate>> = BTreeMap::new();
    let mut slot_of_instance = BTreeMap::new();
    for (instance, state) in instances {
        let Some(row) = slot_of(rows, instance.addr) else {
            continue;
        };
        slot_of_instance.insert(instance.name.clone(), row);
        if *state == (InstanceState::Running { restarts: 0 }) {
            running
                .entry(instance.release.clone())
                .or_default()
                .push(traffic::Candidate {
                    instance: instance.name.clone(),
                    serving: row.user_weight > 0,
                });
        }
    }
    let weights = traffic::weights(split, &running)?;
    // HAProxy runs the commands of one exec in order and may serve
    // requests between two of them: raise weights before lowering any,
    // so there is never a moment with no server in traffic.
    let (mut raise, mut lower) = (Vec::new(), Vec::new());
    for (name, row) in &slot_of_instance {
        let slot = row.slot.expect("slot_of finds slots only");
        let weight = weights.get(name).copied().unwrap_or(0);
        match u32::from(weight).cmp(&row.user_weight) {
            std::cmp::Ordering::Greater => raise.push(Command::set_weight(slot, weight)?),
            std::cmp::Ordering::Less => lower.push(Command::set_weight(slot, weight)?),
            std::cmp::Ordering::Equal => {}
        }
    }
    let mut commands = raise;
    commands.append(&mut lower);
    // A slot whose instance is gone (removed by hand, crashed away) leaves.
    let known: Vec<&str> = slot_of_instance.values().map(|r| r.name.as_str()).collect();
    for row in rows.iter().filter(|r| r.status != ServerStatus::Maint) {
        if let Some(slot) = row.slot.filter(|_| !known.contains(&row.name.as_str())) {
            commands.push(Command::set_state(slot, AdminState::Maint));
        }
    }
    Ok((commands, weights))
}

/// Whether HAProxy has yet to decide on one of `ours` that runs and has a
/// slot: its row is neither plain UP nor a DOWN with its evidence (UP 1/2
/// before the first check, DOWN 1/2 coming back, a check under way).
pub(super) fn undecided(ours: &[(Instance, InstanceState)], rows: &[ServerStat]) -> bool {
    ours.iter().any(|(instance, state)| {
        *state == (InstanceState::Running { restarts: 0 })
            && slot_of(rows, instance.addr)
                .is_some_and(|row| matches!(check_of(row), Check::Reported { ready: false }))
    })
}

/// The slot serving `addr`: not in MAINT (a free slot keeps its last address).
pub(crate) fn slot_of(rows: &[ServerStat], addr: Option<SocketAddr>) -> Option<&ServerStat> {
    let addr = addr?.to_string();
    rows.iter()
        .find(|r| r.slot.is_some() && r.status != ServerStatus::Maint && r.addr == addr)
}

impl DockerTarget {
    pub(super) fn haproxy_settings(&self) -> HaproxySettings {
        let h = &self.health;
        HaproxySettings {
            https_public_port: self.balancer_config.https_port,
            api_rate: self.balancer_config.api_rate,
            max_servers: MAX_SERVERS,
            health_path: h.path.clone(),
            check_interval_ms: h.interval_ms.clamp(100, u64::from(u32::MAX)) as u32,
            check_rise: h.success_threshold.max(1),
            // "UP 1/2" (no check yet) and plain "UP" differ only with fall >= 2.
            check_fall: h.failure_threshold.max(2),
            ..HaproxySettings::default()
        }
    }

    /// The balancer container, created or started as needed (never built:
    /// the image comes from `engine start`).
    pub(crate) async fn ensure_balancer(&self) -> Result<HaproxyBalancer> {
        let image = haproxy::image::find(&self.docker).await?;
        let settings = haproxy::Settings {
            scope: self.scope.clone(),
            image,
            network: self.network.clone(),
            create_network: !self.on_swarm_node,
            https_port: self.balancer_config.https_port,
            http_port: self.balancer_config.http_port,
            exporter_port: self.balancer_config.metrics_port.unwrap_or(0),
            publish_address: self.balancer_config.publish_address(),
            haproxy: self.haproxy_settings(),
            pem: self.pem()?,
            labels: HashMap::from([
                (labels::APP.to_owned(), self.app.clone()),
                (labels::ENV.to_owned(), self.env_name.clone()),
            ]),
        };
        HaproxyBalancer::ensure_with(&self.docker, &settings, Some(self.session.clone()))
            .await
            .map_err(|e| self.port_taken(e))
    }

    /// A publish that failed because another process holds the port, said
    /// as such (the engine's own words are a driver error deep in the chain).
    fn port_taken(&self, error: anyhow::Error) -> anyhow::Error {
        let text = format!("{error:#}");
        if !(text.contains("port is already allocated") || text.contains("address already in use"))
        {
            return error;
        }
        let b = &self.balancer_config;
        error.context(format!(
            "balancer.https_port = {} or balancer.http_port = {} on {} is in use by another process: free it, or give environment {} other ports",
            b.https_port,
            b.http_port,
            b.publish_address(),
            self.env_name
        ))
    }

    /// A handle on the scope's balancer (which must exist), on this target's session.
    pub(crate) async fn open_balancer(&self) -> Result<HaproxyBalancer> {
        Ok(HaproxyBalancer::open(&self.docker, &self.scope)
            .await?
            .with_session(self.session.clone()))
    }

    /// The running balancer, if there is one.
    pub(crate) async fn balancer(&self) -> Option<HaproxyBalancer> {
        HaproxyBalancer::running(&self.docker, &self.scope)
            .await
            .map(|b| b.with_session(self.session.clone()))
    }

    /// Every slot as `show stat` reports it; none without a running balancer.
    pub(crate) async fn slots(&self) -> Result<Vec<ServerStat>> {
        match self.balancer().await {
            Some(balancer) => balancer.servers().await,
            None => Ok(Vec::new()),
        }
    }

    /// Gives every running instance of `release` without a slot a free one,
    /// at weight 0 and `ready`, all in one exec: HAProxy starts checking it
    /// and the gate waits for plain UP before any weight is given.
    pub(super) async fn attach(&self, release: &str) -> Result<()> {
        // Only addresses are needed: the container list has them (an
        // instance that is not running has none), no inspect.
        let wanted = self
            .containers()
            .await?
            .into_iter()
            .filter(|i| i.release == release)
            .filter_map(|i| Some((i.name, i.addr?)))
            .collect();
        self.attach_addrs(wanted).await
    }

    /// A free slot at weight 0 and `ready` for each `(name, address)` that has
    /// none yet, in one batch. The swarm target's tasks come in here too.
    pub(crate) async fn attach_addrs(&self, wanted: Vec<(String, SocketAddr)>) -> Result<()> {
        let balancer = self.open_balancer().await?;
        let rows = balancer.servers().await?;
        let mut free = rows
            .iter()
            .filter(|r| r.status == ServerStatus::Maint)
            .filter_map(|r| r.slot)
            .collect::<Vec<_>>();
        free.sort();
        free.reverse();
        let mut specs = Vec::new();
        for (name, addr) in wanted {
            if slot_of(&rows, Some(addr)).is_some() {
                continue;
            }
            let slot = free.pop().with_context(|| {
                format!("the balancer has no free slot left (of {MAX_SERVERS}) for {name}")
            })?;
            specs.push(ServerSpec {
                slot,
                addr: addr.ip(),
                port: addr.port(),
                weight: 0,
                state: AdminState::Ready,
            });
        }
        if specs.is_empty() {
            return Ok(());
        }
        balancer.set_servers(&specs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::Slot;

    fn row(status: ServerStatus, check_status: &str, code: Option<u16>) -> ServerStat {
        ServerStat {
            name: "s1".into(),
            slot: Some(Slot(1)),
            addr: "172.20.0.3:9000".into(),
            status,
            weight: 0,
            user_weight: 0,
            check_status: check_status.into(),
            check_running: false,
            check_code: code,
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

    #[test]
    fn only_plain_up_is_ready_and_down_is_a_failure_with_its_evidence() {
        let ready = |c: Check| matches!(c, Check::Reported { ready: true });
        assert!(ready(check_of(&row(ServerStatus::Up, "L7OK", Some(200)))));
        // Right after maint -> ready, before any check, with a stale L7OK.
        let fresh = row(ServerStatus::GoingDown("1/2".into()), "L7OK", Some(200));
        assert!(!ready(check_of(&fresh)));
        let coming_back = row(ServerStatus::GoingUp("1/2".into()), "L7OK", Some(200));
        assert!(!ready(check_of(&coming_back)));
        match check_of(&row(ServerStatus::Down, "L7STS", Some(503))) {
            Check::Failed { reason } => {
                assert!(reason.contains("L7STS, HTTP 503"), "{reason}");
                assert!(reason.contains("172.20.0.3:9000"), "{reason}");
            }
            other => panic!("DOWN must be a failure, got {other:?}"),
        }
        // The next check under way cleared the code: wait for its evidence.
        let running = ServerStat {
            check_running: true,
            ..row(ServerStatus::Down, "L7STS", None)
        };
        assert!(matches!(
            check_of(&running),
            Check::Reported { ready: false }
        ));
    }

    #[test]
    fn only_a_row_haproxy_has_not_decided_on_is_worth_waiting_for() {
        let instance = Instance {
            id: "c1".into(),
            name: "i1".into(),
            release: "r1".into(),
            color: String::new(),
            addr: Some("172.20.0.3:9000".parse().unwrap()),
        };
        let running = [(instance.clone(), InstanceState::Running { restarts: 0 })];
        let fresh = row(ServerStatus::GoingDown("1/2".into()), "L7OK", Some(200));
        assert!(undecided(&running, std::slice::from_ref(&fresh)));
        let coming_back = row(ServerStatus::GoingUp("1/2".into()), "L7OK", Some(200));
        assert!(undecided(&running, &[coming_back]));
        assert!(!undecided(
            &running,
            &[row(ServerStatus::Up, "L7OK", Some(200))]
        ));
        assert!(!undecided(
            &running,
            &[row(ServerStatus::Down, "L7STS", Some(503))]
        ));
        // No slot, or an instance that exited: polling the stats changes nothing.
        assert!(!undecided(&running, &[]));
        let exited = [(instance, InstanceState::Exited { code: 1 })];
        assert!(!undecided(&exited, &[fresh]));
    }

    #[test]
    fn a_free_slot_keeps_its_last_address_but_serves_no_instance() {
        let addr: SocketAddr = "172.20.0.3:9000".parse().unwrap();
        let rows = [row(ServerStatus::Maint, "", None)];
        assert!(slot_of(&rows, Some(addr)).is_none());
        let rows = [row(ServerStatus::Up, "L7OK", Some(200))];
        assert_eq!(
            slot_of(&rows, Some(addr)).map(|r| r.name.as_str()),
            Some("s1")
        );
        assert!(slot_of(&rows, None).is_none());
    }
}
