//! The conversion plan: everything `convert` will do, computed once from an inspection
//! without writing anything. `--dry-run` prints it, `convert` applies it, reviews read it
//! ([`render`]), and saved plans are checked against the source for drift ([`saved`]).
//!
//! Policy lives here, not in the pipeline: which kernels get drivers, which files move
//! aside, which kernel arguments a playbook adds.

pub mod render;
pub mod saved;

use serde::{Deserialize, Serialize};

use crate::boot::grub::{GrubPc, MODULES};
use crate::disk::detect::SourceLayout;
use crate::disk::layout::{CorePlacement, DiskLayout, LayoutError};
use crate::ext2fs::{BACKUP_SUFFIX, Ext2Fs, Kind};
use crate::guest::bootcfg::ConfigDialect;
use crate::guest::drivers::{self, DriverState, InitramfsPlan, Purpose};
use crate::guest::inspect::{self, BootConfig, Guest, InspectError, Kernel};
use crate::guest::playbook::Playbook;
use crate::guest::rewrite::{bootcfg, console, fstab, is_device_name};
use crate::spec::{ConvertSpec, Target};
use crate::util::sha256_hex;

/// Version of the plan's JSON form; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditAction {
    /// New content in a new inode; the original stays as `<name>.pv2hvm-orig`.
    Rewrite,
    /// A file that did not exist.
    Create,
    /// Renamed to `<name>.pv2hvm-orig`, so it no longer applies.
    MoveAside,
}

impl EditAction {
    /// How plans spell the action for people.
    pub fn verb(self) -> &'static str {
        match self {
            EditAction::Rewrite => "rewrite",
            EditAction::Create => "create",
            EditAction::MoveAside => "move aside",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEdit {
    pub path: String,
    pub action: EditAction,
    /// SHA-256 of the file as the plan read it (none for a new file), to detect drift.
    pub sha256: Option<String>,
    pub backup: Option<String>,
    pub notes: Vec<String>,
    /// Unified diff of the change (empty for a move).
    pub diff: String,
    /// The new content (not saved: the diff shows it, and a plan is made again to apply it).
    #[serde(skip)]
    pub new_text: Option<String>,
    /// For a created file: the file whose owner, mode and labels it copies.
    #[serde(skip)]
    pub like: Option<String>,
    /// For a rewrite: the text as the plan read it.
    #[serde(skip)]
    pub original: Option<String>,
}

/// Edits compare by what a review sees: the saved form.
impl PartialEq for FileEdit {
    fn eq(&self, o: &Self) -> bool {
        (&self.path, self.action, &self.sha256, &self.backup, &self.notes, &self.diff)
            == (&o.path, o.action, &o.sha256, &o.backup, &o.notes, &o.diff)
    }
}

/// How a PV device name maps onto the HVM disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub pv_device: String,
    /// The partition holding the root filesystem; 0 for a whole-disk filesystem.
    pub partition: u32,
    pub nitro_device: String,
    pub xen_hvm_device: String,
    /// On an emulated (IDE/SCSI) disk.
    #[serde(default)]
    pub emulated_device: String,
    pub spec: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootloaderPlan {
    pub kind: String,
    pub guest_config: String,
    pub dialect: ConfigDialect,
    pub core_lba: u64,
    pub embedded_config: String,
    pub modules: Vec<String>,
}

/// What RegisterImage gets for the converted volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiFlags {
    pub architecture: String,
    pub virtualization_type: String,
    pub boot_mode: String,
    pub root_device_name: String,
    /// EnaSupport: the kernel has ena and the target includes Nitro.
    pub ena_support: bool,
    /// SriovNetSupport=simple (cannot be undone): only when the kernel has ixgbevf.
    pub sriov_net_support: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub schema_version: u32,
    pub source: String,
    /// The spec the plan was made with, its size resolved, so `convert --plan` makes it again.
    pub options: ConvertSpec,
    pub ami: AmiFlags,
    /// The playbook that matched the guest.
    pub playbook: String,
    pub os: crate::guest::os::OsInfo,
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
    /// What the layout means for the running instance (device names, growing the disk).
    #[serde(default)]
    pub notes: Vec<String>,
    /// What making the plan read from the source (not part of what drift compares).
    #[serde(default)]
    pub source_reads: ReadStats,
    /// The whole files the plan read, and why (not part of what drift compares).
    #[serde(default)]
    pub files_read: Vec<FileRead>,
    /// In place: how much of the source the conversion is expected to change.
    #[serde(default)]
    pub delta_estimate: Option<DeltaEstimate>,
}

/// The expected delta of an in-place conversion, in EBS's 512 KiB blocks: each written item
/// (boot sector, core.img, every rewritten or created file, each new initramfs) rounded up to
/// whole blocks, plus the metadata the writes touch. An estimate: where the allocator puts
/// the new files decides the real count, which `convert` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEstimate {
    pub block_size: u64,
    pub blocks: u64,
    pub upload_bytes: u64,
}

/// core.img's usual size, for the estimate.
const CORE_ESTIMATE: u64 = 200 << 10;
/// Blocks of metadata an in-place edit touches: superblock and group descriptors, bitmaps,
/// the inode table and directory blocks.
const METADATA_BLOCKS_ESTIMATE: u64 = 4;

fn estimate_delta(disk: &DiskLayout, edits: &[FileEdit], initramfs: &[InitramfsPlan]) -> Option<DeltaEstimate> {
    if disk.kind != crate::spec::LayoutKind::InPlace {
        return None;
    }
    const BLOCK: u64 = crate::io::delta::DELTA_BLOCK;
    let mut items = vec![512, CORE_ESTIMATE];
    items.extend(edits.iter().filter_map(|e| e.new_text.as_ref().map(|t| t.len() as u64)));
    items.extend(initramfs.iter().map(|i| match i.mode {
        crate::spec::InitramfsMode::Append => i.size + i.add_bytes,
        crate::spec::InitramfsMode::Rebuild => i.size + i.add_bytes / 2,
    }));
    let blocks = items.iter().map(|n| n.div_ceil(BLOCK).max(1)).sum::<u64>() + METADATA_BLOCKS_ESTIMATE;
    Some(DeltaEstimate { block_size: BLOCK, blocks, upload_bytes: blocks * BLOCK })
}

pub use crate::io::ReadStats;

/// A whole guest file the plan read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRead {
    pub path: String,
    pub bytes: u64,
    pub why: String,
}

/// Says why each file in `log` (path, bytes, in the order read) was read, from what the plan
/// made of it.
pub fn files_read(plan: &Plan, log: Vec<(String, u64)>) -> Vec<FileRead> {
    log.into_iter()
        .map(|(path, bytes)| {
            let why = if plan.initramfs.iter().any(|i| i.path == path) {
                "initramfs: the drivers it holds, and the base of the rebuilt one".to_string()
            } else if path == plan.bootloader.guest_config {
                "boot configuration: the kernels, the root and the console".to_string()
            } else if let Some(e) = plan.edits.iter().find(|e| e.path == path) {
                format!("{} ({})", e.action.verb(), e.notes.first().map_or("an edit of the playbook", String::as_str))
            } else if path.contains("/modules/") {
                "kernel modules: the drivers the kernel has and what they depend on".to_string()
            } else if path.starts_with("/boot/config-") {
                "kernel config: whether the kernel runs as an HVM guest".to_string()
            } else if path.ends_with("os-release") || path.ends_with("-release") || path.ends_with("_version") {
                "operating system: name and version, for the playbook".to_string()
            } else if crate::guest::os::ARCHITECTURE_PROBES.contains(&path.as_str()) {
                "architecture: the ELF header only".to_string()
            } else {
                "inspection: the operating system and its configuration".to_string()
            };
            FileRead { path, bytes, why }
        })
        .collect()
}

impl Plan {
    /// Drops what planning unpacked for a conversion in the same process (the initramfs):
    /// for a plan that is only shown or saved.
    pub fn forget_unpacked(&mut self) {
        for ird in &mut self.initramfs {
            ird.forget_unpacked();
        }
    }

    /// Every guest file the plan read and hashed: (path, SHA-256), edits and initramfs.
    pub fn hashed_files(&self) -> impl Iterator<Item = (&str, &str)> {
        let edits = self.edits.iter().filter_map(|e| Some((e.path.as_str(), e.sha256.as_deref()?)));
        edits.chain(self.initramfs.iter().map(|i| (i.path.as_str(), i.sha256.as_str())))
    }
}

/// Free space an in-place conversion wants for core.img in the filesystem: core.img itself
/// (about 160 KiB) with room to spare.
pub const CORE_RESERVE: u64 = 1 << 20;

/// The source a plan is made from.
pub struct PlanInput<'a> {
    /// Its name, for the plan and messages.
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    pub layout: SourceLayout,
    pub fs: &'a Ext2Fs,
}

/// Inspects the guest and makes the whole plan, driver verdicts included; writes nothing.
pub fn make(
    input: &PlanInput<'_>,
    spec: &ConvertSpec,
    books: &[Playbook],
    destination: Option<String>,
) -> Result<Plan, crate::Error> {
    let fs = input.fs;
    let fserr = |err| InspectError::Filesystem { image: input.name.clone(), err };
    let guest = inspect::inspect_fs(&input.name, input.layout.clone(), fs)?;
    let boot = guest.check_convertible()?;
    let playbook = crate::guest::playbook::select(books, &guest.os, &|p| fs.exists(p)).map_err(fserr)?;
    let mut move_aside = Vec::new();
    for p in &playbook.files.move_aside {
        if fs.is_kind(p, Kind::File).map_err(fserr)? {
            move_aside.push(p.clone());
        }
    }
    let mut initramfs: Vec<InitramfsPlan> = Vec::new();
    let mut warnings = Vec::new();
    if !spec.keep_initramfs {
        let kernels: Vec<&Kernel> = if spec.all_kernels {
            let named = |k: &&Kernel| boot.text.contains(k.image.rsplit('/').next().unwrap_or(&k.image));
            guest.kernels.iter().filter(named).collect()
        } else {
            guest.default_kernel.iter().collect()
        };
        if kernels.is_empty() {
            warnings.push("no kernel of the bootloader config was found in /boot: no drivers are injected".to_string());
        }
        for k in kernels {
            let is_default = guest.default_kernel.as_ref().is_some_and(|d| d.version == k.version);
            match drivers::analyze(fs, k, spec.target, spec.initramfs, &playbook.initramfs) {
                Ok(p) => initramfs.push(p),
                Err(e) if !is_default => warnings.push(format!("kernel {} is left as it is: {e}", k.version)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let arch = crate::guest::os::architecture(fs).map_err(fserr)?;
    let disk = DiskLayout::new(spec.layout, spec.disk_size(input.len), &guest.layout)?;
    if disk.core_placement == CorePlacement::BootLoaderInode {
        // core.img is about 160 KiB; its exact blocks are allocated at conversion.
        let free = guest.layout.fs.free_bytes();
        if free < CORE_RESERVE {
            return Err(LayoutError::NoRoomForCore { need: CORE_RESERVE, free }.into());
        }
        let used = fs.boot_loader_size().map_err(fserr)?;
        if used > 0 {
            return Err(LayoutError::BootLoaderInodeInUse(used).into());
        }
    }
    let findings = Findings { boot, playbook, move_aside, architecture: arch, initramfs };
    let mut plan = build(&guest, disk, spec, findings, destination);
    plan.warnings.extend(warnings);
    Ok(plan)
}

/// What [`make`] worked out beyond the inspection itself.
struct Findings<'a> {
    boot: &'a BootConfig,
    playbook: &'a Playbook,
    /// Files the playbook moves aside that the guest has.
    move_aside: Vec<String>,
    /// From the guest's ELF binaries.
    architecture: Option<&'static str>,
    /// Driver injections, one per kernel.
    initramfs: Vec<InitramfsPlan>,
}

/// Assembles the plan from the inspection and what [`make`] worked out.
fn build(guest: &Guest, disk: DiskLayout, spec: &ConvertSpec, f: Findings<'_>, destination: Option<String>) -> Plan {
    let Findings { boot, playbook, move_aside, architecture, initramfs } = f;
    let fs = &guest.layout.fs;
    let mut warnings = Vec::new();
    let root_devices = root_devices(guest, boot);
    let whole_disk = disk.root_partition == 0;
    let mut edits = config_edits(guest, boot, spec, playbook, &root_devices, whole_disk, &mut warnings);
    edits.extend(move_aside.iter().map(|p| move_aside_edit(p, playbook)));
    for ird in &initramfs {
        if let Some(e) = persist_edit(ird) {
            merge_edit(&mut edits, e);
        }
        for d in ird.drivers.iter().filter(|d| d.purpose == Purpose::Emulated && d.state == DriverState::Missing) {
            warnings.push(format!(
                "kernel {} has no {} driver: the emulated disk of Xen HVM cannot be used as a fallback",
                ird.kernel, d.name
            ));
        }
    }
    warnings.extend(guest_warnings(guest, boot, spec));
    if architecture.is_none() {
        warnings.push("the guest's architecture could not be read from /sbin/init or /bin/sh: x86_64 assumed".into());
    }
    let has = |d: &str| {
        initramfs.first().is_some_and(|i| i.drivers.iter().any(|r| r.name == d && r.state != DriverState::Missing))
    };
    let notes = layout_notes(&disk);
    let delta_estimate = estimate_delta(&disk, &edits, &initramfs);
    let ami = AmiFlags {
        architecture: architecture.unwrap_or("x86_64").to_string(),
        virtualization_type: "hvm".into(),
        boot_mode: "legacy-bios".into(),
        root_device_name: "/dev/xvda".into(),
        ena_support: spec.target.nitro() && has("ena"),
        sriov_net_support: has("ixgbevf").then(|| "simple".to_string()),
    };
    let part = disk.root_partition;
    let name = |disk_name: &str, sep: &str| match part {
        0 => format!("/dev/{disk_name}"),
        n => format!("/dev/{disk_name}{sep}{n}"),
    };
    let device_map = root_devices
        .iter()
        .cloned()
        .chain(root_devices.is_empty().then(|| "(root volume)".to_string()))
        .map(|pv_device| DeviceMapping {
            pv_device,
            partition: part,
            nitro_device: name("nvme0n1", "p"),
            xen_hvm_device: name("xvda", ""),
            emulated_device: name("sda", ""),
            spec: format!("UUID={}", fs.uuid),
        })
        .collect();
    Plan {
        schema_version: SCHEMA_VERSION,
        source: guest.source.clone(),
        options: ConvertSpec { size_gib: Some(disk.disk_size >> 30), ..spec.clone() },
        ami,
        playbook: playbook.name.clone(),
        os: guest.os.clone(),
        destination,
        source_layout: guest.layout.clone(),
        bootloader: BootloaderPlan {
            kind: "grub2-i386-pc".into(),
            guest_config: boot.path.clone(),
            dialect: boot.dialect,
            core_lba: disk.core_lba,
            embedded_config: GrubPc::embedded_config(&fs.uuid, &boot.path, boot.dialect),
            modules: MODULES.iter().map(|m| m.to_string()).collect(),
        },
        disk,
        device_map,
        default_kernel: guest.default_kernel.clone(),
        kernels: guest.kernels.clone(),
        edits,
        initramfs,
        target: spec.target,
        journal_replay: fs.needs_recovery,
        warnings,
        notes,
        source_reads: ReadStats::default(),
        files_read: Vec::new(),
        delta_estimate,
    }
}

/// What the layout means for the running instance.
fn layout_notes(disk: &DiskLayout) -> Vec<String> {
    let mut notes = Vec::new();
    if disk.kind == crate::spec::LayoutKind::InPlace {
        notes.push(
            "the filesystem stays where it is: the HVM disk is the source plus the blocks this plan changes".into(),
        );
        if disk.root_partition == 0 {
            notes.push(
                "root is the whole disk, with no partition: /dev/nvme0n1 on Nitro, /dev/xvda on Xen HVM, /dev/sda on an emulated disk"
                    .into(),
            );
            notes.push(
                "cloud-init: growpart has no partition to grow; resizefs grows the whole-disk filesystem when the volume is enlarged"
                    .into(),
            );
        }
    }
    notes
}

/// The root volume's PV device names: the default entry's `root=` and fstab's `/`.
fn root_devices(guest: &Guest, boot: &BootConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(r) = boot.default_root.as_deref().filter(|r| is_device_name(r)) {
        out.push(r.to_string());
    }
    if let Some(f) = &guest.fstab {
        for e in fstab::parse(&f.text) {
            if e.mountpoint == "/" && is_device_name(&e.spec) && !out.contains(&e.spec) {
                out.push(e.spec);
            }
        }
    }
    out
}

/// Rewrites of the bootloader config, fstab and the consoles.
fn config_edits(
    guest: &Guest,
    boot: &BootConfig,
    spec: &ConvertSpec,
    playbook: &Playbook,
    root_devices: &[String],
    whole_disk: bool,
    warnings: &mut Vec<String>,
) -> Vec<FileEdit> {
    let fs = &guest.layout.fs;
    let mut edits = Vec::new();
    let args = &playbook.kernel_args;
    let mut extra_args = args.always.clone();
    if spec.target.nitro() {
        extra_args.extend(args.nitro.iter().cloned());
    }
    if spec.target.xen() {
        extra_args.extend(args.xen.iter().cloned());
    }
    let facts = bootcfg::BootFacts { fs_uuid: &fs.uuid, extra_args: &extra_args, whole_disk };
    let boot_text = bootcfg::rewrite(&boot.text, &facts);
    edits.extend(rewrite_edit(&boot.real_path, &boot.text, boot_text.text, boot_text.notes));
    if let Some(f) = &guest.fstab {
        let r = fstab::rewrite(&f.text, &fstab::FstabFacts { root_uuid: &fs.uuid, root_devices });
        warnings.extend(r.warnings.iter().cloned());
        edits.extend(rewrite_edit(&f.path, &f.text, r.text, r.notes));
    }
    if let Some(f) = &guest.inittab {
        let r = console::rewrite_inittab(&f.text);
        edits.extend(rewrite_edit(&f.path, &f.text, r.text, r.notes));
    }
    if let Some(f) = &guest.upstart_hvc0
        && !guest.has_upstart_ttys0
    {
        let text = console::upstart_ttys0_from_hvc0(&f.text);
        edits.push(create_edit("/etc/init/ttyS0.conf", text, &f.path, "upstart getty on ttyS0, from hvc0.conf".into()));
    }
    edits
}

fn move_aside_edit(path: &str, playbook: &Playbook) -> FileEdit {
    let why = if path.ends_with("persistent-net.rules") {
        "pins the PV NIC's MAC: the HVM NIC would come up as eth1".to_string()
    } else {
        format!("moved aside by playbook {}", playbook.name)
    };
    FileEdit {
        path: path.to_string(),
        action: EditAction::MoveAside,
        sha256: None,
        backup: Some(format!("{path}{BACKUP_SUFFIX}")),
        notes: vec![why],
        diff: String::new(),
        new_text: None,
        like: None,
        original: None,
    }
}

/// The generator config that keeps injected drivers in future initramfs builds.
fn persist_edit(ird: &InitramfsPlan) -> Option<FileEdit> {
    let p = ird.persist.as_ref()?;
    let note = format!("keeps {} in future {} builds", ird.load.join(" "), ird.generator.name());
    match &p.old {
        Some(old) => rewrite_edit(&p.path, old, p.new.clone(), vec![note]),
        None => Some(create_edit(&p.path, p.new.clone(), &p.like, note)),
    }
}

/// Adds `new` to the edits; a second edit of the same file (another kernel's drivers for the
/// same generator config) adds only the lines the first lacks, so the file is rewritten once.
fn merge_edit(edits: &mut Vec<FileEdit>, new: FileEdit) {
    let Some(first) = edits.iter_mut().find(|e| e.path == new.path) else {
        edits.push(new);
        return;
    };
    let (Some(text), Some(more)) = (first.new_text.as_mut(), new.new_text.as_deref()) else { return };
    let have: std::collections::HashSet<&str> = text.lines().collect();
    let missing: Vec<&str> = more.lines().filter(|l| !have.contains(l)).collect();
    if missing.is_empty() {
        return;
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for l in missing {
        text.push_str(l);
        text.push('\n');
    }
    first.notes.extend(new.notes);
    let from = if first.action == EditAction::Create { "/dev/null".to_string() } else { format!("a{}", first.path) };
    let original = first.original.clone().unwrap_or_default();
    first.diff = unified_diff(&from, &format!("b{}", first.path), &original, text);
}

/// Warnings about the guest as a whole.
fn guest_warnings(guest: &Guest, boot: &BootConfig, spec: &ConvertSpec) -> Vec<String> {
    let mut w = Vec::new();
    if guest.fstab.is_none() {
        w.push("/etc/fstab is missing: the root filesystem is mounted as the kernel's root= says".into());
    }
    if spec.keep_initramfs {
        w.push("--keep-initramfs: no drivers are injected; the image boots only where its initramfs already has the disk driver".into());
    }
    if guest.layout.fs.needs_recovery {
        w.push("the journal needs recovery: it is replayed on a copy before editing, and file contents shown here are from before the replay".into());
    }
    if guest.default_kernel.is_none() {
        w.push(format!(
            "the default entry of {} boots {}, which is not among the kernels in /boot",
            boot.path,
            boot.default_kernel.as_deref().unwrap_or("nothing")
        ));
    }
    if boot.default_root.is_none() {
        w.push(format!("the default entry of {} has no root= argument", boot.path));
    }
    w
}

fn rewrite_edit(path: &str, old: &str, new: String, notes: Vec<String>) -> Option<FileEdit> {
    (new != old).then(|| FileEdit {
        path: path.to_string(),
        action: EditAction::Rewrite,
        sha256: Some(sha256_hex(old.as_bytes())),
        backup: Some(format!("{path}{BACKUP_SUFFIX}")),
        notes,
        diff: unified_diff(&format!("a{path}"), &format!("b{path}"), old, &new),
        new_text: Some(new),
        like: None,
        original: Some(old.to_string()),
    })
}

fn create_edit(path: &str, text: String, like: &str, note: String) -> FileEdit {
    FileEdit {
        path: path.to_string(),
        action: EditAction::Create,
        sha256: None,
        backup: None,
        notes: vec![note],
        diff: unified_diff("/dev/null", &format!("b{path}"), "", &text),
        new_text: Some(text),
        like: Some(like.to_string()),
        original: None,
    }
}

/// How long a diff may search for the minimal one. Myers is O(N·D): a config whose every
/// line changed is quadratic, and past this the rest of it is shown as removed and added.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn unified_diff(from: &str, to: &str, old: &str, new: &str) -> String {
    similar::TextDiff::configure()
        .deadline(std::time::Instant::now() + DIFF_DEADLINE)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}
