//! Runs the network commands `plan` builds, and finds and removes the lab's
//! namespaces and links by name.
use anyhow::{bail, Context, Result};

use super::{
    plan::{self, Cmd},
    processes::run,
};

fn read(program: &str, args: &[&str]) -> Result<String> {
    duct::cmd(program, args)
        .stderr_null()
        .read()
        .with_context(|| format!("running `{program} {}`", args.join(" ")))
}

/// Every IPv4 route (all tables) and address on the machine, for the subnet choice.
pub fn routes_and_addresses() -> Result<String> {
    Ok(format!(
        "{}\n{}",
        read("ip", &["-4", "route", "show", "table", "all"])?,
        read("ip", &["-4", "-o", "addr", "show"])?
    ))
}

/// Network namespaces by name (`ip netns list` prints `name (id: N)`).
pub fn namespaces() -> Result<Vec<String>> {
    Ok(read("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Link names in the machine's namespace (`ip -o link` prints `N: name@peer: ...`).
pub fn links() -> Result<Vec<String>> {
    Ok(read("ip", &["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect())
}

pub fn lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    Ok(namespaces()?
        .into_iter()
        .filter(|n| plan::is_lab_name(prefix, n))
        .collect())
}

pub fn lab_links(prefix: &str) -> Result<Vec<String>> {
    Ok(links()?
        .into_iter()
        .filter(|n| plan::is_lab_name(prefix, n))
        .collect())
}

/// The IPv4 address on the lab's bridge, if the bridge is there: what a
/// lost state file no longer says (the registry's certs.d entry is named by it).
pub fn bridge_address(prefix: &str) -> Option<std::net::Ipv4Addr> {
    let text = read(
        "ip",
        &[
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            &plan::bridge_name(prefix),
        ],
    )
    .ok()?;
    plan::routed_networks(&text).first().map(|(addr, _)| *addr)
}

/// Routes inside a namespace, to prove a lab host has no default route.
pub fn routes_in(netns: &str) -> Result<String> {
    read("ip", &["-n", netns, "-4", "route", "show", "table", "all"])
}

/// Removes the lab's links and namespaces found by name: the veths first
/// (deleting one end takes its peer), then the bridge and the namespaces.
/// The kernel frees a namespace's links asynchronously, so a link that
/// vanished meanwhile is not an error, and the check at the end waits a moment.
pub fn remove_all(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for link in lab_links(prefix)? {
        let output = duct::cmd!("ip", "link", "del", &link)
            .stderr_capture()
            .unchecked()
            .run()
            .with_context(|| format!("running `ip link del {link}`"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            removed.push(format!("link {link}"));
        } else if !stderr.contains("Cannot find device") {
            bail!("`ip link del {link}` failed: {}", stderr.trim());
        }
    }
    for netns in lab_namespaces(prefix)? {
        run(&Cmd::new("ip", &["netns", "del", &netns]))?;
        removed.push(format!("netns {netns}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (netns_left, links_left) = (lab_namespaces(prefix)?, lab_links(prefix)?);
        if netns_left.is_empty() && links_left.is_empty() {
            return Ok(removed);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "still present 5s after removal: namespaces {netns_left:?}, links {links_left:?}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
