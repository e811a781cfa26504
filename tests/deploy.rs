//! The deploy files: the container's toolchain is new enough for every locked crate, and the
//! Kubernetes and AWS Batch documents are valid for their APIs and agree with each other and
//! with the exit codes `fleet run` documents (tests/deploy_check.py).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Rust version: (major, minor, patch).
type Version = (u32, u32, u32);

/// A locked crate ("name-version") and the rust-version it declares (None: sources absent).
type Locked = (String, Option<Version>);

/// "1.88" or "1.88.0" as (1, 88, 0).
fn version(text: &str) -> Option<Version> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The unpacked registry sources: $CARGO_HOME/registry/src/<one per registry>/.
fn registry_dirs() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let Ok(rd) = std::fs::read_dir(home.join("registry/src")) else { return Vec::new() };
    rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()
}

/// Every locked crate from a registry with the rust-version its own manifest declares;
/// crates whose sources are not unpacked here (other platforms' crates) come back as None.
fn locked_rust_versions(lock: &str) -> Vec<Locked> {
    let lock: toml::Value = lock.parse().expect("Cargo.lock is TOML");
    let dirs = registry_dirs();
    let mut out = Vec::new();
    for p in lock["package"].as_array().expect("[[package]]") {
        if p.get("source").is_none() {
            continue; // this workspace
        }
        let id = format!("{}-{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        let manifest = dirs.iter().map(|d| d.join(&id).join("Cargo.toml")).find(|m| m.exists());
        let Some(manifest) = manifest else {
            out.push((id, None));
            continue;
        };
        let m: toml::Value = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let rv = m.get("package").and_then(|p| p.get("rust-version")).and_then(|v| v.as_str()).and_then(version);
        out.push((id, Some(rv.unwrap_or((0, 0, 0)))));
    }
    out
}

/// The Rust version of the Dockerfile's build image (`FROM rust:X.Y[-variant]`).
fn dockerfile_rust(dockerfile: &str) -> Version {
    let line = dockerfile
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("FROM rust:"))
        .expect("the Dockerfile builds FROM rust:<version>");
    let tag = line["FROM rust:".len()..].split_whitespace().next().unwrap();
    version(tag.split('-').next().unwrap()).unwrap_or_else(|| panic!("{line}: no Rust version in the image tag"))
}

fn package_rust_version(cargo_toml: &str) -> Version {
    let m: toml::Value = cargo_toml.parse().unwrap();
    version(m["package"]["rust-version"].as_str().expect("package.rust-version")).unwrap()
}

/// let-chains (`if let … && …`), which the code uses, are stable from Rust 1.88.
const LET_CHAINS: Version = (1, 88, 0);

/// The crates whose declared rust-version is above `have`.
fn too_new(locked: &[Locked], have: Version) -> Vec<String> {
    locked.iter().filter_map(|(id, rv)| rv.filter(|rv| *rv > have).map(|rv| format!("{id} needs {rv:?}"))).collect()
}

#[test]
fn the_toolchain_is_new_enough_for_every_locked_crate() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let locked = locked_rust_versions(&lock);
    let missing: Vec<&str> = locked.iter().filter(|(_, rv)| rv.is_none()).map(|(id, _)| id.as_str()).collect();
    let present = locked.len() - missing.len();
    // The build that runs this test has unpacked every crate it compiles; only crates of other
    // platforms may be absent.
    assert!(present > 100, "only {present} locked crates have sources here: run `cargo fetch --locked` first");
    if !missing.is_empty() {
        eprintln!(
            "skipped {} locked crate(s) whose sources are not unpacked here (not built on this platform): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    let need = locked.iter().filter_map(|(_, rv)| *rv).max().unwrap().max(LET_CHAINS);
    let docker = dockerfile_rust(&std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap());
    let msrv = package_rust_version(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap());
    assert!(too_new(&locked, docker).is_empty(), "deploy/Dockerfile's rust:{docker:?}: {:?}", too_new(&locked, docker));
    assert!(too_new(&locked, msrv).is_empty(), "Cargo.toml's rust-version {msrv:?}: {:?}", too_new(&locked, msrv));
    assert!(docker >= LET_CHAINS && msrv >= LET_CHAINS, "let-chains need Rust 1.88");
    // Not higher than needed either: the two name the real minimum.
    assert_eq!(msrv, need, "Cargo.toml's rust-version is not the minimum the lockfile and code need");
    assert_eq!(docker, need, "deploy/Dockerfile's toolchain is not the minimum the lockfile and code need");
}

#[test]
fn the_version_checks_catch_a_crate_newer_than_the_toolchain() {
    let locked = vec![("demo-1.0.0".to_string(), Some((1, 90, 0))), ("absent-0.1.0".to_string(), None)];
    assert_eq!(too_new(&locked, (1, 88, 0)), ["demo-1.0.0 needs (1, 90, 0)"]);
    assert!(too_new(&locked, (1, 90, 0)).is_empty());
    assert_eq!(dockerfile_rust("# x\nFROM rust:1.88-bookworm AS build\nFROM debian:bookworm-slim\n"), (1, 88, 0));
    assert_eq!(dockerfile_rust("FROM rust:1.91.1 AS build\n"), (1, 91, 1));
    assert_eq!(package_rust_version("[package]\nname = \"x\"\nrust-version = \"1.88\"\n"), (1, 88, 0));
}

fn deploy_check(args: &[&str]) -> String {
    let Some(python) = std::env::var_os("PV2HVM_DEPLOY_PYTHON") else {
        panic!("PV2HVM_DEPLOY_PYTHON (the deploy-check venv's python, made by scripts/test) is not set");
    };
    let out = Command::new(python)
        .arg(root().join("tests/deploy_check.py"))
        .arg(root())
        .args(args)
        .output()
        .expect("running tests/deploy_check.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "tests/deploy_check.py {args:?} failed:\n{text}");
    text
}

/// The documents checked against the Kubernetes and AWS Batch API schemas, and each other.
#[test]
fn deploy_documents_are_valid_and_agree() {
    let text = deploy_check(&[]);
    assert!(text.contains("deploy documents: all checks passed"), "{text}");
}

/// Each check of deploy_check.py catches a copy of the documents broken for it.
#[test]
fn the_deploy_checks_catch_broken_documents() {
    let text = deploy_check(&["--self-test"]);
    assert!(text.contains("broken copies caught") && !text.contains("NOT CAUGHT"), "{text}");
}
