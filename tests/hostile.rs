//! Hostile and corrupted guest images (tests/fixtures/hostile.sh makes them from the cloud
//! fixture): `inspect` and `convert` must each end within a minute (less where a case says)
//! and 512 MiB peak RSS (wait4's `ru_maxrss` of the child), with exit 0 or a documented code
//! (never 1, a signal or a panic), one error line and nothing at DST on failure, and a DST
//! that `e2fsck -fn` finds clean on success.
//!
//! `PV2HVM_BIN_UNDER_TEST` runs another build of the binary (to see these checks fail on one
//! without the limits).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{fixture_cloud, run_ok};

const WALL_LIMIT: Duration = Duration::from_secs(60);
const RSS_LIMIT_KIB: i64 = 512 << 10;

/// How one child ended.
struct Run {
    status: ExitStatus,
    wall: Duration,
    max_rss_kib: i64,
    stderr: String,
}

fn binary() -> PathBuf {
    std::env::var_os("PV2HVM_BIN_UNDER_TEST").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pv2hvm")), PathBuf::from)
}

/// Runs `args`, killing it after [`WALL_LIMIT`], with its peak RSS from wait4.
#[expect(clippy::zombie_processes, reason = "the child is reaped by wait4, which also gives its rusage")]
fn run_bounded(args: &[&Path], dir: &Path) -> Run {
    let err_path = dir.join("stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let start = Instant::now();
    let child =
        Command::new(binary()).args(args).stdout(Stdio::null()).stderr(err_file).spawn().expect("spawning pv2hvm");
    let pid = child.id() as libc::pid_t;
    // SAFETY: rusage is plain integers, for which all zeros is a valid value.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: `pid` is our child; `status` and `usage` are valid out-pointers.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break;
        }
        if start.elapsed() > WALL_LIMIT {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    Run { status: ExitStatus::from_raw(status), wall, max_rss_kib: usage.ru_maxrss, stderr }
}

/// What a case must end in: the exit codes `inspect` and `convert` may give, and what the
/// error line must name.
struct Expect {
    case: &'static str,
    inspect: &'static [i32],
    convert: &'static [i32],
    names: &'static [&'static str],
    /// A tighter bound than [`WALL_LIMIT`] on each run, where one is due.
    within: Option<Duration>,
}

/// What most cases expect of their time: the minute.
const ANY: Option<Duration> = None;

/// Exit codes the README documents for a damaged image: refused, source, verify.
const DAMAGED: &[i32] = &[0, 3, 4, 8];

const CASES: &[Expect] = &[
    Expect {
        case: "free-blocks",
        inspect: &[3],
        convert: &[3],
        names: &["free block count 4000000000", "corrupt"],
        within: ANY,
    },
    Expect {
        case: "missing-kernel",
        inspect: &[0],
        convert: &[3],
        names: &["\"Debian (missing kernel)\"", "/boot/vmlinuz-9.9.9-gone", "\"Debian (the real kernel)\""],
        within: ANY,
    },
    Expect {
        case: "fifo-kernel",
        inspect: &[0],
        convert: &[3],
        names: &["\"Debian (FIFO kernel)\"", "/boot/fifo, which is not a regular file"],
        within: ANY,
    },
    Expect {
        case: "gzip-bomb",
        inspect: &[0],
        convert: &[3],
        names: &["/boot/initrd.img-", "decompression bomb"],
        within: ANY,
    },
    // Unpacks to just under the 1 GiB limit: converts, streamed, in well under 512 MiB.
    Expect { case: "big-initramfs", inspect: &[0], convert: &[0], names: &[], within: ANY },
    // At the config limits, every kernel line rewritten: seconds, not minutes (linear).
    Expect { case: "limit-menu", inspect: &[0], convert: &[0], names: &[], within: Some(Duration::from_secs(20)) },
    Expect {
        case: "huge-menu",
        inspect: &[3],
        convert: &[3],
        names: &["/boot/grub/menu.lst", "1048576 bytes"],
        within: ANY,
    },
    Expect { case: "garbage-boot-dir", inspect: DAMAGED, convert: DAMAGED, names: &[], within: ANY },
    Expect { case: "garbage-fstab", inspect: DAMAGED, convert: DAMAGED, names: &[], within: ANY },
    Expect { case: "garbage-gdt", inspect: DAMAGED, convert: DAMAGED, names: &[], within: ANY },
    Expect { case: "garbage-journal", inspect: DAMAGED, convert: DAMAGED, names: &[], within: ANY },
];

/// Checks one run; returns what is wrong with it, if anything.
fn judge(e: &Expect, what: &str, run: &Run, allowed: &[i32], dst: Option<&Path>) -> Vec<String> {
    let mut bad = Vec::new();
    let tag = format!("{} {what}", e.case);
    if let Some(sig) = run.status.signal() {
        bad.push(format!("{tag}: killed by signal {sig} after {:?}", run.wall));
    }
    let within = e.within.unwrap_or(WALL_LIMIT);
    if run.wall > within {
        bad.push(format!("{tag}: took {:?}, more than {within:?}", run.wall));
    }
    if run.max_rss_kib > RSS_LIMIT_KIB {
        bad.push(format!("{tag}: peak RSS {} MiB", run.max_rss_kib >> 10));
    }
    if run.stderr.contains("panicked") {
        bad.push(format!("{tag}: panicked: {}", run.stderr));
    }
    let Some(code) = run.status.code() else { return bad };
    if !allowed.contains(&code) {
        bad.push(format!("{tag}: exit {code}, expected one of {allowed:?}: {}", run.stderr.trim()));
    }
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("pv2hvm: error:")).collect();
    if code != 0 {
        if errors.len() != 1 {
            bad.push(format!("{tag}: {} error lines: {}", errors.len(), run.stderr.trim()));
        }
        for n in e.names.iter().filter(|_| what == "convert") {
            if !errors.iter().any(|l| l.contains(n)) {
                bad.push(format!("{tag}: the error does not name {n}: {}", run.stderr.trim()));
            }
        }
    }
    if let Some(dst) = dst {
        let partial = dst.with_extension("img.partial");
        if code != 0 && (dst.exists() || partial.exists()) {
            bad.push(format!("{tag}: failed but left {} or {}", dst.display(), partial.display()));
        }
        if code == 0 {
            let fsck = Command::new("e2fsck").arg("-fn").arg(dst).output().expect("e2fsck");
            if !fsck.status.success() {
                bad.push(format!("{tag}: succeeded, but e2fsck -fn: {}", String::from_utf8_lossy(&fsck.stdout)));
            }
        }
    }
    bad
}

#[test]
fn hostile_images_end_bounded_with_a_documented_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.sh");
    let mut bad = Vec::new();
    for e in CASES {
        // One image at a time: each is a 2 GiB sparse copy.
        run_ok(Command::new("bash").arg(&script).arg(fixture_cloud()).arg(dir.path()).arg(e.case));
        let img = dir.path().join(format!("{}.img", e.case));
        let dst = dir.path().join("dst.img");
        let run = run_bounded(&[Path::new("inspect"), &img], dir.path());
        bad.extend(judge(e, "inspect", &run, e.inspect, None));
        let run = run_bounded(&[Path::new("convert"), &img, &dst], dir.path());
        eprintln!(
            "{}: convert exit {:?} in {:?}, peak RSS {} MiB",
            e.case,
            run.status.code(),
            run.wall,
            run.max_rss_kib >> 10
        );
        bad.extend(judge(e, "convert", &run, e.convert, Some(&dst)));
        for p in [img, dst.clone(), dst.with_extension("img.partial")] {
            let _ = std::fs::remove_file(p);
        }
    }
    assert!(bad.is_empty(), "hostile images:\n{}", bad.join("\n"));
}
