//! Folders on the deploying machine that hold keys (the balancer's TLS
//! key) and must be this user's alone. Without XDG_RUNTIME_DIR the
//! runtime folder is a fixed name in the shared temp dir, which anyone can
//! create first: a folder someone else owns, or one others may write to,
//! could hand us their certificate or read ours. So it is created 0700,
//! and an existing one is used only when it is ours and only we can write.
use std::{
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// `path`, created 0700 (parents too) when missing; refused when it is a
/// symlink or not a folder, is owned by another user, or is writable by
/// its group or others. Returns it for chaining.
pub fn ensure(path: &Path) -> Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let fix = "remove it (or set XDG_RUNTIME_DIR to a folder of your own) and run again";
    if !meta.is_dir() {
        bail!(
            "{}: not a folder (a symlink or a file took its place); {fix}",
            path.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{}: owned by uid {}, not by this user (uid {me}): someone else made it, and it would hold this user's TLS key; {fix}",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "{}: mode {mode:03o} lets its group or others write into it, and it holds this user's TLS key; `chmod 700 {}` or {fix}",
            path.display(),
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_folder_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xtask-1000");
        assert_eq!(ensure(&path).unwrap(), path);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // An existing private one, or one readable by others, is used as it is.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure(&path).unwrap();
    }

    #[test]
    fn a_folder_others_can_write_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure(&open).unwrap_err().to_string();
        assert!(
            err.contains("mode 777") && err.contains("chmod 700"),
            "{err}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = ensure(&link).unwrap_err().to_string();
        assert!(err.contains("not a folder"), "{err}");
    }

    #[test]
    fn a_folder_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can make a folder owned by someone else");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("xtask-0");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(4242.into()), None).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = ensure(&theirs).unwrap_err().to_string();
        assert!(
            err.contains("owned by uid 4242") && err.contains("XDG_RUNTIME_DIR"),
            "{err}"
        );
    }
}
