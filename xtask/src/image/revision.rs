//! Which source an image was built from: the git commit, marked dirty when
//! the tree has uncommitted changes, so a tag never lies about its content.
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    pub dirty: bool,
}

impl Revision {
    /// The tag form: the short commit, with `-dirty` for uncommitted changes.
    pub fn tag(&self) -> String {
        let short = &self.commit[..self.commit.len().min(12)];
        if self.dirty {
            format!("{short}-dirty")
        } else {
            short.to_owned()
        }
    }

    /// The full form for labels and `/version`.
    pub fn full(&self) -> String {
        if self.dirty {
            format!("{}-dirty", self.commit)
        } else {
            self.commit.clone()
        }
    }
}

pub fn current() -> Result<Revision> {
    let sh = Shell::new()?;
    sh.change_dir(crate::workspace::root());
    let commit = cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("reading the git commit (`git rev-parse HEAD`): is this a git checkout with at least one commit?")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=no")
        .quiet()
        .read()
        .context("reading the git status")?;
    Ok(Revision {
        commit,
        dirty: !status.trim().is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_and_marked_dirty() {
        let clean = Revision {
            commit: "0123456789abcdef0123".into(),
            dirty: false,
        };
        assert_eq!(clean.tag(), "0123456789ab");
        let dirty = Revision {
            dirty: true,
            ..clean
        };
        assert_eq!(dirty.tag(), "0123456789ab-dirty");
        assert_eq!(dirty.full(), "0123456789abcdef0123-dirty");
    }
}
