//! The conversion plan: everything `convert` will do, computed from an inspection without
//! writing anything. `--dry-run` prints it; `convert` applies it; reviews read it.

use serde::Serialize;

use crate::disk::detect::SourceLayout;
use crate::disk::layout::{DiskLayout, LayoutError, LayoutKind, MIB};
use crate::drivers::{DriverState, InitramfsPlan, Target};
use crate::ext2fs::BACKUP_SUFFIX;
use crate::grub::{ConfigDialect, GrubPc, MODULES};
use crate::inspect::{Guest, Kernel};
use crate::rewrite::{bootcfg, console, fstab, is_device_name};

/// Version of the plan's JSON form; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
const GIB: u64 = 1 << 30;

/// Choices that shape a plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub layout: LayoutKind,
    /// Disk size in GiB; default: the source rounded up to whole GiB, plus 1 GiB.
    pub size_gib: Option<u64>,
    pub destination: Option<String>,
    /// Which instance families to prepare drivers for.
    pub target: Target,
    /// Rebuild the initramfs of every kernel in the bootloader config, not just the default.
    pub all_kernels: bool,
    /// Leave every initramfs as it is (no driver injection).
    pub keep_initramfs: bool,
    /// A directory of extra playbooks, tried before the shipped ones.
    pub playbooks: Option<std::path::PathBuf>,
}

impl PlanOptions {
    pub fn new(layout: LayoutKind) -> Self {
        PlanOptions {
            layout,
            size_gib: None,
            destination: None,
            target: Target::Auto,
            all_kernels: false,
            keep_initramfs: false,
            playbooks: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditAction {
    /// New content in a new inode; the original stays as `<name>.pv2hvm-orig`.
    Rewrite,
    /// A file that did not exist.
    Create,
    /// Renamed to `<name>.pv2hvm-orig`, so it no longer applies.
    MoveAside,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileEdit {
    pub path: String,
    pub action: EditAction,
    /// SHA-256 of the file as the plan read it (none for a new file), to detect drift.
    pub sha256: Option<String>,
    pub backup: Option<String>,
    pub notes: Vec<String>,
    /// Unified diff of the change (empty for a move).
    pub diff: String,
    #[serde(skip)]
    pub new_text: Option<String>,
    /// For a created file: the file whose owner, mode and labels it copies.
    #[serde(skip)]
    pub like: Option<String>,
}

/// How a PV device name maps onto the HVM disk.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceMapping {
    pub pv_device: String,
    pub partition: u32,
    pub nitro_device: String,
    pub xen_hvm_device: String,
    pub spec: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BootloaderPlan {
    pub kind: &'static str,
    pub guest_config: String,
    pub dialect: ConfigDialect,
    pub core_lba: u64,
    pub embedded_config: String,
    pub modules: Vec<&'static str>,
}

/// What RegisterImage gets for the converted volume.
#[derive(Clone, Debug, Serialize)]
pub struct AmiFlags {
    pub architecture: String,
    pub virtualization_type: &'static str,
    pub boot_mode: &'static str,
    pub root_device_name: &'static str,
    /// EnaSupport: the kernel has ena and the target includes Nitro.
    pub ena_support: bool,
    /// SriovNetSupport=simple (cannot be undone): only when the kernel has ixgbevf.
    pub sriov_net_support: Option<&'static str>,
}

/// The options a plan was made with, so `convert --plan` can make it again.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRecord {
    pub layout: LayoutKind,
    pub size_gib: u64,
    pub target: Target,
    pub all_kernels: bool,
    pub keep_initramfs: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub schema_version: u32,
    pub source: String,
    pub options: PlanRecord,
    pub ami: AmiFlags,
    /// The playbook that matched the guest.
    pub playbook: String,
    pub os: crate::guestos::OsInfo,
    pub destination: Option<String>,
    pub source_layout: SourceLayout,
    pub disk: DiskLayout,
    pub device_map: Vec<DeviceMapping>,
    pub bootloader: BootloaderPlan,
    pub default_kernel: Option<Kernel>,
    pub kernels: Vec<Kernel>,
    pub edits: Vec<FileEdit>,
    /// Initramfs rebuilds with injected drivers, one per kernel.
    pub initramfs: Vec<InitramfsPlan>,
    pub target: Target,
    pub journal_replay: bool,
    pub warnings: Vec<String>,
}

/// Default disk size: the source rounded up to whole GiB, plus 1 GiB.
pub fn default_size(source_len: u64) -> u64 {
    source_len.div_ceil(GIB) * GIB + GIB
}

/// Builds the plan for a guest; `source_len` is the source volume's size in bytes and
/// `initramfs` the driver injections worked out by [`crate::drivers::analyze`].
pub fn build(
    guest: &Guest,
    source_len: u64,
    opts: &PlanOptions,
    playbook: &crate::playbook::Playbook,
    move_aside: &[String],
    architecture: Option<&str>,
    initramfs: Vec<InitramfsPlan>,
) -> Result<Plan, LayoutError> {
    let size = opts.size_gib.map_or_else(|| default_size(source_len), |g| g * GIB);
    let fs = &guest.layout.fs;
    let disk = DiskLayout::new(opts.layout, size, fs.size_bytes())?;
    let mut warnings = Vec::new();
    let mut edits = Vec::new();

    let args = &playbook.kernel_args;
    let mut extra_args = args.always.clone();
    if opts.target != Target::Xen {
        extra_args.extend(args.nitro.iter().cloned());
    }
    if opts.target != Target::Nitro {
        extra_args.extend(args.xen.iter().cloned());
    }
    let boot_text =
        bootcfg::rewrite(&guest.boot.text, &bootcfg::BootFacts { fs_uuid: &fs.uuid, extra_args: &extra_args });
    push_rewrite(&mut edits, &guest.boot.real_path, &guest.boot.text, boot_text.text, boot_text.notes);

    // The root volume's PV device names: fstab's `/` and the default entry's `root=`.
    let mut root_devices: Vec<String> = Vec::new();
    if let Some(r) = guest.boot.default_root.as_deref().filter(|r| is_device_name(r)) {
        root_devices.push(r.to_string());
    }
    if let Some(f) = &guest.fstab {
        for e in fstab::parse(&f.text) {
            if e.mountpoint == "/" && is_device_name(&e.spec) && !root_devices.contains(&e.spec) {
                root_devices.push(e.spec);
            }
        }
        let r = fstab::rewrite(&f.text, &fstab::FstabFacts { root_uuid: &fs.uuid, root_devices: &root_devices });
        warnings.extend(r.warnings.iter().cloned());
        push_rewrite(&mut edits, &f.path, &f.text, r.text, r.notes);
    } else {
        warnings.push("/etc/fstab is missing: the root filesystem is mounted as the kernel's root= says".into());
    }
    if let Some(f) = &guest.inittab {
        let r = console::rewrite_inittab(&f.text);
        push_rewrite(&mut edits, &f.path, &f.text, r.text, r.notes);
    }
    if let Some(f) = &guest.upstart_hvc0
        && !guest.has_upstart_ttys0
    {
        let text = console::upstart_ttys0_from_hvc0(&f.text);
        edits.push(FileEdit {
            path: "/etc/init/ttyS0.conf".into(),
            action: EditAction::Create,
            sha256: None,
            backup: None,
            notes: vec!["upstart getty on ttyS0, from hvc0.conf".into()],
            diff: unified_diff("/dev/null", "/etc/init/ttyS0.conf", "", &text),
            new_text: Some(text),
            like: Some(f.path.clone()),
        });
    }
    for p in move_aside {
        let why = if p.ends_with("persistent-net.rules") {
            "pins the PV NIC's MAC: the HVM NIC would come up as eth1".to_string()
        } else {
            format!("moved aside by playbook {}", playbook.name)
        };
        edits.push(FileEdit {
            path: p.clone(),
            action: EditAction::MoveAside,
            sha256: None,
            backup: Some(format!("{p}{BACKUP_SUFFIX}")),
            notes: vec![why],
            diff: String::new(),
            new_text: None,
            like: None,
        });
    }
    for ird in &initramfs {
        if let Some(p) = &ird.persist {
            let old = p.old.as_deref().unwrap_or("");
            let notes = vec![format!("keeps {} in future {} builds", ird.load.join(" "), generator_name(ird))];
            match &p.old {
                Some(_) => push_rewrite(&mut edits, &p.path, old, p.new.clone(), notes),
                None => edits.push(FileEdit {
                    path: p.path.clone(),
                    action: EditAction::Create,
                    sha256: None,
                    backup: None,
                    notes,
                    diff: unified_diff("/dev/null", &format!("b{}", p.path), "", &p.new),
                    new_text: Some(p.new.clone()),
                    like: Some(p.like.clone()),
                }),
            }
        }
        for d in ird.drivers.iter().filter(|d| d.purpose == "emulated" && d.state == DriverState::Missing) {
            warnings.push(format!(
                "kernel {} has no {} driver: the emulated disk of Xen HVM cannot be used as a fallback",
                ird.kernel, d.name
            ));
        }
    }
    if opts.keep_initramfs {
        warnings.push("--keep-initramfs: no drivers are injected; the image boots only where its initramfs already has the disk driver".into());
    }
    if fs.needs_recovery {
        warnings.push("the journal needs recovery: it is replayed on the copy before editing, and file contents shown here are from before the replay".into());
    }
    if guest.default_kernel.is_none() {
        warnings.push(format!(
            "the default entry of {} boots {}, which is not among the kernels in /boot",
            guest.boot.path,
            guest.boot.default_kernel.as_deref().unwrap_or("nothing")
        ));
    }
    if guest.boot.default_root.is_none() {
        warnings.push(format!("the default entry of {} has no root= argument", guest.boot.path));
    }

    let part_dev = |disk: &str, sep: &str| format!("/dev/{disk}{sep}1");
    let device_map = root_devices
        .iter()
        .cloned()
        .chain(root_devices.is_empty().then(|| "(root volume)".to_string()))
        .map(|pv_device| DeviceMapping {
            pv_device,
            partition: 1,
            nitro_device: part_dev("nvme0n1", "p"),
            xen_hvm_device: part_dev("xvda", ""),
            spec: format!("UUID={}", fs.uuid),
        })
        .collect();

    let has = |d: &str| {
        initramfs.first().is_some_and(|i| i.drivers.iter().any(|r| r.name == d && r.state != DriverState::Missing))
    };
    let ami = AmiFlags {
        architecture: architecture.unwrap_or("x86_64").to_string(),
        virtualization_type: "hvm",
        boot_mode: "legacy-bios",
        root_device_name: "/dev/xvda",
        ena_support: opts.target != Target::Xen && has("ena"),
        sriov_net_support: has("ixgbevf").then_some("simple"),
    };
    if architecture.is_none() {
        warnings.push("the guest's architecture could not be read from /sbin/init or /bin/sh: x86_64 assumed".into());
    }
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        source: guest.source.clone(),
        options: PlanRecord {
            layout: opts.layout,
            size_gib: disk.disk_size >> 30,
            target: opts.target,
            all_kernels: opts.all_kernels,
            keep_initramfs: opts.keep_initramfs,
        },
        ami,
        playbook: playbook.name.clone(),
        os: guest.os.clone(),
        destination: opts.destination.clone(),
        source_layout: guest.layout.clone(),
        bootloader: BootloaderPlan {
            kind: "grub2-i386-pc",
            guest_config: guest.boot.path.clone(),
            dialect: guest.boot.dialect,
            core_lba: disk.core_lba,
            embedded_config: GrubPc::embedded_config(&fs.uuid, &guest.boot.path, guest.boot.dialect),
            modules: MODULES.to_vec(),
        },
        disk,
        device_map,
        default_kernel: guest.default_kernel.clone(),
        kernels: guest.kernels.clone(),
        edits,
        initramfs,
        target: opts.target,
        journal_replay: fs.needs_recovery,
        warnings,
    })
}

fn generator_name(ird: &InitramfsPlan) -> &'static str {
    match ird.generator {
        crate::drivers::Generator::InitramfsTools => "initramfs-tools",
        crate::drivers::Generator::Dracut => "dracut",
        crate::drivers::Generator::Mkinitrd => "mkinitrd",
    }
}

fn push_rewrite(edits: &mut Vec<FileEdit>, path: &str, old: &str, new: String, notes: Vec<String>) {
    if new == old {
        return;
    }
    edits.push(FileEdit {
        path: path.to_string(),
        action: EditAction::Rewrite,
        sha256: Some(sha256_hex(old.as_bytes())),
        backup: Some(format!("{path}{BACKUP_SUFFIX}")),
        notes,
        diff: unified_diff(&format!("a{path}"), &format!("b{path}"), old, &new),
        new_text: Some(new),
        like: None,
    });
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unified_diff(from: &str, to: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header(from, to).to_string()
}

fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

impl Plan {
    /// The plan as text for a terminal or a change review.
    pub fn render_text(&self) -> String {
        let fs = &self.source_layout.fs;
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
        line(
            "source",
            format!(
                "{} ({}, {} UUID {}, label {:?}, {})",
                self.source,
                self.source_layout.shape,
                fs.fs_type,
                fs.uuid,
                fs.label,
                human(fs.size_bytes())
            ),
        );
        if let Some(d) = &self.destination {
            line("destination", d.clone());
        }
        let mut disk = format!(
            "{} layout, {}; partition 1 (root) at {} MiB, {}",
            self.disk.kind,
            human(self.disk.disk_size),
            self.disk.root_start / MIB,
            human(self.disk.root_size)
        );
        if let Some((start, len)) = self.disk.bios_boot {
            disk.push_str(&format!("; partition 2 (BIOS boot) at {} MiB, {} MiB", start / MIB, len / MIB));
        }
        line("disk", disk);
        line(
            "bootloader",
            format!(
                "GRUB 2 i386-pc, core.img at LBA {}, hands over to {} ({})",
                self.bootloader.core_lba,
                self.bootloader.guest_config,
                match self.bootloader.dialect {
                    ConfigDialect::Legacy => "legacy_configfile",
                    ConfigDialect::Grub2 => "configfile",
                }
            ),
        );
        if let Some(k) = &self.default_kernel {
            line("kernel", format!("{} ({})", k.version, k.image));
        }
        for m in &self.device_map {
            line(
                "device map",
                format!(
                    "{} -> partition {} ({} on Nitro, {} on Xen HVM) -> {}",
                    m.pv_device, m.partition, m.nitro_device, m.xen_hvm_device, m.spec
                ),
            );
        }
        for ird in &self.initramfs {
            line(
                "initramfs",
                format!(
                    "{} ({}, {}, kernel {}): Nitro {}, Xen HVM {}",
                    ird.path,
                    generator_name(ird),
                    ird.compression.name(),
                    ird.kernel,
                    if ird.nitro_possible { "ready" } else { "not possible" },
                    if ird.xen_hvm_possible { "ready" } else { "not possible" },
                ),
            );
            let states: Vec<String> = ird.drivers.iter().map(|d| format!("{} {}", d.name, d.state.label())).collect();
            line("", format!("drivers: {}", states.join(", ")));
            if ird.add.is_empty() {
                line("", "adds no modules".into());
            } else {
                let names: Vec<&str> = ird.add.iter().map(|p| p.rsplit('/').next().unwrap_or(p)).collect();
                line("", format!("adds {} (original kept as {})", names.join(" "), ird.backup));
            }
            line("", format!("loads at boot: {}", ird.load.join(" ")));
        }
        line(
            "journal",
            if self.journal_replay { "needs recovery: replayed on the copy".into() } else { "clean".into() },
        );
        s.push_str("edits:\n");
        if self.edits.is_empty() {
            s.push_str("  (none)\n");
        }
        for e in &self.edits {
            let backup = e.backup.as_deref().map(|b| format!(" (original kept as {b})")).unwrap_or_default();
            let verb = match e.action {
                EditAction::Rewrite => "rewrite",
                EditAction::Create => "create",
                EditAction::MoveAside => "move aside",
            };
            s.push_str(&format!("  {verb} {}{backup}\n", e.path));
            for n in &e.notes {
                s.push_str(&format!("    - {n}\n"));
            }
        }
        if !self.warnings.is_empty() {
            s.push_str("warnings:\n");
            for w in &self.warnings {
                s.push_str(&format!("  ! {w}\n"));
            }
        }
        for e in self.edits.iter().filter(|e| !e.diff.is_empty()) {
            s.push('\n');
            s.push_str(&e.diff);
        }
        s
    }
}
