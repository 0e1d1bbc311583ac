//! Embeds the version's git revision, so `/version` and `app_build_info`
//! say exactly which commit is running. The image build passes
//! `APP_GIT_REVISION` explicitly (a build context has no `.git`).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=APP_GIT_REVISION");
    // In a git worktree `.git` is a file and HEAD/index live elsewhere; a
    // watched path that never exists would rebuild the app on every build.
    let git_dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(dir) = git_dir {
        for file in ["HEAD", "index"] {
            let path = std::path::Path::new(&dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let revision = std::env::var("APP_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=APP_GIT_REVISION={revision}");
}

fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|r| !r.is_empty())
}
