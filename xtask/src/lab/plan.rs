//! Pure parts of the lab: names, the subnet choice, and every command line
//! and config file as data. `up`/`down` run what these build; the unit
//! tests below check them without root or a network.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};

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

/// The bridge, with the machine's address on it.
pub fn bridge_commands(bridge: &str, address: Ipv4Addr) -> Vec<Cmd> {
    vec![
        Cmd::new("ip", &["link", "add", "name", bridge, "type", "bridge"]),
        Cmd::new(
            "ip",
            &["addr", "add", &format!("{address}/24"), "dev", bridge],
        ),
        Cmd::new("ip", &["link", "set", bridge, "up"]),
    ]
}

/// One host's namespace: a veth into the bridge, `eth0` addressed, `lo` up,
/// and deliberately no route beyond the lab's /24.
pub fn host_net_commands(netns: &str, veth: &str, bridge: &str, address: Ipv4Addr) -> Vec<Cmd> {
    vec![
        Cmd::new("ip", &["netns", "add", netns]),
        Cmd::new(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ],
        ),
        Cmd::new("ip", &["link", "set", veth, "master", bridge, "up"]),
        Cmd::new(
            "ip",
            &[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ],
        ),
        Cmd::new("ip", &["-n", netns, "link", "set", "eth0", "up"]),
        Cmd::new("ip", &["-n", netns, "link", "set", "lo", "up"]),
    ]
}

/// What one lab dockerd is given; all paths under the host's folder.
pub struct DockerdPaths<'a> {
    pub socket: &'a Path,
    pub data: &'a Path,
    pub exec: &'a Path,
    pub pidfile: &'a Path,
}

/// dockerd in its own UTS namespace (so `docker info` and swarm nodes name
/// it `h<i>`, not the machine's hostname) joined to the host's network
/// namespace. `nsenter --net`, never `ip netns exec`: that remounts /sys and
/// dockerd dies with "Devices cgroup isn't mounted". unshare, sh and nsenter
/// all exec, so the pid we spawn is dockerd's.
pub fn dockerd_command(netns: &str, hostname: &str, paths: &DockerdPaths, bip: &str) -> Cmd {
    let netns_path = format!("--net=/var/run/netns/{netns}");
    let host = format!("unix://{}", paths.socket.display());
    Cmd::new(
        "unshare",
        &[
            "--uts",
            "--",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$@\"",
            hostname,
            "nsenter",
            &netns_path,
            "--",
            "dockerd",
            "--host",
            &host,
            "--data-root",
            &paths.data.to_string_lossy(),
            "--exec-root",
            &paths.exec.to_string_lossy(),
            "--pidfile",
            &paths.pidfile.to_string_lossy(),
            "--bip",
            bip,
            // The namespace's own docker0 (named as usual: link names are
            // per namespace). No NAT and no firewall rules: nothing in a
            // lab host may leave the machine, and published ports go
            // through docker-proxy, which needs neither.
            "--iptables=false",
            "--ip-masq=false",
            // Lab hosts are disposable: `down` should not wait dockerd's
            // default 15 s for containers that ignore SIGTERM.
            "--shutdown-timeout=2",
        ],
    )
}

/// sshd in the host's network namespace and dockerd's UTS namespace (the
/// same hostname), in the foreground (-D) so the pid we spawn is sshd's.
pub fn sshd_command(netns: &str, dockerd_pid: u32, config: &Path) -> Cmd {
    Cmd::new(
        "nsenter",
        &[
            &format!("--net=/var/run/netns/{netns}"),
            &format!("--uts=/proc/{dockerd_pid}/ns/uts"),
            "--",
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            &config.to_string_lossy(),
        ],
    )
}

/// sshd's config: key login as root only, on the lab address only; a
/// session's `docker` (and bollard's `docker system dial-stdio`) talks to
/// this host's dockerd through DOCKER_HOST.
pub fn sshd_config(
    address: Ipv4Addr,
    host_key: &Path,
    authorized_keys: &Path,
    pidfile: &Path,
    docker_socket: &Path,
) -> String {
    format!(
        "# Written by `cargo xtask lab up`; removed by `lab down`.\n\
         ListenAddress {address}:22\n\
         HostKey {}\n\
         PidFile {}\n\
         AuthorizedKeysFile {}\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         # The key files live in the checkout, whose folders sshd's ownership checks would refuse.\n\
         StrictModes no\n\
         SetEnv DOCKER_HOST=unix://{}\n",
        host_key.display(),
        pidfile.display(),
        authorized_keys.display(),
        docker_socket.display()
    )
}

/// The project's ssh client config: every lab host by name (`h1`) and by
/// address, root with the lab key, host keys checked against the lab's
/// own known_hosts. Used through `ssh -F` (see `ssh_wrapper`).
pub fn ssh_client_config(hosts: &[(String, Ipv4Addr)], key: &Path, known_hosts: &Path) -> String {
    let mut text = String::from("# Written by `cargo xtask lab up`; removed by `lab down`.\n");
    for (name, address) in hosts {
        text.push_str(&format!(
            "Host {name} {address}\n  HostName {address}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n",
            key.display(),
            known_hosts.display()
        ));
    }
    text
}

/// known_hosts lines: each host's address with its generated host key.
pub fn known_hosts(hosts: &[(Ipv4Addr, String)]) -> String {
    hosts
        .iter()
        .map(|(address, public_key)| {
            let mut fields = public_key.split_whitespace();
            let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            format!("{address} {kind} {key}\n")
        })
        .collect()
}

/// An `ssh` first on PATH that runs the system client with the lab's config.
/// docker's ssh helper and bollard's `ssh` feature both run plain `ssh` from
/// PATH and read only ~/.ssh/config, which OpenSSH finds through the passwd
/// entry (not $HOME), so a wrapper is the one way that touches no user file.
pub fn ssh_wrapper(config: &Path) -> String {
    format!(
        "#!/bin/sh\n# Written by `cargo xtask lab up`: the system ssh with the lab's client config.\nexec /usr/bin/ssh -F '{}' \"$@\"\n",
        config.display()
    )
}

/// A passphrase-less ed25519 key pair at `path` and `path.pub`.
pub fn keygen_command(path: &Path, comment: &str) -> Cmd {
    Cmd::new(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path.to_string_lossy(),
        ],
    )
}

/// The lab registry: TLS with the lab's CA, htpasswd auth, on the bridge
/// address only.
pub fn registry_config(
    address: &str,
    storage: &Path,
    htpasswd: &Path,
    cert: &Path,
    key: &Path,
    secret: &str,
) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n  secret: {secret}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: xtask-lab-registry\n    path: {}\n",
        storage.display(),
        cert.display(),
        key.display(),
        htpasswd.display()
    )
}

/// Docker (every engine on the machine, the lab's and the project's) trusts
/// a registry's CA from `/etc/docker/certs.d/<host:port>/ca.crt`, read at
/// each pull and push: no daemon restart, no --insecure-registry.
pub fn certs_d_dir(registry_address: &str) -> std::path::PathBuf {
    Path::new("/etc/docker/certs.d").join(registry_address)
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
    fn a_host_gets_no_default_route_and_dockerd_enters_by_nsenter() {
        let cmds = host_net_commands("xlab-h1", "xlab-h1", "xlab0", host_address([10, 1, 2], 1));
        let all: Vec<String> = cmds.iter().map(Cmd::display).collect();
        assert!(all.iter().all(|c| !c.contains("route")), "{all:?}");
        assert!(all.contains(&"ip -n xlab-h1 addr add 10.1.2.11/24 dev eth0".to_owned()));
        assert!(all.contains(&"ip -n xlab-h1 link set lo up".to_owned()));

        let paths = DockerdPaths {
            socket: Path::new("/l/h1/docker.sock"),
            data: Path::new("/l/h1/data"),
            exec: Path::new("/l/h1/exec"),
            pidfile: Path::new("/l/h1/dockerd.pid"),
        };
        let d = dockerd_command("xlab-h1", "h1", &paths, &docker_bip(1));
        assert_eq!(d.program, "unshare");
        let line = d.display();
        assert!(
            line.contains(
                "nsenter --net=/var/run/netns/xlab-h1 -- dockerd --host unix:///l/h1/docker.sock"
            ),
            "{line}"
        );
        assert!(!line.contains("ip netns exec"));
        assert!(line.contains("--iptables=false") && line.contains("--bip 172.31.201.1/24"));
        let s = sshd_command("xlab-h1", 42, Path::new("/l/h1/sshd_config"));
        assert_eq!(
            s.display(),
            "nsenter --net=/var/run/netns/xlab-h1 --uts=/proc/42/ns/uts -- /usr/sbin/sshd -D -e -f /l/h1/sshd_config"
        );
    }

    #[test]
    fn ssh_files_pin_the_lab_key_and_host_keys() {
        let address = host_address([10, 231, 0], 1);
        let sshd = sshd_config(
            address,
            Path::new("/l/h1/host_key"),
            Path::new("/l/ssh/authorized_keys"),
            Path::new("/l/h1/sshd.pid"),
            Path::new("/l/h1/docker.sock"),
        );
        assert!(sshd.contains("ListenAddress 10.231.0.11:22\n"));
        assert!(sshd.contains("PasswordAuthentication no\n") && sshd.contains("UsePAM no\n"));
        assert!(sshd.contains("SetEnv DOCKER_HOST=unix:///l/h1/docker.sock\n"));

        let client = ssh_client_config(
            &[("h1".into(), address)],
            Path::new("/l/ssh/id_ed25519"),
            Path::new("/l/ssh/known_hosts"),
        );
        assert!(client.contains("Host h1 10.231.0.11\n"));
        assert!(client.contains("StrictHostKeyChecking yes"));
        assert!(client.contains("UserKnownHostsFile /l/ssh/known_hosts"));
        assert_eq!(
            known_hosts(&[(address, "ssh-ed25519 AAAAC3 h1".into())]),
            "10.231.0.11 ssh-ed25519 AAAAC3\n"
        );
        assert!(ssh_wrapper(Path::new("/l/ssh/config"))
            .contains("exec /usr/bin/ssh -F '/l/ssh/config' \"$@\""));
    }

    #[test]
    fn the_registry_serves_tls_with_auth_on_the_bridge_address() {
        let config = registry_config(
            "10.231.0.1:5000",
            Path::new("/l/registry/data"),
            Path::new("/l/registry/htpasswd"),
            Path::new("/l/registry/cert.pem"),
            Path::new("/l/registry/key.pem"),
            "s3cret",
        );
        assert!(config.contains("addr: 10.231.0.1:5000\n"));
        assert!(config.contains("certificate: /l/registry/cert.pem\n"));
        assert!(config.contains("path: /l/registry/htpasswd\n"));
        assert_eq!(
            certs_d_dir("10.231.0.1:5000"),
            Path::new("/etc/docker/certs.d/10.231.0.1:5000")
        );
    }
}
