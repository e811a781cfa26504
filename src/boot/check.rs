//! Boots a disk image in QEMU (TCG, SeaBIOS) and reports how far the guest got, from what it
//! printed on the serial console. Used by `convert --boot-check`, the demo and the boot tests.
//!
//! KVM is not used: on the machines this runs on it hangs guest kernels after early boot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The line pv2hvm's test guests print once userspace runs:
/// `PV2HVM-MARKER root=<device> opts=<mount options>`.
pub const MARKER: &str = "PV2HVM-MARKER";

/// How the disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// NVMe, as on Nitro instances.
    Nvme,
    /// IDE, as Xen HVM emulates before PV drivers take over.
    Ide,
}

impl std::fmt::Display for DiskBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskBus::Nvme => "NVMe",
            DiskBus::Ide => "IDE",
        })
    }
}

/// How far a boot got, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Nothing,
    Bootloader,
    Kernel,
    Userspace,
    Marker,
}

#[derive(Clone, Debug)]
pub struct BootCheck {
    pub image: PathBuf,
    pub bus: DiskBus,
    pub timeout: Duration,
    pub memory_mib: u32,
    /// Where to keep the whole console log, if anywhere.
    pub console_log: Option<PathBuf>,
}

impl BootCheck {
    pub fn new(image: &Path, bus: DiskBus) -> Self {
        BootCheck {
            image: image.to_path_buf(),
            bus,
            timeout: Duration::from_secs(240),
            memory_mib: 1024,
            console_log: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BootOutcome {
    pub bus: DiskBus,
    pub stage: Stage,
    pub marker: Option<String>,
    /// From the marker: the root device and whether it is mounted read-write.
    pub root_device: Option<String>,
    pub root_rw: Option<bool>,
    pub seconds: f64,
    pub timed_out: bool,
    /// A console line that says the boot cannot succeed (root device never found, panic).
    pub failure: Option<String>,
    /// The last console lines, for a report when the boot fell short.
    pub tail: Vec<String>,
}

impl BootOutcome {
    /// The marker was reached with root mounted read-write.
    pub fn ok(&self) -> bool {
        self.stage == Stage::Marker && self.root_rw == Some(true)
    }

    pub fn summary(&self) -> String {
        match (&self.root_device, self.root_rw) {
            (Some(dev), Some(rw)) => format!(
                "{} boot reached userspace in {:.0} s: root {dev} mounted {}",
                self.bus,
                self.seconds,
                if rw { "read-write" } else { "read-only" }
            ),
            _ => format!(
                "{} boot stopped at stage {:?} after {:.0} s{}; last console lines:\n  {}",
                self.bus,
                self.stage,
                self.seconds,
                match (&self.failure, self.timed_out) {
                    (Some(f), _) => format!(" ({f})"),
                    (None, true) => " (timed out)".to_string(),
                    (None, false) => String::new(),
                },
                self.tail.join("\n  ")
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootCheckError {
    #[error("qemu-system-x86_64 was not found: install the qemu-system-x86 package")]
    QemuMissing,
    #[error("starting QEMU: {0}")]
    Spawn(std::io::Error),
    #[error("writing the console log {path}: {err}")]
    Log { path: PathBuf, err: std::io::Error },
}

/// The QEMU command line for a check (the image is opened with snapshot=on: never written).
pub fn qemu_args(check: &BootCheck) -> Vec<String> {
    let file = format!("file={},format=raw,if=none,id=d0,snapshot=on", check.image.display());
    let mut args: Vec<String> = ["-accel", "tcg", "-m"].iter().map(|s| s.to_string()).collect();
    args.push(check.memory_mib.to_string());
    args.extend(
        ["-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-net", "none", "-drive"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.push(file);
    args.push("-device".into());
    args.push(match check.bus {
        DiskBus::Nvme => "nvme,drive=d0,serial=vol0".into(),
        DiskBus::Ide => "ide-hd,drive=d0,bus=ide.0".into(),
    });
    args
}

/// Console lines after which a boot cannot reach userspace any more.
const FAILURES: &[&str] = &[
    "Kernel panic",
    "dracut-initqueue: timeout, still waiting",
    "Timed out waiting for device",
    "Entering emergency mode",
    "Dropping to a shell",
    "Dropping to debug shell",
    "You are in emergency mode",
    "error: no such partition",
    "error: file `",
    "error: can't find command",
];

fn stage_of(line: &str) -> Option<Stage> {
    if line.contains(MARKER) {
        Some(Stage::Marker)
    } else if line.contains("Run /sbin/init")
        || line.contains("systemd[1]:")
        || line.contains("INIT: version")
        || line.contains("login:")
    {
        Some(Stage::Userspace)
    } else if line.contains("Linux version") {
        Some(Stage::Kernel)
    } else if line.contains("GRUB") || line.contains("Booting") {
        Some(Stage::Bootloader)
    } else {
        None
    }
}

/// Boots the image and waits for the marker, the guest powering off, or the timeout.
pub fn run(check: &BootCheck) -> Result<BootOutcome, BootCheckError> {
    let qemu = crate::host::find_on_path("qemu-system-x86_64").ok_or(BootCheckError::QemuMissing)?;
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(qemu_args(check))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BootCheckError::Spawn)?;
    let (tx, rx) = mpsc::channel::<String>();
    let _registered = crate::io::cleanup::register_child(child.id());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx.send(String::from_utf8_lossy(&line).trim_end().to_string()).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let _ = tx2.send(format!("qemu: {}", String::from_utf8_lossy(&line).trim_end()));
        }
    });
    let mut log: Vec<String> = Vec::new();
    let mut stage = Stage::Nothing;
    let mut marker = None;
    let mut timed_out = false;
    let mut failure: Option<String> = None;
    let mut deadline = started + check.timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = marker.is_none() && failure.is_none();
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                if let Some(s) = stage_of(&line) {
                    stage = stage.max(s);
                }
                if marker.is_none()
                    && failure.is_none()
                    && let Some(f) = FAILURES.iter().find(|f| line.contains(**f))
                {
                    failure = Some(line[line.find(f).unwrap_or(0)..].to_string());
                    // Keep a little more of the console for the report, then stop.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(3));
                }
                if marker.is_none() && line.contains(MARKER) {
                    marker = Some(line[line.find(MARKER).expect("found")..].to_string());
                    // Give the guest a moment to power off cleanly.
                    deadline = Instant::now() + Duration::from_secs(20);
                }
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Some(path) = &check.console_log {
        std::fs::write(path, log.join("\n") + "\n").map_err(|err| BootCheckError::Log { path: path.clone(), err })?;
    }
    let (root_device, root_rw) = match &marker {
        Some(m) => {
            let dev = m.split_whitespace().find_map(|w| w.strip_prefix("root=")).map(str::to_string);
            let rw =
                m.split_whitespace().find_map(|w| w.strip_prefix("opts=")).map(|o| o.split(',').any(|x| x == "rw"));
            (dev, rw)
        }
        None => (None, None),
    };
    let tail = log.iter().rev().take(15).rev().cloned().collect();
    Ok(BootOutcome {
        bus: check.bus,
        stage,
        marker,
        root_device,
        root_rw,
        seconds: started.elapsed().as_secs_f64(),
        timed_out,
        failure,
        tail,
    })
}
/// Boots `image` once on each bus, in order; a console log, if asked for, keeps the last.
pub fn run_each(
    image: &Path,
    buses: &[DiskBus],
    timeout: Duration,
    console_log: Option<&Path>,
) -> Result<Vec<BootOutcome>, BootCheckError> {
    let mut out = Vec::new();
    for &bus in buses {
        let mut check = BootCheck::new(image, bus);
        check.timeout = timeout;
        check.console_log = console_log.map(Path::to_path_buf);
        out.push(run(&check)?);
    }
    Ok(out)
}
