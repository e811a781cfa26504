//! Interrupts leave nothing behind: SIGINT and SIGTERM remove `DST.partial` and any scratch
//! copy, say so in one line and exit 130 or 143; after a SIGKILL the next run replaces the
//! stale `DST.partial` and says so.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn start(src: &Path, dst: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pv2hvm"))
        .arg("convert")
        .arg(src)
        .arg(dst)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pv2hvm")
}

/// Waits until a file in `dir` whose name `matches` exists.
fn wait_for(dir: &Path, matches: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let found = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_str().is_some_and(&matches));
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no matching file appeared in {}", dir.display());
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) only sends a signal to the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    v.sort();
    v
}

#[test]
fn sigint_during_the_conversion_removes_the_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dst = out.join("hvm.img");
    let child = start(&fixture_cloud(), &dst);
    wait_for(&out, |n| n == "hvm.img.partial");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{err}");
    assert_eq!(err.trim_end(), format!("pv2hvm: interrupted: nothing was written to {}", dst.display()));
    assert_eq!(names(&out), Vec::<String>::new(), "nothing is left behind");
}

#[test]
fn sigterm_during_journal_replay_removes_the_scratch_copy_too() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "dirty.img");
    debugfs(&src.display().to_string(), "feature needs_recovery", true);
    let before = sha256(&src);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dst = out.join("hvm.img");
    let child = start(&src, &dst);
    wait_for(&out, |n| n.starts_with(".pv2hvm-metadata-"));
    signal(&child, libc::SIGTERM);
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted: nothing was written to"), "{err}");
    assert_eq!(names(&out), Vec::<String>::new(), "neither DST.partial nor the scratch copy is left");
    assert_eq!(sha256(&src), before);
}

#[test]
fn after_sigkill_the_next_run_replaces_the_stale_partial() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let mut child = start(&fixture_cloud(), &dst);
    wait_for(dir.path(), |n| n == "hvm.img.partial");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(names(dir.path()), vec!["hvm.img.partial".to_string()], "SIGKILL cannot clean up");
    let again = run_ok(pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).arg("-q"));
    let err = stderr(&again);
    assert!(err.contains(&format!("replacing {}.partial, left behind by an interrupted run", dst.display())), "{err}");
    assert_eq!(names(dir.path()), vec!["hvm.img".to_string()]);
    e2fsck_clean(&dst.display().to_string());
}
