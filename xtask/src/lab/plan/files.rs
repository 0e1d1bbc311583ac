//! Every config file the lab writes, as text: sshd's, the ssh client's,
//! known_hosts, the ssh wrapper, the registry's.
use std::{net::Ipv4Addr, path::Path};

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
    use crate::lab::plan::host_address;

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
