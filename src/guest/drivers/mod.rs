//! Driver injection: which PV-on-HVM, Nitro and emulated-disk drivers a kernel has (built in,
//! in its initramfs, only in the root filesystem, or missing), and an initramfs rebuilt
//! offline with the missing ones, loaded at boot and listed in kmod's indexes.
//!
//! The guest's dracut or mkinitramfs is never run: modules come from the guest's own
//! `/lib/modules/<version>`, dependencies from its `modules.dep` and each module's `.modinfo`.
//! This module works out what each kernel has and needs; [`inject`] writes the new initramfs.

mod inject;

pub use inject::{nash_insmod, rebuild};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::initramfs::{Compression, Initramfs, InitramfsError, kmod_index};
use super::inspect::Kernel;
use crate::ext2fs::{BACKUP_SUFFIX, Ext2Error, Ext2Fs, Kind};
use crate::spec::{InitramfsMode, Target};

/// The tool that built the initramfs, which decides how modules get loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    InitramfsTools,
    Dracut,
    /// RHEL/CentOS 5–6 mkinitrd with a nash `init` script.
    Mkinitrd,
}

impl Generator {
    /// The generator's name as playbooks and plans spell it.
    pub fn name(self) -> &'static str {
        match self {
            Generator::InitramfsTools => "initramfs-tools",
            Generator::Dracut => "dracut",
            Generator::Mkinitrd => "mkinitrd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverState {
    BuiltIn,
    Initramfs,
    /// A module in the root filesystem, missing from the initramfs.
    Rootfs,
    Missing,
}

/// What a driver is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// PV-on-HVM: Xen HVM instance types.
    Xen,
    /// NVMe storage and ENA networking: Nitro instance types.
    Nitro,
    /// The emulated IDE disk, a fallback on Xen HVM.
    Emulated,
    /// SR-IOV networking (ixgbevf).
    Sriov,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Xen => "xen",
            Purpose::Nitro => "nitro",
            Purpose::Emulated => "emulated",
            Purpose::Sriov => "sriov",
        }
    }
}

/// The instance families a converted image can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    XenHvm,
    Nitro,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::XenHvm => "Xen HVM",
            Family::Nitro => "Nitro",
        }
    }
    /// The families a target asks for.
    pub fn of(target: Target) -> &'static [Family] {
        match target {
            Target::Auto => &[Family::Nitro, Family::XenHvm],
            Target::Nitro => &[Family::Nitro],
            Target::Xen => &[Family::XenHvm],
        }
    }
    /// The `--target` value that picks only this family.
    fn flag(self) -> &'static str {
        match self {
            Family::XenHvm => "xen",
            Family::Nitro => "nitro",
        }
    }
}

/// (module name, purpose, the family that requires it) of every driver pv2hvm looks after.
const DRIVERS: &[(&str, Purpose, Option<Family>)] = &[
    ("xen-platform-pci", Purpose::Xen, None),
    ("xen-blkfront", Purpose::Xen, Some(Family::XenHvm)),
    ("xen-netfront", Purpose::Xen, Some(Family::XenHvm)),
    ("nvme", Purpose::Nitro, Some(Family::Nitro)),
    ("ena", Purpose::Nitro, Some(Family::Nitro)),
    ("ata_piix", Purpose::Emulated, None),
    ("ata_generic", Purpose::Emulated, None),
    ("sd_mod", Purpose::Emulated, None),
    ("ixgbevf", Purpose::Sriov, None),
];

impl DriverState {
    /// How reports spell the state.
    pub fn label(self) -> &'static str {
        match self {
            DriverState::BuiltIn => "built-in",
            DriverState::Initramfs => "in initramfs",
            DriverState::Rootfs => "module in rootfs",
            DriverState::Missing => "missing",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriverRow {
    pub name: String,
    pub purpose: Purpose,
    pub state: DriverState,
}

/// What injection does to one kernel's initramfs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitramfsPlan {
    pub kernel: String,
    pub path: String,
    /// SHA-256 of the initramfs as the plan read it, to detect drift.
    pub sha256: String,
    pub backup: String,
    pub generator: Generator,
    pub compression: Compression,
    pub drivers: Vec<DriverRow>,
    /// Module files added, dependencies first (paths relative to the modules directory).
    pub add: Vec<String>,
    /// Modules loaded explicitly at boot.
    pub load: Vec<String>,
    pub nitro_possible: bool,
    pub xen_hvm_possible: bool,
    /// Whether the drivers are appended as one archive or the whole initramfs is rebuilt.
    #[serde(default)]
    pub mode: InitramfsMode,
    /// Size of the initramfs as the plan read it, and of the module files it adds.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub add_bytes: u64,
    /// Where the initramfs keeps modules (worked out again by every plan, not saved).
    #[serde(skip)]
    moddir: String,
    #[serde(skip)]
    guest_moddir: String,
    /// The guest's initramfs generator config that keeps the drivers in future rebuilds.
    #[serde(skip)]
    pub persist: Option<PersistEdit>,
    /// The initramfs as the plan unpacked it (for the bytes with `sha256`), so that the
    /// conversion need not unpack it again; not saved.
    #[serde(skip)]
    parsed: Option<Arc<Initramfs>>,
}

impl InitramfsPlan {
    /// Drops the unpacked initramfs the plan keeps for the conversion.
    pub fn forget_unpacked(&mut self) {
        self.parsed = None;
    }
}

/// Plans compare by what a review sees: the saved form, without what is worked out again.
impl PartialEq for InitramfsPlan {
    fn eq(&self, o: &Self) -> bool {
        (&self.kernel, &self.path, &self.sha256, &self.backup, self.generator, self.compression)
            == (&o.kernel, &o.path, &o.sha256, &o.backup, o.generator, o.compression)
            && (&self.drivers, &self.add, &self.load, self.nitro_possible, self.xen_hvm_possible, self.mode)
                == (&o.drivers, &o.add, &o.load, o.nitro_possible, o.xen_hvm_possible, o.mode)
    }
}

/// A change to the guest's initramfs generator config.
#[derive(Clone, Debug)]
pub struct PersistEdit {
    pub path: String,
    pub old: Option<String>,
    pub new: String,
    /// For a new file: an existing file whose owner, mode and labels it copies.
    pub like: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Ext2(#[from] Ext2Error),
    #[error("{path}: {err}")]
    Initramfs { path: String, err: InitramfsError },
    #[error("{path}: unrecognised initramfs generator (not initramfs-tools, dracut or mkinitrd)")]
    UnknownGenerator { path: String },
    #[error("kernel {kernel} has no initramfs in /boot")]
    NoInitramfs { kernel: String },
    #[error("kernel {kernel} has no module directory (/lib/modules/{kernel}) with a modules.dep")]
    NoModules { kernel: String },
    #[error("kernel {kernel} has no {driver} driver: {target} is not possible without a newer kernel{remains}")]
    Missing { kernel: String, driver: String, target: &'static str, remains: String },
    #[error("{path}: {err}")]
    Module { path: String, err: std::io::Error },
    #[error("{path}: {err}")]
    Encode { path: String, err: InitramfsError },
    #[error("not enough free space for the rebuilt {path}: it needs {need} bytes, {free} are free")]
    NoRoom { path: String, need: u64, free: u64 },
}

/// The guest's module tree for one kernel, read from its text indexes.
struct GuestModules {
    dir: String,
    dep_text: String,
    /// Module name → path relative to `dir`.
    paths: HashMap<String, String>,
    /// Module name → dependencies from modules.dep.
    deps: HashMap<String, Vec<String>>,
    builtin: HashSet<String>,
}

fn text(fs: &Ext2Fs, path: &str) -> Result<Option<String>, Ext2Error> {
    Ok(fs.try_read_file(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

impl GuestModules {
    fn load(fs: &Ext2Fs, kernel: &Kernel) -> Result<Self, DriverError> {
        let no = || DriverError::NoModules { kernel: kernel.version.clone() };
        let dir = kernel.modules_dir.clone().ok_or_else(no)?;
        let dep_text = text(fs, &format!("{dir}/modules.dep"))?.ok_or_else(no)?;
        let mut paths = HashMap::new();
        let mut deps = HashMap::new();
        for line in dep_text.lines() {
            let Some((path, rest)) = line.split_once(':') else { continue };
            let name = kmod_index::module_name(path);
            deps.insert(name.clone(), rest.split_whitespace().map(kmod_index::module_name).collect());
            paths.insert(name, path.to_string());
        }
        let builtin = text(fs, &format!("{dir}/modules.builtin"))?
            .unwrap_or_default()
            .lines()
            .map(kmod_index::module_name)
            .collect();
        Ok(GuestModules { dir, dep_text, paths, deps, builtin })
    }

    /// What `name` needs: its modules.dep line and its `.modinfo depends=`; `None` for a
    /// built-in or unknown module.
    fn needs(&self, fs: &Ext2Fs, name: &str) -> Result<Option<Vec<String>>, DriverError> {
        if self.builtin.contains(name) {
            return Ok(None);
        }
        let Some(path) = self.paths.get(name) else { return Ok(None) };
        let mut needs: BTreeSet<String> = self.deps.get(name).cloned().unwrap_or_default().into_iter().collect();
        let full = format!("{}/{path}", self.dir);
        let bytes = fs.read_file(&full)?;
        let plain = decompress_module(path, &bytes).map_err(|err| DriverError::Module { path: full.clone(), err })?;
        for (k, v) in modinfo(&plain) {
            if k == "depends" {
                needs.extend(v.split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")));
            }
        }
        Ok(Some(needs.into_iter().collect()))
    }
}

/// A module's direct dependencies, or `None` when it has nothing to load.
pub type NeedsFn<'a, E> = dyn FnMut(&str) -> Result<Option<Vec<String>>, E> + 'a;

/// Appends `name` and everything it needs to `out`, dependencies first, each once.
pub fn resolve<E>(
    name: &str,
    needs: &mut NeedsFn<'_, E>,
    out: &mut Vec<String>,
    seen: &mut HashSet<String>,
) -> Result<(), E> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(deps) = needs(name)? else { return Ok(()) };
    for dep in deps {
        resolve(&dep, needs, out, seen)?;
    }
    out.push(name.to_string());
    Ok(())
}

/// Decompresses a module file as its suffix says (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
/// At most [`MAX_WHOLE_FILE`](crate::ext2fs::MAX_WHOLE_FILE) bytes are unpacked.
pub fn decompress_module(path: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let max = crate::ext2fs::MAX_WHOLE_FILE;
    let mut out = Vec::new();
    let mut unpack = |r: &mut dyn Read| r.take(max + 1).read_to_end(&mut out);
    if path.ends_with(".xz") {
        unpack(&mut liblzma::read::XzDecoder::new(bytes))?;
    } else if path.ends_with(".zst") {
        unpack(&mut zstd::stream::read::Decoder::new(bytes)?)?;
    } else if path.ends_with(".gz") {
        unpack(&mut flate2::read::GzDecoder::new(bytes))?;
    } else {
        out = bytes.to_vec();
    }
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it unpacks to more than {max} bytes"),
        ));
    }
    Ok(out)
}

/// The `key=value` pairs of an ELF module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Vec<(String, String)> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(elf) else { return Vec::new() };
    let Some(data) = file.section_by_name(".modinfo").and_then(|s| s.data().ok()) else { return Vec::new() };
    data.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn detect_generator(ird: &Initramfs, path: &str) -> Result<Generator, DriverError> {
    let has_prefix = |p: &str| ird.entries().any(|e| e.path().starts_with(p));
    if has_prefix("usr/lib/dracut/") || has_prefix("lib/dracut/") {
        Ok(Generator::Dracut)
    } else if ird.find("conf/initramfs.conf").is_some() || ird.find("scripts/functions").is_some() {
        Ok(Generator::InitramfsTools)
    } else if ird.find("init").and_then(|e| e.data()).is_some_and(|d| d.starts_with(b"#!/bin/nash")) {
        Ok(Generator::Mkinitrd)
    } else {
        Err(DriverError::UnknownGenerator { path: path.to_string() })
    }
}

/// Where the initramfs keeps this kernel's modules.
fn initramfs_moddir(ird: &Initramfs, generator: Generator, version: &str) -> String {
    if generator == Generator::Mkinitrd {
        return "lib".into();
    }
    let marker = format!("modules/{version}/");
    if let Some(e) = ird.entries().find(|e| e.path().contains(&marker)) {
        let p = e.path();
        return p[..p.find(&marker).expect("contains") + marker.len() - 1].to_string();
    }
    if ird.find("lib").is_some_and(|e| e.is_symlink()) {
        format!("usr/lib/modules/{version}")
    } else {
        format!("lib/modules/{version}")
    }
}

/// Parses the initramfs at `path` as it streams from the guest (never held whole), with the
/// SHA-256 and size of the file.
fn read_initramfs(fs: &Ext2Fs, path: &str) -> Result<(Initramfs, String, u64), DriverError> {
    let reader = fs.open_file(path)?;
    let size = reader.size();
    let mut hashed = crate::util::HashingReader::new(reader);
    let parsed = Initramfs::parse_from(&mut hashed, size);
    // A failed read of the guest is the source's failure, not the initramfs's.
    if let Some(err) = hashed.inner.take_error() {
        return Err(err.into());
    }
    let ird = parsed.map_err(|err| DriverError::Initramfs { path: path.to_string(), err })?;
    Ok((ird, hashed.hex(), size))
}

/// What a kernel has: where each driver lives, and what its initramfs is.
pub struct Survey {
    pub path: String,
    pub sha256: String,
    /// Size of the initramfs in bytes.
    pub size: u64,
    pub generator: Generator,
    pub compression: Compression,
    pub drivers: Vec<DriverRow>,
    /// Modules the initramfs holds (module names).
    pub initramfs_modules: Vec<String>,
    pub pvhvm: bool,
    /// After conversion (injection counts): nvme and ena exist.
    pub nitro_possible: bool,
    /// After conversion: PVHVM, xen-blkfront and xen-netfront exist.
    pub xen_hvm_possible: bool,
    moddir: String,
    present: HashSet<String>,
    guest: GuestModules,
    parsed: Arc<Initramfs>,
}

impl Survey {
    pub fn has(&self, driver: &str) -> bool {
        self.drivers.iter().any(|d| d.name == driver && d.state != DriverState::Missing)
    }

    /// Why a family is not possible, one line per missing piece, with the fix.
    pub fn missing_for(&self, family: Family) -> Vec<String> {
        let mut out = Vec::new();
        let label = family.label();
        if family == Family::XenHvm && !self.pvhvm {
            out.push(format!(
                "kernel is not built with PVHVM (CONFIG_XEN_PVHVM): {label} is not possible without a newer kernel"
            ));
        }
        for (n, _, req) in DRIVERS {
            if *req == Some(family) && !self.has(n) {
                out.push(format!("kernel has no {n} driver: {label} is not possible without a newer kernel"));
            }
        }
        out
    }
}

/// Surveys `kernel`: its drivers and its initramfs (nothing is written).
pub fn survey(fs: &Ext2Fs, kernel: &Kernel) -> Result<Survey, DriverError> {
    let path = kernel.initramfs.clone().ok_or_else(|| DriverError::NoInitramfs { kernel: kernel.version.clone() })?;
    let guest = GuestModules::load(fs, kernel)?;
    let on_disk = fs.resolve(&path)?.stat.size;
    if on_disk > crate::guest::initramfs::MAX_UNPACKED {
        return Err(DriverError::Initramfs { path, err: InitramfsError::FileTooLarge(on_disk) });
    }
    let (ird, sha256, size) = read_initramfs(fs, &path)?;
    let generator = detect_generator(&ird, &path)?;
    let moddir = initramfs_moddir(&ird, generator, &kernel.version);
    let present: HashSet<String> = ird
        .entries()
        .filter(|e| e.is_file() && e.path().contains(".ko"))
        .map(|e| kmod_index::module_name(e.path()))
        .collect();
    let mut drivers = Vec::new();
    for &(name, purpose, _) in DRIVERS {
        let key = name.replace('-', "_");
        let state = if guest.builtin.contains(&key) {
            DriverState::BuiltIn
        } else if present.contains(&key) {
            DriverState::Initramfs
        } else if guest.paths.contains_key(&key) {
            DriverState::Rootfs
        } else {
            DriverState::Missing
        };
        drivers.push(DriverRow { name: name.to_string(), purpose, state });
    }
    let pvhvm = pvhvm(fs, kernel)?;
    // xen-platform-pci is not a module at all on kernels where PVHVM builds it in.
    for d in drivers.iter_mut().filter(|d| d.name == "xen-platform-pci" && d.state == DriverState::Missing && pvhvm) {
        d.state = DriverState::BuiltIn;
    }
    let has = |n: &str| drivers.iter().any(|d| d.name == n && d.state != DriverState::Missing);
    let nitro_possible = has("nvme") && has("ena");
    let xen_hvm_possible = has("xen-blkfront") && has("xen-netfront") && pvhvm;
    let mut initramfs_modules: Vec<String> = present.iter().cloned().collect();
    initramfs_modules.sort();
    Ok(Survey {
        path,
        sha256,
        size,
        generator,
        compression: ird.compression(),
        drivers,
        initramfs_modules,
        pvhvm,
        nitro_possible,
        xen_hvm_possible,
        moddir,
        present,
        guest,
        parsed: Arc::new(ird),
    })
}

/// Works out what injection does for `kernel` (nothing is written).
pub fn analyze(
    fs: &Ext2Fs,
    kernel: &Kernel,
    target: Target,
    mode: InitramfsMode,
    rules: &super::playbook::InitramfsRules,
) -> Result<InitramfsPlan, DriverError> {
    let Survey {
        path,
        sha256,
        size,
        generator,
        compression,
        drivers,
        nitro_possible,
        xen_hvm_possible,
        moddir,
        present,
        guest,
        parsed,
        ..
    } = survey(fs, kernel)?;
    let has = |n: &str| drivers.iter().any(|d| d.name == n && d.state != DriverState::Missing);
    let possible = |f: Family| match f {
        Family::Nitro => nitro_possible,
        Family::XenHvm => xen_hvm_possible,
    };
    for &family in Family::of(target) {
        if !possible(family) {
            let driver = DRIVERS
                .iter()
                .find(|(n, _, req)| *req == Some(family) && !has(n))
                .map_or_else(|| "PVHVM (CONFIG_XEN_PVHVM)".to_string(), |(n, _, _)| n.to_string());
            let other = if family == Family::Nitro { Family::XenHvm } else { Family::Nitro };
            let remains = if possible(other) {
                format!("; {} remains possible: pass --target {}", other.label(), other.flag())
            } else {
                String::new()
            };
            return Err(DriverError::Missing {
                kernel: kernel.version.clone(),
                driver,
                target: family.label(),
                remains,
            });
        }
    }
    let purposes: &[Purpose] = match target {
        Target::Auto => &[Purpose::Xen, Purpose::Nitro, Purpose::Emulated],
        Target::Nitro => &[Purpose::Nitro, Purpose::Emulated],
        Target::Xen => &[Purpose::Xen, Purpose::Emulated],
    };
    let mut add_names = Vec::new();
    let mut seen = HashSet::new();
    let mut load = Vec::new();
    for d in drivers.iter().filter(|d| purposes.contains(&d.purpose)) {
        if matches!(d.state, DriverState::Rootfs | DriverState::Initramfs) {
            load.push(d.name.clone());
        }
        if d.state == DriverState::Rootfs {
            resolve(&d.name.replace('-', "_"), &mut |n| guest.needs(fs, n), &mut add_names, &mut seen)?;
        }
    }
    let add: Vec<String> =
        add_names.iter().filter(|n| !present.contains(*n)).filter_map(|n| guest.paths.get(n).cloned()).collect();
    let mut add_bytes = 0;
    for rel in &add {
        add_bytes += fs.try_resolve(&format!("{}/{rel}", guest.dir))?.map_or(0, |r| r.stat.size);
    }
    // The playbook's generator config wins when it describes the generator found.
    let preferred = rules.config.as_deref().filter(|_| rules.generator.as_deref() == Some(generator.name()));
    let persist = persist_edit(fs, generator, &load, preferred)?;
    Ok(InitramfsPlan {
        kernel: kernel.version.clone(),
        sha256,
        backup: format!("{path}{BACKUP_SUFFIX}"),
        path,
        generator,
        compression,
        drivers,
        add,
        load,
        nitro_possible,
        xen_hvm_possible,
        mode,
        size,
        add_bytes,
        moddir,
        guest_moddir: guest.dir,
        persist,
        parsed: Some(parsed),
    })
}

/// A kernel runs as a PVHVM guest unless its config says otherwise.
fn pvhvm(fs: &Ext2Fs, kernel: &Kernel) -> Result<bool, DriverError> {
    let Some(cfg) = &kernel.config else { return Ok(true) };
    let Some(text) = text(fs, cfg)? else { return Ok(true) };
    Ok(text.lines().any(|l| l == "CONFIG_XEN_PVHVM=y" || l == "CONFIG_XEN_PVHVM_GUEST=y"))
}

/// The generator config that keeps `names` in future initramfs builds.
fn persist_edit(
    fs: &Ext2Fs,
    generator: Generator,
    names: &[String],
    preferred: Option<&str>,
) -> Result<Option<PersistEdit>, DriverError> {
    if names.is_empty() {
        return Ok(None);
    }
    let preferred = match preferred {
        Some(p)
            if fs
                .is_kind(p.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d }), Kind::Dir)? =>
        {
            Some(p)
        }
        _ => None,
    };
    let (path, old) = match (preferred, generator) {
        (Some(p), _) => (p.to_string(), text(fs, p)?),
        (None, Generator::InitramfsTools) => {
            let p = "/etc/initramfs-tools/modules";
            (p.to_string(), text(fs, p)?)
        }
        (None, Generator::Dracut) => {
            let dir_ok = fs.is_kind("/etc/dracut.conf.d", Kind::Dir)?;
            let p = if dir_ok { "/etc/dracut.conf.d/pv2hvm.conf" } else { "/etc/dracut.conf" };
            (p.to_string(), text(fs, p)?)
        }
        (None, Generator::Mkinitrd) => {
            let p = "/etc/modprobe.conf";
            (p.to_string(), text(fs, p)?)
        }
    };
    let base = old.clone().unwrap_or_default();
    let mut new = base.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    match generator {
        Generator::InitramfsTools => {
            let have: HashSet<&str> = base.lines().map(str::trim).collect();
            let missing: Vec<&String> = names.iter().filter(|n| !have.contains(n.as_str())).collect();
            if missing.is_empty() {
                return Ok(None);
            }
            new.push_str("# Added by pv2hvm: PV-on-HVM, Nitro and emulated-disk drivers.\n");
            for n in missing {
                new.push_str(&format!("{n}\n"));
            }
        }
        Generator::Dracut => {
            new.push_str("# Added by pv2hvm: PV-on-HVM, Nitro and emulated-disk drivers.\n");
            new.push_str(&format!("add_drivers+=\" {} \"\n", names.join(" ")));
        }
        Generator::Mkinitrd => {
            let first = base.lines().filter(|l| l.trim_start().starts_with("alias scsi_hostadapter")).count();
            new.push_str("# Added by pv2hvm: block drivers for mkinitrd.\n");
            let block = names.iter().filter(|m| ["xen-blkfront", "nvme", "ata_piix", "sd_mod"].contains(&m.as_str()));
            for (n, name) in (first..).zip(block) {
                let suffix = if n == 0 { String::new() } else { n.to_string() };
                new.push_str(&format!("alias scsi_hostadapter{suffix} {name}\n"));
            }
        }
    }
    if new == base {
        return Ok(None);
    }
    let mut like = "/etc/fstab".to_string();
    for candidate in [path.as_str(), "/etc/dracut.conf", "/etc/initramfs-tools/initramfs.conf"] {
        if fs.is_kind(candidate, Kind::File)? {
            like = candidate.to_string();
            break;
        }
    }
    Ok(Some(PersistEdit { path, old, new, like }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_a_chain_dependencies_first_and_once() {
        // nvme -> nvme_core -> t10_pi -> crc_t10dif, and crc64_rocksoft known only from .modinfo.
        let deps: HashMap<&str, Vec<&str>> = HashMap::from([
            ("nvme", vec!["nvme_core"]),
            ("nvme_core", vec!["t10_pi"]),
            ("t10_pi", vec!["crc_t10dif", "crc64_rocksoft"]),
            ("crc_t10dif", vec![]),
            ("crc64_rocksoft", vec![]),
            ("ena", vec![]),
        ]);
        let mut needs = |n: &str| -> Result<Option<Vec<String>>, ()> {
            Ok(deps.get(n).map(|d| d.iter().map(|s| s.to_string()).collect()))
        };
        let (mut out, mut seen) = (Vec::new(), HashSet::new());
        resolve("nvme", &mut needs, &mut out, &mut seen).unwrap();
        resolve("ena", &mut needs, &mut out, &mut seen).unwrap();
        resolve("nvme_core", &mut needs, &mut out, &mut seen).unwrap();
        resolve("builtin_thing", &mut needs, &mut out, &mut seen).unwrap();
        assert_eq!(out, ["crc_t10dif", "crc64_rocksoft", "t10_pi", "nvme_core", "nvme", "ena"]);
    }

    #[test]
    fn modinfo_of_garbage_is_empty() {
        assert!(modinfo(b"not an elf").is_empty());
    }
}
