//! Embeds the version's git revision, so `/version` and `app_build_info`
//! say exactly which commit is running. The image build passes
//! `APP_GIT_REVISION` explicitly (a build context has no `.git`).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=APP_GIT_REVISION");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/index");
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
