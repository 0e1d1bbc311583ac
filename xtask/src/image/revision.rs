//! Which source an image was built from: the git commit, and for a tree
//! with uncommitted changes a hash of those changes, so a tag never lies
//! about its content and never moves: a second deploy from a tree edited
//! again gets a new tag (and a build) instead of the image of the first
//! edit under the same `<commit>-dirty`.
use std::path::Path;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    /// The first 8 hex digits of the SHA-256 of `git diff HEAD`, when the
    /// tracked files differ from the commit.
    pub changes: Option<String>,
}

impl Revision {
    /// The tag form: the short commit, with `-dirty-<changes>` for uncommitted changes.
    pub fn tag(&self) -> String {
        let short = &self.commit[..self.commit.len().min(12)];
        match &self.changes {
            Some(changes) => format!("{short}-dirty-{changes}"),
            None => short.to_owned(),
        }
    }

    /// The full form for labels and `/version`.
    pub fn full(&self) -> String {
        match &self.changes {
            Some(changes) => format!("{}-dirty-{changes}", self.commit),
            None => self.commit.clone(),
        }
    }
}

pub fn current() -> Result<Revision> {
    of_tree(&crate::workspace::root())
}

/// The revision of the git work tree at `root`. Untracked files are not
/// counted (as `git status --untracked-files=no`): build output and scratch
/// files must not make every tree dirty.
pub fn of_tree(root: &Path) -> Result<Revision> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let commit = cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("reading the git commit (`git rev-parse HEAD`): is this a git checkout with at least one commit?")?;
    let diff = cmd!(sh, "git diff HEAD --binary --no-ext-diff")
        .quiet()
        .output()
        .context("reading the uncommitted changes (`git diff HEAD`)")?;
    if !diff.status.success() {
        anyhow::bail!(
            "`git diff HEAD` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&diff.stderr).trim()
        );
    }
    let changes =
        (!diff.stdout.is_empty()).then(|| super::sbom::sha256_hex(&diff.stdout)[..8].to_owned());
    Ok(Revision { commit, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_and_carry_the_hash_of_the_changes() {
        let clean = Revision {
            commit: "0123456789abcdef0123".into(),
            changes: None,
        };
        assert_eq!(clean.tag(), "0123456789ab");
        let dirty = Revision {
            changes: Some("a1b2c3d4".into()),
            ..clean
        };
        assert_eq!(dirty.tag(), "0123456789ab-dirty-a1b2c3d4");
        assert_eq!(dirty.full(), "0123456789abcdef0123-dirty-a1b2c3d4");
        assert!(crate::image::is_valid_tag(&dirty.tag()));
    }

    /// A real git tree: each different edit is its own tag, the same edit
    /// the same tag, and undoing it is the commit again.
    #[test]
    fn each_edit_of_a_tree_is_its_own_tag() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(dir.path());
        let file = dir.path().join("main.rs");
        std::fs::write(&file, "fn main() {}\n").unwrap();
        cmd!(sh, "git init -q").run().unwrap();
        cmd!(sh, "git add main.rs").run().unwrap();
        cmd!(sh, "git -c user.name=t -c user.email=t@t commit -qm one")
            .run()
            .unwrap();
        let clean = of_tree(dir.path()).unwrap();
        assert_eq!(clean.changes, None);

        std::fs::write(&file, "fn main() { println!(\"a\") }\n").unwrap();
        let first = of_tree(dir.path()).unwrap();
        std::fs::write(&file, "fn main() { println!(\"b\") }\n").unwrap();
        let second = of_tree(dir.path()).unwrap();
        assert!(first.changes.is_some() && second.changes.is_some());
        assert_ne!(
            first.tag(),
            second.tag(),
            "a second edit must not reuse the tag"
        );
        assert_eq!(
            of_tree(dir.path()).unwrap(),
            second,
            "the same edit, the same tag"
        );
        // Staged counts as well as unstaged.
        cmd!(sh, "git add main.rs").run().unwrap();
        assert_eq!(of_tree(dir.path()).unwrap(), second);

        std::fs::write(&file, "fn main() {}\n").unwrap();
        cmd!(sh, "git add main.rs").run().unwrap();
        assert_eq!(of_tree(dir.path()).unwrap(), clean);
        // An untracked file does not make the tree dirty.
        std::fs::write(dir.path().join("scratch.txt"), "x").unwrap();
        assert_eq!(of_tree(dir.path()).unwrap(), clean);
    }
}
