//! `pv2hvm inspect`: what a PV guest is and what it can become, read without changing it.
//!
//! The filesystem is read through the source's block trait, which counts every byte: the
//! report says how much was read, and inspection reads only superblock, inode tables,
//! directories and the files it parses.

use std::sync::Arc;

use serde::Serialize;

use super::bootcfg::{self, BootEntry, ConfigDialect};
use super::drivers::{self, DriverRow, Family};
use super::inspect::{self, Guest, InspectError};
use super::os::OsInfo;
use super::rewrite::{bootcfg::HVM_CONSOLE, fstab, is_device_name};
use crate::disk::detect::SourceLayout;
use crate::ext2fs::{Ext2Fs, Kind};
use crate::io::{BlockSource, CountingSource};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub schema_version: u32,
    pub source: String,
    pub disk: SourceLayout,
    pub used_blocks: u64,
    pub os: OsInfo,
    pub playbook: String,
    pub kernels: Vec<KernelReport>,
    pub default_kernel: Option<String>,
    /// The bootloader config; `None` when the guest has none (the verdicts say so).
    pub bootloader: Option<BootReport>,
    pub fstab: Vec<FstabRow>,
    pub console: ConsoleReport,
    pub verdicts: Verdicts,
    pub bytes_read: u64,
}

#[derive(Debug, Serialize)]
pub struct KernelReport {
    pub version: String,
    pub image: String,
    pub config: Option<String>,
    pub modules_dir: Option<String>,
    pub initramfs: Option<InitramfsInfo>,
    pub pvhvm: bool,
    /// Where each driver is: built-in, initramfs, rootfs (a module missing from the
    /// initramfs) or missing.
    pub drivers: Vec<DriverRow>,
    /// Why the initramfs could not be read, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InitramfsInfo {
    pub path: String,
    pub format: &'static str,
    pub compression: &'static str,
    pub generator: &'static str,
    pub modules: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BootReport {
    pub path: String,
    pub real_path: String,
    pub dialect: ConfigDialect,
    pub default: usize,
    pub entries: Vec<BootEntry>,
}

#[derive(Debug, Serialize)]
pub struct FstabRow {
    #[serde(flatten)]
    pub entry: fstab::Entry,
    /// How the entry will resolve on HVM.
    pub resolves: String,
}

#[derive(Debug, Serialize)]
pub struct ConsoleReport {
    pub init_system: String,
    /// Kernel consoles of the default entry.
    pub kernel_consoles: Vec<String>,
    pub gettys: Vec<String>,
    pub persistent_net_rules: Option<String>,
    /// Network configs that pin a MAC address (`HWADDR=`).
    pub hwaddr_pins: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub possible: bool,
    pub families: &'static str,
    /// What is missing, with what would fix it.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Verdicts {
    /// Verdicts are for the default kernel, after conversion (injected drivers count).
    pub kernel: Option<String>,
    pub xen_hvm: Verdict,
    pub nitro: Verdict,
}

const XEN_FAMILIES: &str = "t2, m4, c4, r4, i3, x1 and other Xen HVM families";
const NITRO_FAMILIES: &str = "t3, m5, c5, r5 and newer (Nitro)";

/// Inspects the source through its block trait, counting every byte read.
pub fn inspect(
    source: Arc<dyn BlockSource>,
    books: &[super::playbook::Playbook],
) -> Result<InspectReport, crate::Error> {
    let counted = Arc::new(CountingSource::new(source));
    let src: Arc<dyn BlockSource> = counted.clone();
    let (layout, fs) = inspect::open(&src)?;
    let guest = inspect::inspect_fs(&src.describe(), layout, &fs)?;
    let fserr = |err| InspectError::Filesystem { image: src.describe(), err };
    let playbook = super::playbook::select(books, &guest.os, &|p| fs.exists(p)).map_err(fserr)?.name.clone();

    let mut kernels = Vec::new();
    let mut default_survey = None;
    for k in &guest.kernels {
        let is_default = guest.default_kernel.as_ref().is_some_and(|d| d.version == k.version);
        let mut row = KernelReport {
            version: k.version.clone(),
            image: k.image.clone(),
            config: k.config.clone(),
            modules_dir: k.modules_dir.clone(),
            initramfs: None,
            pvhvm: false,
            drivers: Vec::new(),
            error: None,
        };
        match drivers::survey(&fs, k) {
            Ok(s) => {
                row.initramfs = Some(InitramfsInfo {
                    path: s.path.clone(),
                    format: "cpio newc",
                    compression: s.compression.name(),
                    generator: s.generator.name(),
                    modules: s.initramfs_modules.clone(),
                });
                row.pvhvm = s.pvhvm;
                row.drivers = s.drivers.clone();
                if is_default {
                    default_survey = Some(s);
                }
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        kernels.push(row);
    }
    let refused = guest.check_convertible().err().map(|e| e.to_string());
    let verdict = |family: Family, families| match (&refused, &default_survey) {
        (Some(why), _) => Verdict { possible: false, families, missing: vec![why.clone()] },
        (None, Some(s)) => {
            let missing = s.missing_for(family);
            Verdict { possible: missing.is_empty(), families, missing }
        }
        (None, None) => Verdict {
            possible: false,
            families,
            missing: vec!["the default kernel's drivers could not be surveyed (see kernels)".into()],
        },
    };
    let verdicts = Verdicts {
        kernel: guest.default_kernel.as_ref().map(|k| k.version.clone()),
        xen_hvm: verdict(Family::XenHvm, XEN_FAMILIES),
        nitro: verdict(Family::Nitro, NITRO_FAMILIES),
    };
    let console = console_report(&fs, &guest).map_err(fserr)?;
    Ok(InspectReport {
        schema_version: SCHEMA_VERSION,
        source: src.describe(),
        used_blocks: guest.layout.fs.used_blocks(),
        disk: guest.layout.clone(),
        os: guest.os.clone(),
        playbook,
        default_kernel: guest.default_kernel.as_ref().map(|k| k.version.clone()),
        kernels,
        bootloader: boot_report(&guest),
        fstab: fstab_rows(&guest),
        console,
        verdicts,
        bytes_read: counted.bytes_read(),
    })
}

fn boot_report(guest: &Guest) -> Option<BootReport> {
    let boot = guest.boot.as_ref()?;
    let bootcfg::Entries { default, entries } = bootcfg::parse(&boot.text, boot.dialect);
    Some(BootReport {
        path: boot.path.clone(),
        real_path: boot.real_path.clone(),
        dialect: boot.dialect,
        default,
        entries,
    })
}

fn fstab_rows(guest: &Guest) -> Vec<FstabRow> {
    let Some(f) = &guest.fstab else { return Vec::new() };
    let uuid = &guest.layout.fs.uuid;
    let label = &guest.layout.fs.label;
    fstab::parse(&f.text)
        .into_iter()
        .map(|entry| {
            let spec = entry.spec.as_str();
            let resolves = if spec == format!("UUID={uuid}") || (!label.is_empty() && spec == format!("LABEL={label}"))
            {
                "the root filesystem: unchanged".to_string()
            } else if is_device_name(spec)
                && (entry.mountpoint == "/"
                    || guest.boot.as_ref().and_then(|b| b.default_root.as_deref()) == Some(spec))
            {
                format!("the root filesystem: becomes UUID={uuid}")
            } else if is_device_name(spec) {
                "another volume by device name: kept, with nofail".to_string()
            } else if spec.starts_with("UUID=") || spec.starts_with("LABEL=") {
                "another volume by UUID or label: unchanged".to_string()
            } else {
                "not a block device: unchanged".to_string()
            };
            FstabRow { entry, resolves }
        })
        .collect()
}

fn console_report(fs: &Ext2Fs, guest: &Guest) -> Result<ConsoleReport, crate::ext2fs::Ext2Error> {
    let mut gettys = Vec::new();
    if let Some(f) = &guest.inittab {
        gettys.extend(
            f.text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#') && l.contains("getty"))
                .map(|l| format!("/etc/inittab: {}", l.trim())),
        );
    }
    if fs.is_kind("/etc/init", Kind::Dir)? {
        for (name, kind) in fs.list_dir("/etc/init")? {
            if kind == Kind::File && (name.starts_with("tty") || name.starts_with("hvc") || name.contains("serial")) {
                gettys.push(format!("upstart: /etc/init/{name}"));
            }
        }
    }
    if guest.os.init_system == "systemd" {
        gettys.push("systemd: getty on the kernel console (serial-getty for ttyS0)".into());
    }
    let mut hwaddr_pins = Vec::new();
    let dir = "/etc/sysconfig/network-scripts";
    if fs.is_kind(dir, Kind::Dir)? {
        for (name, kind) in fs.list_dir(dir)? {
            if kind == Kind::File && name.starts_with("ifcfg-") {
                let path = format!("{dir}/{name}");
                let text = String::from_utf8_lossy(&fs.read_file(&path)?).into_owned();
                if text.lines().any(|l| l.trim_start().starts_with("HWADDR=")) {
                    hwaddr_pins.push(path);
                }
            }
        }
    }
    let kernel_consoles = guest
        .boot
        .as_ref()
        .and_then(|b| bootcfg::parse(&b.text, b.dialect).default_entry().map(|e| e.console.clone()))
        .unwrap_or_default();
    Ok(ConsoleReport {
        init_system: guest.os.init_system.clone(),
        kernel_consoles,
        gettys,
        persistent_net_rules: guest.persistent_net_rules.clone(),
        hwaddr_pins,
    })
}

impl InspectReport {
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let fs = &self.disk.fs;
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
        line("source", self.source.clone());
        line(
            "disk",
            format!(
                "{}, {} UUID {} label {:?}, {} of {} blocks used ({} bytes each), features: {}{}",
                self.disk.shape,
                fs.fs_type,
                fs.uuid,
                fs.label,
                self.used_blocks,
                fs.blocks,
                fs.block_size,
                fs.features.join(" "),
                if fs.needs_recovery { "; the journal needs recovery" } else { "" }
            ),
        );
        line(
            "os",
            format!(
                "{} ({} {}, {} family), init {}, SELinux {}",
                self.os.pretty_name,
                self.os.distro,
                self.os.version,
                self.os.family,
                self.os.init_system,
                self.os.selinux
            ),
        );
        line("playbook", self.playbook.clone());
        for k in &self.kernels {
            let default = if self.default_kernel.as_deref() == Some(k.version.as_str()) { " (default)" } else { "" };
            line(
                "kernel",
                format!("{}{default}: {}, PVHVM {}", k.version, k.image, if k.pvhvm { "yes" } else { "no" }),
            );
            if let Some(i) = &k.initramfs {
                line(
                    "",
                    format!("initramfs {} ({}, {}, {} modules)", i.path, i.generator, i.compression, i.modules.len()),
                );
            }
            if let Some(e) = &k.error {
                line("", format!("initramfs not readable: {e}"));
            }
            let rows: Vec<String> = k.drivers.iter().map(|d| format!("{}: {}", d.name, d.state.label())).collect();
            if !rows.is_empty() {
                line("", rows.join(", "));
            }
        }
        let Some(boot) = &self.bootloader else {
            line("bootloader", "none found (looked for menu.lst, grub.conf and grub.cfg)".into());
            return self.render_rest(s);
        };
        line("bootloader", format!("{} ({:?}), default entry {}", boot.real_path, boot.dialect, boot.default));
        for e in &boot.entries {
            line(
                "",
                format!(
                    "{:?}: {} root={} console={}",
                    e.title,
                    e.kernel.as_deref().unwrap_or("-"),
                    e.root.as_deref().unwrap_or("-"),
                    if e.console.is_empty() { "-".into() } else { e.console.join(",") }
                ),
            );
        }
        self.render_rest(s)
    }

    /// The lines after the bootloader's: fstab, console, network, verdicts, bytes read.
    fn render_rest(&self, mut s: String) -> String {
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
        for f in &self.fstab {
            line("fstab", format!("{} {} {}: {}", f.entry.spec, f.entry.mountpoint, f.entry.fstype, f.resolves));
        }
        let c = &self.console;
        let hvm_console = HVM_CONSOLE.iter().all(|h| c.kernel_consoles.iter().any(|k| format!("console={k}") == *h));
        line(
            "console",
            format!(
                "kernel {} ({}), {}",
                if c.kernel_consoles.is_empty() { "default".into() } else { c.kernel_consoles.join(",") },
                if hvm_console { "already HVM" } else { "rewritten to tty0 + ttyS0" },
                if c.gettys.is_empty() { "no getty found".into() } else { c.gettys.join("; ") }
            ),
        );
        if let Some(p) = &c.persistent_net_rules {
            line("network", format!("{p} pins MAC addresses: moved aside"));
        }
        for p in &c.hwaddr_pins {
            line("network", format!("{p} pins HWADDR="));
        }
        for (name, v) in [("Xen HVM", &self.verdicts.xen_hvm), ("Nitro", &self.verdicts.nitro)] {
            let what =
                if v.possible { "possible".to_string() } else { format!("not possible: {}", v.missing.join("; ")) };
            line("verdict", format!("{name} ({}): {what}", v.families));
        }
        line("read", format!("{} bytes", self.bytes_read));
        s
    }
}

impl InspectReport {
    /// The report as Markdown for a change review: a summary table, details folded.
    pub fn render_markdown(&self) -> String {
        let fs = &self.disk.fs;
        let mut s = format!("## pv2hvm inspection: `{}`\n\n| | |\n|---|---|\n", self.source);
        let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        row(
            "Disk",
            format!(
                "{} {} `{}` label `{}`, {} of {} blocks used{}",
                self.disk.shape,
                fs.fs_type,
                fs.uuid,
                fs.label,
                self.used_blocks,
                fs.blocks,
                if fs.needs_recovery { ", journal needs recovery" } else { "" }
            ),
        );
        row("OS", format!("{} (playbook `{}`), init {}", self.os.pretty_name, self.playbook, self.os.init_system));
        row("Default kernel", self.default_kernel.as_deref().map_or("none".into(), |k| format!("`{k}`")));
        row(
            "Bootloader",
            self.bootloader
                .as_ref()
                .map_or("none found".into(), |b| format!("`{}`, default entry {}", b.real_path, b.default)),
        );
        for (name, v) in [("Xen HVM", &self.verdicts.xen_hvm), ("Nitro", &self.verdicts.nitro)] {
            row(name, if v.possible { "possible".into() } else { format!("not possible: {}", v.missing.join("; ")) });
        }
        row("Read", format!("{} bytes", self.bytes_read));
        s.push_str(
            "\n<details><summary>Kernels and drivers</summary>\n\n| kernel | initramfs | drivers |\n|---|---|---|\n",
        );
        for k in &self.kernels {
            let ird = match (&k.initramfs, &k.error) {
                (Some(i), _) => format!("`{}` ({}, {})", i.path, i.generator, i.compression),
                (None, Some(e)) => format!("not readable: {e}"),
                (None, None) => "none".into(),
            };
            let drivers: Vec<String> = k.drivers.iter().map(|d| format!("{}: {}", d.name, d.state.label())).collect();
            s.push_str(&format!("| `{}` | {} | {} |\n", k.version, ird.replace('|', "\\|"), drivers.join(", ")));
        }
        s.push_str(
            "</details>\n\n<details><summary>fstab</summary>\n\n| spec | mount point | on HVM |\n|---|---|---|\n",
        );
        for f in &self.fstab {
            s.push_str(&format!("| `{}` | `{}` | {} |\n", f.entry.spec, f.entry.mountpoint, f.resolves));
        }
        s.push_str("</details>\n");
        s
    }
}
