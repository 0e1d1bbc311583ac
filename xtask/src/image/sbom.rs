//! What the image is made of, as a CycloneDX 1.5 SBOM: the app binary (with
//! its sha256) and every Rust package compiled into it, as cargo resolves
//! them for the app package on the image's target (normal and build
//! dependencies; dev-dependencies and other workspace members' packages are
//! not in the binary, so they are not in the SBOM). The same set prunes the
//! Cargo.lock the image carries, so `scan` checks exactly what ships and the
//! SBOM and the embedded lockfile list the same packages.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    str::FromStr,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::Digest;

use super::context::{LOCKFILE_IN_IMAGE, SBOM_IN_IMAGE};

/// `name@version`: unique in a lockfile for crates.io packages.
pub type Key = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The manifest's `license` field, when there is one.
    pub license: Option<String>,
}

impl Package {
    pub fn key(&self) -> Key {
        format!("{}@{}", self.name, self.version)
    }
}

/// The dependency graph of one package on one target.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub root: Package,
    /// Every package but the root, sorted by key.
    pub packages: Vec<Package>,
    pub edges: BTreeMap<Key, BTreeSet<Key>>,
}

/// Asks cargo for the graph exactly as `cargo build -p PACKAGE --target TARGET` resolves it.
pub fn resolve(workspace: &Path, package: &str, target: &str) -> Result<Resolved> {
    let output = duct::cmd!(
        "cargo",
        "tree",
        "--locked",
        "--package",
        package,
        "--target",
        target,
        "--edges",
        "normal,build",
        "--prefix",
        "depth",
        "--format",
        "{p}|{l}"
    )
    .dir(workspace)
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .context("running `cargo tree` to list the app's dependencies for the SBOM")?;
    if !output.status.success() {
        bail!(
            "`cargo tree -p {package} --target {target}` failed in {}: {}",
            workspace.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_tree(&String::from_utf8_lossy(&output.stdout))
}

/// Reads `cargo tree --prefix depth --format '{p}|{l}'`: each line is the
/// depth, `name vX.Y.Z [(path|proc-macro)]`, `|`, the license, and ` (*)`
/// when the subtree was printed before. A line's parent is the nearest line
/// above it one level up.
pub fn parse_tree(text: &str) -> Result<Resolved> {
    let mut stack: Vec<Key> = Vec::new();
    let mut packages: BTreeMap<Key, Package> = BTreeMap::new();
    let mut edges: BTreeMap<Key, BTreeSet<Key>> = BTreeMap::new();
    let mut root = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let depth: usize = line[..digits]
            .parse()
            .with_context(|| format!("cargo tree line without a depth: {line}"))?;
        let rest = line[digits..].trim_end_matches(" (*)");
        let (id, license) = rest.split_once('|').unwrap_or((rest, ""));
        let mut words = id.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            bail!("cargo tree line without a name and version: {line}");
        };
        let package = Package {
            name: name.to_owned(),
            version: version.trim_start_matches('v').to_owned(),
            license: Some(license.trim().to_owned()).filter(|l| !l.is_empty()),
        };
        let key = package.key();
        stack.truncate(depth);
        match stack.last() {
            Some(parent) => {
                edges.entry(parent.clone()).or_default().insert(key.clone());
                packages.insert(key.clone(), package);
            }
            None if root.is_none() => root = Some(package),
            None => bail!("cargo tree printed a second root: {line}"),
        }
        edges.entry(key.clone()).or_default();
        stack.push(key);
    }
    let root = root.context("cargo tree printed nothing")?;
    packages.remove(&root.key());
    Ok(Resolved {
        root,
        packages: packages.into_values().collect(),
        edges,
    })
}

/// The workspace Cargo.lock cut down to the resolved packages (and their
/// dependency lists to those packages), in cargo's own format.
pub fn pruned_lockfile(lock_text: &str, resolved: &Resolved) -> Result<String> {
    let mut lockfile =
        rustsec::Lockfile::from_str(lock_text).context("parsing the workspace Cargo.lock")?;
    let keep: BTreeSet<Key> = resolved
        .packages
        .iter()
        .chain(std::iter::once(&resolved.root))
        .map(Package::key)
        .collect();
    let key = |name: &str, version: &dyn std::fmt::Display| format!("{name}@{version}");
    lockfile
        .packages
        .retain(|p| keep.contains(&key(p.name.as_str(), &p.version)));
    for package in &mut lockfile.packages {
        package
            .dependencies
            .retain(|d| keep.contains(&key(d.name.as_str(), &d.version)));
    }
    let missing: Vec<&Key> = keep
        .iter()
        .filter(|k| {
            !lockfile
                .packages
                .iter()
                .any(|p| &key(p.name.as_str(), &p.version) == *k)
        })
        .collect();
    if !missing.is_empty() {
        bail!("Cargo.lock does not list {missing:?}, which cargo tree resolved: run `cargo update -w` and build again");
    }
    Ok(lockfile.to_string())
}

pub fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn purl(p: &Package) -> String {
    format!("pkg:cargo/{}@{}", p.name, p.version)
}

/// Old manifests write `MIT/Apache-2.0`; SPDX says `MIT OR Apache-2.0`.
fn licenses(p: &Package) -> Option<Value> {
    p.license
        .as_deref()
        .map(|l| json!([{ "expression": l.replace('/', " OR ") }]))
}

/// What the SBOM says about the binary beyond its packages.
pub struct Subject<'a> {
    pub binary_sha256: &'a str,
    pub target: &'a str,
    pub revision: &'a str,
    pub created: &'a str,
    /// Lockfile checksums (sha256 of the .crate files), by `name@version`.
    pub checksums: &'a BTreeMap<Key, String>,
}

/// The CycloneDX 1.5 document.
pub fn cyclonedx(resolved: &Resolved, subject: &Subject) -> Value {
    let component = |p: &Package, kind: &str| {
        let mut c = json!({
            "type": kind,
            "bom-ref": purl(p),
            "name": p.name,
            "version": p.version,
            "purl": purl(p),
        });
        if let Some(l) = licenses(p) {
            c["licenses"] = l;
        }
        if let Some(sum) = subject.checksums.get(&p.key()) {
            c["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        c
    };
    let mut app = component(&resolved.root, "application");
    app["hashes"] = json!([{ "alg": "SHA-256", "content": subject.binary_sha256 }]);
    app["properties"] = json!([
        { "name": "xtask:binary:path", "value": "/app" },
        { "name": "xtask:target", "value": subject.target },
        { "name": "xtask:revision", "value": subject.revision },
        { "name": "xtask:lockfile:path", "value": format!("/{LOCKFILE_IN_IMAGE}") },
    ]);
    let by_key: BTreeMap<Key, &Package> = resolved
        .packages
        .iter()
        .chain(std::iter::once(&resolved.root))
        .map(|p| (p.key(), p))
        .collect();
    let dependencies: Vec<Value> = resolved
        .edges
        .iter()
        .filter_map(|(from, to)| {
            let from = by_key.get(from)?;
            let to: Vec<String> = to
                .iter()
                .filter_map(|k| by_key.get(k).map(|p| purl(p)))
                .collect();
            Some(json!({ "ref": purl(from), "dependsOn": to }))
        })
        .collect();
    let serial = uuid_from(&format!(
        "{}{}{}",
        subject.binary_sha256, subject.created, SBOM_IN_IMAGE
    ));
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": subject.created,
            "tools": { "components": [{
                "type": "application",
                "name": "cargo-xtask",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": app,
        },
        "components": resolved.packages.iter().map(|p| component(p, "library")).collect::<Vec<_>>(),
        "dependencies": dependencies,
    })
}

/// A name-based (version 5 layout) UUID: the same build inputs give the same serial number.
fn uuid_from(seed: &str) -> String {
    let mut b: Vec<u8> = sha2::Sha256::digest(seed.as_bytes())[..16].to_vec();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `name@version` -> checksum for every registry package in a lockfile.
pub fn checksums(lock_text: &str) -> Result<BTreeMap<Key, String>> {
    let lockfile = rustsec::Lockfile::from_str(lock_text).context("parsing Cargo.lock")?;
    Ok(lockfile
        .packages
        .iter()
        .filter_map(|p| {
            let sum = p.checksum.as_ref()?.to_string();
            Some((format!("{}@{}", p.name.as_str(), p.version), sum))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "0app v0.1.0 (/w/app)|MIT\n1anyhow v1.0.1|MIT OR Apache-2.0\n1http v1.0.0|MIT/Apache-2.0\n2bytes v1.1.0|MIT\n1bytes v1.1.0|MIT (*)\n1serde_derive v1.0.2 (proc-macro)|\n";

    #[test]
    fn the_tree_gives_packages_and_edges_without_repeats() {
        let r = parse_tree(TREE).unwrap();
        assert_eq!(r.root.key(), "app@0.1.0");
        let keys: Vec<String> = r.packages.iter().map(Package::key).collect();
        assert_eq!(
            keys,
            [
                "anyhow@1.0.1",
                "bytes@1.1.0",
                "http@1.0.0",
                "serde_derive@1.0.2"
            ]
        );
        assert_eq!(r.edges["app@0.1.0"].len(), 4);
        assert!(r.edges["http@1.0.0"].contains("bytes@1.1.0"));
        assert_eq!(r.packages[3].license, None);
    }

    #[test]
    fn serial_numbers_are_valid_uuids() {
        let u = uuid_from("x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
        assert!("89ab".contains(&u[19..20]));
    }
}
