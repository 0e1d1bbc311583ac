//! The HAProxy runtime API, as pure functions: the commands the balancer
//! sends (built here, so no caller writes CLI syntax by hand), the split of a
//! `;`-joined command line's answer into one answer per command, and the
//! parsers for `show stat` and the exporter's text. Nothing here does I/O.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use anyhow::{bail, Context, Result};

use super::config::BACKEND;

/// A slot of the backend: `s1`..`sN` from the `server-template` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u16);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl Slot {
    /// `s12` -> Slot(12); anything else (another server name) -> None.
    pub fn parse(name: &str) -> Option<Slot> {
        name.strip_prefix('s')?
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .map(Slot)
    }
}

/// The administrative state `set server ... state` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes traffic as health checks allow.
    Ready,
    /// Keeps its current connections and sticky clients; no new ones.
    Drain,
    /// Out: no traffic, no health checks.
    Maint,
}

/// One runtime API command. Only the builders below make them, so a command
/// never holds `;` or a newline, which would smuggle in another command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command(String);

/// HAProxy's weight range.
pub const MAX_WEIGHT: u16 = 256;

impl Command {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Points a slot at an instance. The slot keeps its last check result
    /// (e.g. a stale `L7OK` from the previous instance) until the next check
    /// runs: only a never-checked slot shows `INI`.
    pub fn set_addr(slot: Slot, addr: IpAddr, port: u16) -> Command {
        Command(format!(
            "set server {BACKEND}/{slot} addr {addr} port {port}"
        ))
    }

    pub fn set_state(slot: Slot, state: AdminState) -> Command {
        let state = match state {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        };
        Command(format!("set server {BACKEND}/{slot} state {state}"))
    }

    /// 0 keeps the slot health-checked but sends it no new requests.
    pub fn set_weight(slot: Slot, weight: u16) -> Result<Command> {
        if weight > MAX_WEIGHT {
            bail!("weight {weight} for {slot}: HAProxy takes 0 to {MAX_WEIGHT}");
        }
        Ok(Command(format!("set weight {BACKEND}/{slot} {weight}")))
    }

    pub fn enable_health(slot: Slot) -> Command {
        Command(format!("enable health {BACKEND}/{slot}"))
    }

    pub fn disable_health(slot: Slot) -> Command {
        Command(format!("disable health {BACKEND}/{slot}"))
    }

    /// Every server of the backend (type 4 = servers, -1 = all of them).
    pub fn show_stat() -> Command {
        Command(format!("show stat {BACKEND} 4 -1"))
    }

    pub fn show_servers_state() -> Command {
        Command(format!("show servers state {BACKEND}"))
    }

    /// Any other command, checked for the characters that would split it.
    pub fn raw(text: &str) -> Result<Command> {
        if text.trim().is_empty() || text.contains([';', '\n', '\r', '\\']) {
            bail!(
                "runtime API command `{}` is empty or contains ; \\ or a newline",
                text.escape_default()
            );
        }
        Ok(Command(text.to_owned()))
    }
}

/// The one command line that runs `commands` in order.
pub fn join(commands: &[Command]) -> String {
    commands
        .iter()
        .map(Command::as_str)
        .collect::<Vec<_>>()
        .join(";")
}

/// Splits the answer to a `;`-joined line: HAProxy ends each command's
/// output with an empty line, and a command with nothing to say prints that
/// empty line only. Output with blank lines inside (none of the `set`
/// commands has any) would be split wrongly: run `show` commands alone.
pub fn split_answers(raw: &str) -> Vec<String> {
    let mut answers = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('\n') {
            answers.push(String::new());
            rest = after;
        } else if let Some(end) = rest.find("\n\n") {
            answers.push(rest[..end].to_owned());
            rest = &rest[end + 2..];
        } else {
            answers.push(rest.trim_end().to_owned());
            rest = "";
        }
    }
    answers
}

/// `set server ... addr` reports what it did; these are not failures.
fn is_informational(answer: &str) -> bool {
    let answer = answer.trim_start();
    [
        "IP changed from",
        "no need to change the addr",
        "port changed from",
    ]
    .iter()
    .any(|p| answer.starts_with(p))
}

/// Pairs each command with its answer; the first failed command (HAProxy
/// prints an error text) is an error carrying that text.
pub fn check_answers(commands: &[Command], raw: &str) -> Result<Vec<String>> {
    let answers = split_answers(raw);
    for (i, command) in commands.iter().enumerate() {
        let answer = answers.get(i).map(String::as_str).with_context(|| {
            format!(
                "HAProxy answered {} of {} commands; none for `{}` (whole answer: {raw:?})",
                answers.len(),
                commands.len(),
                command.as_str()
            )
        })?;
        if !answer.trim().is_empty() && !is_informational(answer) {
            bail!(
                "HAProxy refused `{}`: {}",
                command.as_str(),
                answer.lines().next().unwrap_or_default().trim()
            );
        }
    }
    Ok(answers)
}

/// A server's operational status as `show stat` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// Healthy, takes traffic.
    Up,
    /// `UP n/m`: still takes traffic, but failed checks are taking it down.
    GoingDown(String),
    /// `DOWN n/m`: no traffic; passing checks are bringing it up.
    GoingUp(String),
    Down,
    /// `MAINT`, `MAINT (via)`, `MAINT (resolution)`.
    Maint,
    Drain,
    NoLb,
    /// Checks disabled: HAProxy assumes it is up.
    NoCheck,
    Other(String),
}

impl ServerStatus {
    pub fn parse(text: &str) -> ServerStatus {
        match text {
            "UP" => ServerStatus::Up,
            "DOWN" => ServerStatus::Down,
            "DRAIN" => ServerStatus::Drain,
            "NOLB" => ServerStatus::NoLb,
            "no check" => ServerStatus::NoCheck,
            t if t.starts_with("MAINT") => ServerStatus::Maint,
            t if t.starts_with("DRAIN") => ServerStatus::Drain,
            t if t.starts_with("UP ") => ServerStatus::GoingDown(t[3..].to_owned()),
            t if t.starts_with("DOWN ") => ServerStatus::GoingUp(t[5..].to_owned()),
            t => ServerStatus::Other(t.to_owned()),
        }
    }

    /// Whether new requests may go to it (weight permitting).
    pub fn takes_traffic(&self) -> bool {
        matches!(
            self,
            ServerStatus::Up | ServerStatus::GoingDown(_) | ServerStatus::NoCheck
        )
    }
}

/// One server row of `show stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStat {
    pub name: String,
    pub slot: Option<Slot>,
    /// `ip:port`.
    pub addr: String,
    pub status: ServerStatus,
    /// Effective weight, and the one set by `set weight` (`uweight`).
    pub weight: u32,
    pub user_weight: u32,
    /// `L7OK`, `L7STS`, `L4CON`, `L4TOUT`, `INI` (not checked since the
    /// last address change)...; empty while checks do not run (MAINT).
    pub check_status: String,
    /// A check is under way (HAProxy prefixes the status with `* `): the
    /// status is the last finished check's, but its code may already be
    /// cleared for the new one.
    pub check_running: bool,
    /// The HTTP status of the last layer-7 check (HAProxy prints 0 for none).
    pub check_code: Option<u16>,
    pub check_desc: String,
    /// Failed checks since start.
    pub check_failures: u64,
    pub current_sessions: u64,
    pub total_sessions: u64,
    /// Times the balancing algorithm picked it.
    pub selected_total: u64,
    pub hrsp_2xx: u64,
    pub hrsp_4xx: u64,
    pub hrsp_5xx: u64,
    /// Connection errors and response errors to it.
    pub connect_errors: u64,
    pub response_errors: u64,
    /// Seconds since the status last changed.
    pub last_change_seconds: u64,
}

/// Parses `show stat` CSV (the `# pxname,svname,...` header names columns,
/// so the order may change between versions) into its server rows.
pub fn parse_show_stat(csv: &str) -> Result<Vec<ServerStat>> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .with_context(|| {
            format!("`show stat` answer without its `# pxname,...` header: {csv:?}")
        })?;
    let columns: Vec<&str> = header.split(',').collect();
    let index = |name: &str| columns.iter().position(|c| *c == name);
    for needed in ["svname", "status", "weight", "type"] {
        if index(needed).is_none() {
            bail!("`show stat` header has no `{needed}` column: {header}");
        }
    }
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let text = |name: &str| {
            index(name)
                .and_then(|i| fields.get(i))
                .copied()
                .unwrap_or("")
        };
        let number = |name: &str| text(name).parse::<u64>().unwrap_or(0);
        // type 2 = server (0 frontend, 1 backend, 3 listener).
        if text("type") != "2" {
            continue;
        }
        let name = text("svname").to_owned();
        servers.push(ServerStat {
            slot: Slot::parse(&name),
            name,
            addr: text("addr").to_owned(),
            status: ServerStatus::parse(text("status")),
            weight: number("weight") as u32,
            user_weight: number("uweight") as u32,
            check_status: text("check_status")
                .trim_start_matches('*')
                .trim()
                .to_owned(),
            check_running: text("check_status").starts_with('*'),
            check_code: text("check_code").parse().ok().filter(|code| *code != 0),
            check_desc: text("check_desc").to_owned(),
            check_failures: number("chkfail"),
            current_sessions: number("scur"),
            total_sessions: number("stot"),
            selected_total: number("lbtot"),
            hrsp_2xx: number("hrsp_2xx"),
            hrsp_4xx: number("hrsp_4xx"),
            hrsp_5xx: number("hrsp_5xx"),
            connect_errors: number("econ"),
            response_errors: number("eresp"),
            last_change_seconds: number("lastchg"),
        });
    }
    Ok(servers)
}

/// Sums an exporter metric per server of the `app` backend, over its other
/// labels (e.g. every `code` of `haproxy_server_http_responses_total`).
pub fn exporter_per_server(text: &str, metric: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    let proxy = format!("proxy=\"{BACKEND}\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == proxy) {
            continue;
        }
        let server = labels
            .split(',')
            .find_map(|l| l.strip_prefix("server=\""))
            .and_then(|s| s.strip_suffix('"'));
        if let (Some(server), Ok(value)) = (server, value.trim().parse::<f64>()) {
            *sums.entry(server.to_owned()).or_insert(0.0) += value;
        }
    }
    sums
}

#[cfg(test)]
mod tests;
