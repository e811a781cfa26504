//! Reads what conversion needs from a PV guest without changing it: the source shape, the
//! bootloader config and its default kernel, the kernels in /boot, and the files that are
//! rewritten for HVM.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bootcfg::{self, BOOT_CONFIGS, ConfigDialect};
use crate::disk::detect::{self, DetectError, SourceLayout};
use crate::ext2fs::{Ext2Error, Ext2Fs, Kind};
use crate::io::BlockSource;

/// Kernel config symbols of Xen-only (PV-only) kernels, which cannot boot as an HVM guest.
const XEN_ONLY_SYMBOLS: &[&str] = &["CONFIG_X86_XEN", "CONFIG_X86_64_XEN"];

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{image}: cannot read the filesystem")]
    Filesystem {
        image: String,
        #[source]
        err: Ext2Error,
    },
    #[error("{image}: no kernel found in /boot (looked for vmlinuz-*, vmlinux-*)")]
    NoKernel { image: String },
    #[error("{image}: no bootloader config found (looked for {})", BOOT_CONFIGS.iter().map(|c| c.0).collect::<Vec<_>>().join(", "))]
    NoBootConfig { image: String },
    #[error(
        "{image}: kernel {version} cannot run as an HVM guest: {config} sets {symbol}=y (a Xen PV-only kernel); install a kernel with PVHVM support first"
    )]
    XenOnlyKernel { image: String, version: String, config: String, symbol: String },
    #[error("{image}: {detail}")]
    DefaultEntryUnbootable { image: String, detail: String },
    #[error(
        "{image}: {config} is {size} bytes, more than the {MAX_CONFIG_BYTES} bytes pv2hvm reads from a bootloader config"
    )]
    ConfigTooLarge { image: String, config: String, size: u64 },
    #[error("{image}: {config} has {count} entries, more than the {MAX_BOOT_ENTRIES} pv2hvm accepts")]
    TooManyEntries { image: String, config: String, count: usize },
}

/// The largest bootloader config pv2hvm reads (README, "Limits").
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most boot entries a config may have (README, "Limits").
pub const MAX_BOOT_ENTRIES: usize = 1000;

/// One kernel found in /boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub version: String,
    pub image: String,
    pub config: Option<String>,
    pub initramfs: Option<String>,
    pub modules_dir: Option<String>,
}

/// The guest's bootloader config.
#[derive(Clone, Debug, Serialize)]
pub struct BootConfig {
    /// The path PV-GRUB reads, e.g. /boot/grub/menu.lst.
    pub path: String,
    /// The file it resolves to (menu.lst is often a symlink to grub.conf).
    pub real_path: String,
    pub dialect: ConfigDialect,
    #[serde(skip)]
    pub text: String,
    /// The kernel image the default entry boots, as written in the config.
    pub default_kernel: Option<String>,
    /// `root=` of the default entry.
    pub default_root: Option<String>,
    /// Why the default entry cannot boot (its kernel or initrd missing or not a regular
    /// file), naming the entries that could; conversion refuses it.
    #[serde(skip)]
    pub unbootable: Option<String>,
}

/// A guest file that conversion may rewrite, with its current content.
#[derive(Clone, Debug)]
pub struct GuestFile {
    pub path: String,
    pub text: String,
}

/// What inspection found.
#[derive(Clone, Debug)]
pub struct Guest {
    pub source: String,
    pub os: super::os::OsInfo,
    pub layout: SourceLayout,
    /// The bootloader config PV-GRUB reads; `None` when the guest has none.
    pub boot: Option<BootConfig>,
    pub kernels: Vec<Kernel>,
    /// The kernel the default entry boots, when it is one of `kernels`.
    pub default_kernel: Option<Kernel>,
    pub fstab: Option<GuestFile>,
    pub inittab: Option<GuestFile>,
    pub upstart_hvc0: Option<GuestFile>,
    pub has_upstart_ttys0: bool,
    pub persistent_net_rules: Option<String>,
    /// Set when the kernel to boot is Xen PV-only: conversion refuses, inspection reports it.
    pub xen_only: Option<XenOnly>,
}

/// A Xen PV-only kernel: its version, the config that says so, and the symbol set there.
#[derive(Clone, Debug)]
pub struct XenOnly {
    pub version: String,
    pub config: String,
    pub symbol: String,
}

impl Guest {
    /// Refuses a guest pv2hvm cannot convert: no kernel, no bootloader config, or a kernel
    /// that cannot run as an HVM guest. Returns the bootloader config of one it can.
    pub fn check_convertible(&self) -> Result<&BootConfig, InspectError> {
        if self.kernels.is_empty() {
            return Err(InspectError::NoKernel { image: self.source.clone() });
        }
        let Some(boot) = &self.boot else { return Err(InspectError::NoBootConfig { image: self.source.clone() }) };
        match &self.xen_only {
            Some(x) => Err(InspectError::XenOnlyKernel {
                image: self.source.clone(),
                version: x.version.clone(),
                config: x.config.clone(),
                symbol: x.symbol.clone(),
            }),
            None => match &boot.unbootable {
                Some(detail) => {
                    Err(InspectError::DefaultEntryUnbootable { image: self.source.clone(), detail: detail.clone() })
                }
                None => Ok(boot),
            },
        }
    }
}

/// Recognises the source and opens its root filesystem read-only, through the source.
pub fn open(src: &Arc<dyn BlockSource>) -> Result<(SourceLayout, Ext2Fs), InspectError> {
    let layout = detect::detect(src.as_ref())?;
    let fs = Ext2Fs::open_source(Arc::clone(src), layout.fs_offset)
        .map_err(|err| InspectError::Filesystem { image: src.describe(), err })?;
    Ok((layout, fs))
}

/// Inspects an already-open filesystem: what it holds, whether or not it can be converted
/// ([`Guest::check_convertible`] says).
pub fn inspect_fs(source: &str, layout: SourceLayout, fs: &Ext2Fs) -> Result<Guest, InspectError> {
    let fserr = |err| InspectError::Filesystem { image: source.to_string(), err };
    let kernels = find_kernels(fs).map_err(fserr)?;
    let mut boot = None;
    for (p, dialect) in BOOT_CONFIGS {
        if let Some(r) = fs.try_resolve(p).map_err(fserr)?
            && r.stat.kind == Kind::File
        {
            if r.stat.size > MAX_CONFIG_BYTES {
                return Err(InspectError::ConfigTooLarge {
                    image: source.to_string(),
                    config: p.to_string(),
                    size: r.stat.size,
                });
            }
            let text = String::from_utf8_lossy(&fs.read_file(&r.path).map_err(fserr)?).into_owned();
            let entries = bootcfg::parse(&text, *dialect);
            if entries.entries.len() > MAX_BOOT_ENTRIES {
                return Err(InspectError::TooManyEntries {
                    image: source.to_string(),
                    config: p.to_string(),
                    count: entries.entries.len(),
                });
            }
            let unbootable = unbootable_default(fs, p, &entries).map_err(fserr)?;
            let default = entries.default_entry();
            let default_kernel = default.and_then(|e| e.kernel_path()).map(str::to_string);
            let default_root = default.and_then(|e| e.root.clone());
            boot = Some(BootConfig {
                path: p.to_string(),
                real_path: r.path,
                dialect: *dialect,
                text,
                default_kernel,
                default_root,
                unbootable,
            });
            break;
        }
    }
    let default_kernel = boot.as_ref().and_then(|b| b.default_kernel.as_deref()).and_then(|img| {
        let base = img.rsplit('/').next().unwrap_or(img);
        kernels.iter().find(|k| k.image.rsplit('/').next() == Some(base)).cloned()
    });
    // The default entry's kernel must run as an HVM guest; without a known default, all must.
    let checked = default_kernel.clone().map(|k| vec![k]).unwrap_or_else(|| kernels.clone());
    let mut xen_only = None;
    for k in &checked {
        let Some(cfg) = &k.config else { continue };
        let text = String::from_utf8_lossy(&fs.read_file(cfg).map_err(fserr)?).into_owned();
        if let Some(symbol) = XEN_ONLY_SYMBOLS.iter().find(|s| text.lines().any(|l| l.trim() == format!("{s}=y"))) {
            xen_only = Some(XenOnly { version: k.version.clone(), config: cfg.clone(), symbol: symbol.to_string() });
            break;
        }
    }
    let read_opt = |p: &str| -> Result<Option<GuestFile>, InspectError> {
        Ok(fs
            .try_read_file(p)
            .map_err(fserr)?
            .map(|b| GuestFile { path: p.to_string(), text: String::from_utf8_lossy(&b).into_owned() }))
    };
    let rules = "/etc/udev/rules.d/70-persistent-net.rules";
    let persistent_net_rules = fs.is_kind(rules, Kind::File).map_err(fserr)?.then(|| rules.to_string());
    Ok(Guest {
        source: source.to_string(),
        os: super::os::detect(fs).map_err(fserr)?,
        layout,
        boot,
        default_kernel,
        kernels,
        fstab: read_opt("/etc/fstab")?,
        inittab: read_opt("/etc/inittab")?,
        upstart_hvc0: read_opt("/etc/init/hvc0.conf")?,
        has_upstart_ttys0: fs.try_resolve("/etc/init/ttyS0.conf").map_err(fserr)?.is_some(),
        persistent_net_rules,
        xen_only,
    })
}

/// Why a file an entry boots cannot be booted: missing, or not a regular file.
fn missing_or_odd(fs: &Ext2Fs, path: &str) -> Result<Option<&'static str>, Ext2Error> {
    Ok(match fs.try_resolve(path)? {
        None => Some("does not exist"),
        Some(r) if r.stat.kind != Kind::File => Some("is not a regular file"),
        Some(_) => None,
    })
}

/// Why `entry` cannot boot: its kernel or initrd missing or not a regular file.
fn entry_problem(fs: &Ext2Fs, entry: &bootcfg::BootEntry) -> Result<Option<String>, Ext2Error> {
    let Some(kernel) = entry.kernel_path() else { return Ok(Some("has no kernel line".into())) };
    if let Some(why) = missing_or_odd(fs, kernel)? {
        return Ok(Some(format!("boots kernel {kernel}, which {why}")));
    }
    if let Some(initrd) = entry.initrd.as_deref().map(|i| i.rsplit(')').next().unwrap_or(i))
        && let Some(why) = missing_or_odd(fs, initrd)?
    {
        return Ok(Some(format!("loads initrd {initrd}, which {why}")));
    }
    Ok(None)
}

/// Why the default entry of `config` cannot boot, naming the entries that could.
fn unbootable_default(fs: &Ext2Fs, config: &str, entries: &bootcfg::Entries) -> Result<Option<String>, Ext2Error> {
    let Some(default) = entries.default_entry() else { return Ok(None) };
    let Some(problem) = entry_problem(fs, default)? else { return Ok(None) };
    let mut usable = Vec::new();
    for e in &entries.entries {
        if !std::ptr::eq(e, default) && entry_problem(fs, e)?.is_none() {
            usable.push(format!("\"{}\"", e.title));
        }
    }
    let others = if usable.is_empty() {
        "no other entry has both its kernel and its initrd".to_string()
    } else {
        format!("entries whose kernel and initrd exist: {}; make one of them the default", usable.join(", "))
    };
    Ok(Some(format!("the default entry \"{}\" of {config} {problem}; {others}", default.title)))
}

fn find_kernels(fs: &Ext2Fs) -> Result<Vec<Kernel>, Ext2Error> {
    let Some(_) = fs.try_resolve("/boot")? else { return Ok(Vec::new()) };
    let entries = fs.list_dir("/boot")?;
    let names: Vec<&str> = entries.iter().filter(|(_, k)| *k == Kind::File).map(|(n, _)| n.as_str()).collect();
    // Looked up by name for every kernel: a set, so a /boot of many files stays linear.
    let present: std::collections::HashSet<&str> = names.iter().copied().collect();
    let mut out = Vec::new();
    for name in &names {
        let Some(version) = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-")) else { continue };
        if version.ends_with(".pv2hvm-orig") {
            continue;
        }
        let initramfs = [
            format!("initrd.img-{version}"),
            format!("initramfs-{version}.img"),
            format!("initrd-{version}.img"),
            format!("initrd-{version}"),
        ]
        .into_iter()
        .find(|c| present.contains(c.as_str()))
        .map(|c| format!("/boot/{c}"));
        let config = present.contains(format!("config-{version}").as_str()).then(|| format!("/boot/config-{version}"));
        let mut modules_dir = None;
        for d in [format!("/lib/modules/{version}"), format!("/usr/lib/modules/{version}")] {
            if fs.is_kind(&d, Kind::Dir)? {
                modules_dir = Some(d);
                break;
            }
        }
        out.push(Kernel {
            version: version.to_string(),
            image: format!("/boot/{name}"),
            config,
            initramfs,
            modules_dir,
        });
    }
    Ok(out)
}
