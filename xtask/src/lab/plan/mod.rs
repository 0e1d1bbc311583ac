//! Pure parts of the lab: names and the subnet choice (here), every command
//! line (`commands.rs`) and config file (`files.rs`) as data. `up` and
//! `down` run what these build; the unit tests check them without root or
//! a network.
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

mod commands;
mod files;
pub use commands::*;
pub use files::*;

/// Where the lab's /24 may come from: private ranges docker and the
/// project's engine (172.17/16, 172.30.x) do not use by default. The first
/// one nothing on the machine routes is taken.
pub const SUBNET_CANDIDATES: &[[u8; 3]] = &[
    [10, 231, 0],
    [10, 231, 1],
    [10, 231, 2],
    [10, 231, 3],
    [10, 232, 0],
    [10, 232, 1],
    [192, 168, 231],
    [192, 168, 232],
    [172, 29, 231],
    [172, 29, 232],
];

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// A lab's names all start with its prefix, so `down` can find what a failed
/// `up` made even without its state file, and two labs never share a name.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 8
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok {
        bail!("lab prefix `{prefix}`: use 1-8 lowercase letters or digits, starting with a letter (interface names are at most 15 bytes)");
    }
    Ok(())
}

pub fn bridge_name(prefix: &str) -> String {
    format!("{prefix}0")
}

/// Host `i` (1-based) is `h<i>`; its namespace and the bridge side of its
/// veth share one name, `<prefix>-h<i>`.
pub fn host_name(i: usize) -> String {
    format!("h{i}")
}

pub fn netns_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{}", host_name(i))
}

pub fn veth_name(prefix: &str, i: usize) -> String {
    let name = netns_name(prefix, i);
    debug_assert!(name.len() <= IFNAME_MAX);
    name
}

/// Is `name` (a netns or link) one a lab with `prefix` makes?
pub fn is_lab_name(prefix: &str, name: &str) -> bool {
    name == bridge_name(prefix)
        || name
            .strip_prefix(&format!("{prefix}-h"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The machine's side of the bridge is .1; host `i` is .(10+i).
pub fn bridge_address(net: [u8; 3]) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], 1)
}

pub fn host_address(net: [u8; 3], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], 10 + i as u8)
}

pub const MAX_HOSTS: usize = 9;

/// Each lab dockerd's own docker0 sits inside its namespace, so it cannot
/// clash with the machine's; still a distinct /24 per host keeps container
/// addresses telling which host they are on.
pub fn docker_bip(i: usize) -> String {
    format!("172.31.{}.1/24", 200 + i)
}

/// IPv4 networks (`a.b.c.d/len`) in `ip -4 route show table all` and
/// `ip -4 addr` output; `default` routes are ignored (they contain every
/// address, and lab hosts never use them).
pub fn routed_networks(ip_output: &str) -> Vec<(Ipv4Addr, u8)> {
    ip_output
        .split_whitespace()
        .filter_map(|word| {
            let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
            let addr: Ipv4Addr = addr.parse().ok()?;
            let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
            Some((addr, len))
        })
        .filter(|(_, len)| *len > 0)
        .collect()
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1) as u32;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(a.0) & mask) == (u32::from(b.0) & mask)
}

/// The first candidate /24 that overlaps nothing in `ip_output`.
pub fn choose_subnet(ip_output: &str) -> Result<[u8; 3]> {
    let taken = routed_networks(ip_output);
    SUBNET_CANDIDATES
        .iter()
        .copied()
        .find(|net| {
            let candidate = (Ipv4Addr::new(net[0], net[1], net[2], 0), 24);
            !taken.iter().any(|t| overlaps(*t, candidate))
        })
        .with_context(|| {
            format!(
                "no free /24 for the lab bridge: every candidate ({}) overlaps a route or address on this machine",
                SUBNET_CANDIDATES
                    .iter()
                    .map(|n| format!("{}.{}.{}.0/24", n[0], n[1], n[2]))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// One command as program + arguments: what runs, shown in errors as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str]) -> Self {
        Cmd {
            program: program.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
    pub fn display(&self) -> String {
        format!("{} {}", self.program, self.args.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_OUTPUT: &str = "default via 192.0.2.1 dev eth0\n\
        172.17.0.0/16 dev docker_gwbridge proto kernel scope link src 172.17.0.1\n\
        10.231.0.0/24 dev xlab0 proto kernel scope link src 10.231.0.1\n\
        2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n";

    #[test]
    fn the_subnet_skips_what_is_routed_and_ignores_the_default_route() {
        assert_eq!(choose_subnet(IP_OUTPUT).unwrap(), [10, 231, 1]);
        assert_eq!(
            choose_subnet("default via 10.0.0.1 dev eth0\n").unwrap(),
            [10, 231, 0]
        );
        // A wide route covers every 10.x candidate.
        assert_eq!(
            choose_subnet("10.0.0.0/8 dev x\n192.168.0.0/16 dev y\n").unwrap(),
            [172, 29, 231]
        );
        let everything = "10.0.0.0/8 dev a\n192.168.0.0/16 dev b\n172.16.0.0/12 dev c\n";
        assert!(choose_subnet(everything)
            .unwrap_err()
            .to_string()
            .contains("no free /24"));
    }

    #[test]
    fn names_fit_interfaces_and_are_recognised_by_prefix() {
        check_prefix("xlab").unwrap();
        assert!(check_prefix("Xlab").is_err());
        assert!(check_prefix("waytoolong").is_err());
        assert_eq!(netns_name("xlab", 3), "xlab-h3");
        assert!(veth_name("abcdefgh", MAX_HOSTS).len() <= IFNAME_MAX);
        assert!(is_lab_name("xlab", "xlab0"));
        assert!(is_lab_name("xlab", "xlab-h12"));
        assert!(!is_lab_name("xlab", "xlab-h"));
        assert!(!is_lab_name("xlab", "xlabt-h1"));
        assert!(!is_lab_name("xlab", "eth0"));
        assert_eq!(host_address([10, 231, 0], 2).to_string(), "10.231.0.12");
        assert_eq!(bridge_address([10, 231, 0]).to_string(), "10.231.0.1");
    }

    #[test]
    fn a_small_disk_is_a_tmpfs_of_the_size_asked() {
        let cmd = small_disk_command(std::path::Path::new("/l/h2/data"), 256);
        assert_eq!(
            cmd.display(),
            "mount -t tmpfs -o size=256m,mode=0711 tmpfs /l/h2/data"
        );
    }
}
