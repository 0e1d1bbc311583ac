//! Installs the Debian packages this workspace's commands and tests need,
//! so a clean machine (or CI runner) needs no hand-installed tools.
use anyhow::{bail, Context, Result};

/// A program we need and the Debian package that provides it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const ENGINE: &[Tool] = &[
    Tool {
        program: "dockerd",
        package: "docker.io",
    },
    Tool {
        program: "docker-registry",
        package: "docker-registry",
    },
];

/// Everything the test suite starts or calls for real.
pub const TEST_SERVICES: &[Tool] = &[
    Tool {
        program: "redis-server",
        package: "redis-server",
    },
    Tool {
        program: "pg_ctlcluster",
        package: "postgresql",
    },
    Tool {
        program: "nginx",
        package: "nginx-light",
    },
    // The lab's hosts (`cargo xtask lab`) run sshd; `docker -H ssh://` and
    // bollard's ssh transport run the client.
    Tool {
        program: "sshd",
        package: "openssh-server",
    },
    Tool {
        program: "ssh",
        package: "openssh-client",
    },
];

/// What `cargo xtask lint` runs. kubectl is not in Debian; the kustomize
/// check says how to get it when it is missing.
/// The local balancer of the Docker target.
pub const BALANCER: &[Tool] = &[Tool {
    program: "nginx",
    package: "nginx-light",
}];

/// The balancer image copies Debian's haproxy (and the libraries it links)
/// from this machine; `cargo xtask lint` checks its config with it.
pub const HAPROXY: &[Tool] = &[Tool {
    program: "haproxy",
    package: "haproxy",
}];

/// A third-party HTTP server for the tests that deploy an image other than
/// the app: Debian's static busybox (`httpd`), copied into a FROM-scratch image.
pub const BUSYBOX: &[Tool] = &[Tool {
    program: "busybox",
    package: "busybox-static",
}];

pub const LINT: &[Tool] = &[
    Tool {
        program: "nginx",
        package: "nginx-light",
    },
    Tool {
        program: "promtool",
        package: "prometheus",
    },
    Tool {
        program: "amtool",
        package: "prometheus-alertmanager",
    },
    Tool {
        program: "docker-compose",
        package: "docker-compose",
    },
];

/// Makes sure every tool is on PATH, installing the missing ones with apt-get
/// when that is possible (root on Debian), and failing with one line saying
/// what to install otherwise.
pub fn ensure(tools: &[Tool]) -> Result<()> {
    let missing = missing(tools);
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let programs: Vec<&str> = missing.iter().map(|t| t.program).collect();
    let can_apt = nix::unistd::geteuid().is_root() && which::which("apt-get").is_ok();
    if !can_apt {
        bail!(
            "missing {}: install the Debian/Ubuntu packages `{}` (or the equivalent for your system)",
            programs.join(", "),
            packages.join(" ")
        );
    }
    eprintln!(
        "installing {} with apt-get (missing: {})",
        packages.join(" "),
        programs.join(", ")
    );
    apt_get(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&packages);
    apt_get(&args)?;
    for tool in missing {
        which::which(tool.program).with_context(|| {
            format!(
                "`{}` is still not on PATH after installing `{}`",
                tool.program, tool.package
            )
        })?;
    }
    Ok(())
}

/// The tools not on PATH.
pub fn missing(tools: &[Tool]) -> Vec<&Tool> {
    tools
        .iter()
        .filter(|t| which::which(t.program).is_err())
        .collect()
}

/// An error naming every missing tool and its package, for a command that
/// must not install anything itself (`why` says so).
pub fn refuse_missing(tools: &[Tool], why: &str) -> Result<()> {
    let missing = missing(tools);
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    bail!(
        "missing {}: install the Debian packages `{}` (apt-get install {}); {why}",
        missing
            .iter()
            .map(|t| t.program)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" "),
        packages.join(" ")
    )
}

/// What `cargo xtask lab` runs (the test services step installs the ones a
/// clean machine lacks: openssh).
pub const LAB: &[Tool] = &[
    Tool {
        program: "ip",
        package: "iproute2",
    },
    Tool {
        program: "nsenter",
        package: "util-linux",
    },
    Tool {
        program: "unshare",
        package: "util-linux",
    },
    Tool {
        program: "dockerd",
        package: "docker.io",
    },
    Tool {
        program: "docker",
        package: "docker.io",
    },
    Tool {
        program: "docker-registry",
        package: "docker-registry",
    },
    Tool {
        program: "/usr/sbin/sshd",
        package: "openssh-server",
    },
    Tool {
        program: "/usr/bin/ssh",
        package: "openssh-client",
    },
    Tool {
        program: "ssh-keygen",
        package: "openssh-client",
    },
];

/// Installs Debian packages that bring no program to look for (python3-venv).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() || which::which("apt-get").is_err() {
        bail!(
            "install the Debian/Ubuntu packages `{}` (needs root and apt-get)",
            packages.join(" ")
        );
    }
    eprintln!("installing {} with apt-get", packages.join(" "));
    apt_get(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages);
    apt_get(&args)
}

fn apt_get(args: &[&str]) -> Result<()> {
    let output = duct::cmd("apt-get", args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running apt-get")?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("apt-get {} failed:\n{}", args.join(" "), tail.join("\n"));
    }
    Ok(())
}
