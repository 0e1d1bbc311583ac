//! Every command `up` runs, as data: the network, the daemons, the keys.
use std::{net::Ipv4Addr, path::Path};

use super::Cmd;

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

/// A tmpfs of `megabytes` at `path`: a small disk that fills up, for the
/// disk-full faults (`lab::Options::disk_mb`). tmpfs rather than a loop
/// device: overlay2 works on it, and unmounting (which `down` does to every
/// mount under the lab folder) leaves no loop device or image file behind.
pub fn small_disk_command(path: &Path, megabytes: u64) -> Cmd {
    Cmd::new(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={megabytes}m,mode=0711"),
            "tmpfs",
            &path.to_string_lossy(),
        ],
    )
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
            // Containers in cgroups named after the host: `down` finds (and
            // kills) what outlived a killed dockerd, and removes the cgroups.
            &format!("--cgroup-parent=/{netns}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::plan::{docker_bip, host_address};

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
        assert!(line.contains("--cgroup-parent=/xlab-h1"), "{line}");
        let s = sshd_command("xlab-h1", 42, Path::new("/l/h1/sshd_config"));
        assert_eq!(
            s.display(),
            "nsenter --net=/var/run/netns/xlab-h1 --uts=/proc/42/ns/uts -- /usr/sbin/sshd -D -e -f /l/h1/sshd_config"
        );
    }
}
