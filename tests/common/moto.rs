//! A local AWS API server for the AWS tests: moto (from the venv scripts/test makes, named by
//! PV2HVM_PYTHON) with tests/aws/moto_patches.py loaded, on a free port of 127.0.0.1, one per
//! test, strict (tests/aws/strict.py: AWS's rules where moto is lenient, and the transient
//! faults AWS documents, dealt to pv2hvm). tests/aws/tool.py seeds it and reads it back with
//! boto3.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{pv2hvm, run_ok, stdout};

pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub faults: PathBuf,
    /// The call log (moto_patches 11): "put" and "register" lines as the calls start.
    pub calls: PathBuf,
    /// What the strict server dealt to pv2hvm: "notfound put snap-…", "corrupt get …", ….
    pub strict_log: PathBuf,
    _dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    std::env::var_os("PV2HVM_PYTHON")
        .map(PathBuf::from)
        .expect("PV2HVM_PYTHON is not set: run the tests through scripts/test, which makes the moto venv")
}

fn aws_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws")
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A server with extra environment (PV2HVM_MOTO_REGISTER_DELAY).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let faults = dir.path().join("faults");
        let calls = dir.path().join("calls");
        let strict_log = dir.path().join("strict.log");
        let mut child = Command::new(python())
            .arg(aws_dir().join("server.py"))
            .arg("0")
            .env("PV2HVM_MOTO_FAULTS_FILE", &faults)
            .env("PV2HVM_MOTO_CALLS_FILE", &calls)
            .env("PV2HVM_MOTO_STRICT_LOG", &strict_log)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("moto did not start: {line:?}"));
        Moto { child, endpoint: format!("http://127.0.0.1:{port}"), faults, calls, strict_log, _dir: dir }
    }

    /// Points `cmd` at this server with test credentials in us-east-1.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
    }

    pub fn pv2hvm(&self) -> Command {
        let mut c = pv2hvm();
        self.env(&mut c);
        c
    }

    /// Runs tests/aws/tool.py and returns its stdout.
    pub fn tool(&self, args: &[&str]) -> String {
        let mut c = Command::new(python());
        c.arg(aws_dir().join("tool.py")).args(args);
        stdout(&run_ok(self.env(&mut c)))
    }

    /// Runs tests/aws/tool.py in `region`; returns its stdout.
    pub fn tool_in(&self, region: &str, args: &[&str]) -> String {
        let mut c = Command::new(python());
        c.arg(aws_dir().join("tool.py")).args(args);
        self.env(&mut c).env("AWS_REGION", region).env("AWS_DEFAULT_REGION", region);
        stdout(&run_ok(&mut c))
    }

    pub fn tool_json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.tool(args)).unwrap()
    }

    /// `pv2hvm migrate ARGS --yes --format json` in `work`; its report.
    pub fn migrate_json(&self, args: &[&str], work: &Path) -> serde_json::Value {
        let out = run_ok(
            self.pv2hvm().arg("migrate").args(args).args(["--yes", "--format", "json", "-q", "--work-dir"]).arg(work),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
    }

    /// `tool.py state REGION`'s `what` (snapshots, images, …) tagged `pv2hvm:run-id` = `run`.
    pub fn tagged(&self, region: &str, what: &str, run: &str) -> Vec<serde_json::Value> {
        let state = self.tool_json(&["state", region]);
        state[what].as_array().unwrap().iter().filter(|x| tag(x, "pv2hvm:run-id") == Some(run)).cloned().collect()
    }

    /// How many calls named `name` the call log holds.
    pub fn calls(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.calls).unwrap_or_default().lines().filter(|l| *l == name).count()
    }

    /// How many lines of the strict log start with `prefix`.
    pub fn dealt(&self, prefix: &str) -> usize {
        std::fs::read_to_string(&self.strict_log).unwrap_or_default().lines().filter(|l| l.starts_with(prefix)).count()
    }

    /// Arms fault injection ("put=3:throttle,get=2:500"); returns the log of injected faults.
    pub fn inject(&self, spec: &str) -> PathBuf {
        std::fs::write(&self.faults, spec).unwrap();
        self.faults.with_extension("log")
    }
}

/// The value of tag `key` of a resource as boto3 shows it.
pub fn tag<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v["Tags"].as_array()?.iter().find(|t| t["Key"] == key)?["Value"].as_str()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local image of a snapshot, for the price of the blocks it changed: `image` holds the
/// snapshot `base` (for example a copy of the fixture its AMI was uploaded from); the blocks of
/// `snap` that differ from `base` are written into it. Returns their indices. [`restore`] puts
/// `image` back.
impl Moto {
    pub fn apply(&self, base: &str, snap: &str, image: &Path) -> Vec<u64> {
        let v = self.tool_json(&["apply", snap, image.to_str().unwrap(), "--base", base]);
        v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect()
    }
}

/// Copies `blocks` (512 KiB) of `from` back over `image`.
pub fn restore(image: &Path, from: &Path, blocks: &[u64]) {
    use std::os::unix::fs::FileExt;
    let (src, dst) = (std::fs::File::open(from).unwrap(), std::fs::OpenOptions::new().write(true).open(image).unwrap());
    let mut buf = vec![0u8; 512 << 10];
    for &b in blocks {
        src.read_exact_at(&mut buf, b * (512 << 10)).unwrap();
        dst.write_all_at(&buf, b * (512 << 10)).unwrap();
    }
}
