//! SSH for engines reached as `ssh://user@host`: bollard's transport runs
//! this machine's `ssh` (a master per connection, then `docker system
//! dial-stdio` on the host), so the user's own SSH setup (agent, ~/.ssh,
//! known_hosts) works as it does for `docker -H ssh://`.
//!
//! A CI runner has no such setup; it has secrets. `from_environment` takes
//! XTASK_SSH_KEY (a private key) and XTASK_SSH_KNOWN_HOSTS (the hosts' pinned
//! keys, `ssh-keyscan` lines), writes them 0600 into a private folder with a
//! config and an `ssh` wrapper, and puts the wrapper first on PATH for this
//! process: the key is never in argv or ~/.ssh, and the folder goes when
//! the command ends. The wrapper also turns the transport's
//! `StrictHostKeyChecking=accept-new` into `yes`: a host whose key is not
//! pinned is refused, never trusted on first sight.
use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

pub const KEY_VAR: &str = "XTASK_SSH_KEY";
pub const KNOWN_HOSTS_VAR: &str = "XTASK_SSH_KNOWN_HOSTS";

/// The folder `from_environment` made; removed when dropped.
pub struct Identity {
    dir: PathBuf,
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Before any thread starts (it sets PATH): the identity the secrets name,
/// or None when XTASK_SSH_KEY is not set.
pub fn from_environment() -> Result<Option<Identity>> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let Some(key) = var(KEY_VAR) else {
        return Ok(None);
    };
    let known_hosts = var(KNOWN_HOSTS_VAR).with_context(|| {
        format!("{KEY_VAR} is set but {KNOWN_HOSTS_VAR} is not: set it to the hosts' public keys (`ssh-keyscan HOST` lines), so a deploy never trusts whoever answers first")
    })?;
    let ssh = which::which("ssh").context(
        "ssh:// engines need the OpenSSH client (`ssh`) on PATH (Debian: openssh-client)",
    )?;
    let root = crate::private_dir::ensure(&crate::targets::docker::runtime_root())?;
    let dir = crate::private_dir::ensure(&root.join(format!("ssh-{}", std::process::id())))?;
    let identity = Identity { dir: dir.clone() };
    let key_file = dir.join("id");
    // OpenSSH refuses a key without its final newline.
    write_private(&key_file, &format!("{}\n", key.trim_end()))?;
    write_private(&dir.join("known_hosts"), &known_hosts)?;
    let config = dir.join("config");
    write_private(&config, &client_config(&key_file, &dir.join("known_hosts")))?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    write_mode(&bin.join("ssh"), &wrapper(&ssh, &config), 0o700)?;
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    Ok(Some(identity))
}

/// The client settings: only this key, only the pinned hosts, never a prompt.
pub fn client_config(key: &Path, known_hosts: &Path) -> String {
    format!(
        "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
         StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n  \
         ServerAliveInterval 10\n  ServerAliveCountMax 3\n",
        key.display(),
        known_hosts.display()
    )
}

/// An `ssh` that reads `config` and keeps host keys strict.
pub fn wrapper(ssh: &Path, config: &Path) -> String {
    format!(
        "#!/bin/sh\n# made by cargo xtask: {}\n\
         for a in \"$@\"; do shift; [ \"$a\" = StrictHostKeyChecking=accept-new ] && a=StrictHostKeyChecking=yes; set -- \"$@\" \"$a\"; done\n\
         exec {} -F {} \"$@\"\n",
        "pinned host keys, this key only",
        ssh.display(),
        config.display()
    )
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    write_mode(path, text, 0o600)
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The host part of an `ssh://[user@]host[:port]` address (`[v6]` unwrapped).
pub fn host_of(address: &str) -> Result<String> {
    let Some(rest) = address
        .strip_prefix("ssh://")
        .or_else(|| address.strip_prefix("tcp://"))
    else {
        bail!("{address}: not an ssh:// or tcp:// address");
    };
    let authority = rest.rsplit('@').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        bail!("{address}: no host name");
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_drops_user_and_port() {
        assert_eq!(host_of("ssh://deploy@10.0.0.5:2222").unwrap(), "10.0.0.5");
        assert_eq!(
            host_of("ssh://web-1.example.com").unwrap(),
            "web-1.example.com"
        );
        assert_eq!(host_of("ssh://root@[fd00::5]:22").unwrap(), "fd00::5");
        assert_eq!(host_of("tcp://10.0.0.9:2376").unwrap(), "10.0.0.9");
        assert!(host_of("unix:///var/run/docker.sock").is_err());
        assert!(host_of("ssh://deploy@").is_err());
    }

    #[test]
    fn the_wrapper_turns_accept_new_into_strict_checking() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let fake = dir.path().join("fake-ssh");
        write_mode(
            &fake,
            &format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", args.display()),
            0o700,
        )
        .unwrap();
        let script = dir.path().join("ssh");
        write_mode(&script, &wrapper(&fake, Path::new("/cfg")), 0o700).unwrap();
        let status = std::process::Command::new(&script)
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
                "host one",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let seen = std::fs::read_to_string(&args).unwrap();
        assert_eq!(
            seen.lines().collect::<Vec<_>>(),
            [
                "-F",
                "/cfg",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "host one"
            ]
        );
    }
}
