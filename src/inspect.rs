//! Reads what conversion needs from a PV guest without changing it: the source shape, the
//! bootloader config and its default kernel, the kernels in /boot, and the files that are
//! rewritten for HVM.

use std::sync::Arc;

use serde::Serialize;

use crate::blockdev::BlockSource;
use crate::disk::detect::{self, DetectError, SourceLayout};
use crate::ext2fs::{Ext2Error, Ext2Fs, Kind};
use crate::grub::ConfigDialect;

/// Bootloader configs PV-GRUB and GRUB 2 read, in the order they are preferred.
pub const BOOT_CONFIGS: &[(&str, ConfigDialect)] = &[
    ("/boot/grub/menu.lst", ConfigDialect::Legacy),
    ("/boot/grub/grub.conf", ConfigDialect::Legacy),
    ("/boot/grub/grub.cfg", ConfigDialect::Grub2),
    ("/boot/grub2/grub.cfg", ConfigDialect::Grub2),
];

/// Kernel config symbols of Xen-only (PV-only) kernels, which cannot boot as an HVM guest.
const XEN_ONLY_SYMBOLS: &[&str] = &["CONFIG_X86_XEN", "CONFIG_X86_64_XEN"];

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{image}: cannot read the filesystem: {err}")]
    Filesystem { image: String, err: Ext2Error },
    #[error("{image}: no kernel found in /boot (looked for vmlinuz-*, vmlinux-*)")]
    NoKernel { image: String },
    #[error("{image}: no bootloader config found (looked for {})", BOOT_CONFIGS.iter().map(|c| c.0).collect::<Vec<_>>().join(", "))]
    NoBootConfig { image: String },
    #[error(
        "{image}: kernel {version} cannot run as an HVM guest: {config} sets {symbol}=y (a Xen PV-only kernel); install a kernel with PVHVM support first"
    )]
    XenOnlyKernel { image: String, version: String, config: String, symbol: String },
}

/// One kernel found in /boot.
#[derive(Clone, Debug, Serialize)]
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
    pub os: crate::guestos::OsInfo,
    pub layout: SourceLayout,
    pub boot: BootConfig,
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
    /// Refuses a guest whose kernel cannot run as an HVM guest.
    pub fn check_convertible(&self) -> Result<(), InspectError> {
        match &self.xen_only {
            Some(x) => Err(InspectError::XenOnlyKernel {
                image: self.source.clone(),
                version: x.version.clone(),
                config: x.config.clone(),
                symbol: x.symbol.clone(),
            }),
            None => Ok(()),
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

/// Inspects an already-open filesystem (the source, or the converted copy).
pub fn inspect_fs(source: &str, layout: SourceLayout, fs: &Ext2Fs) -> Result<Guest, InspectError> {
    let fserr = |err| InspectError::Filesystem { image: source.to_string(), err };
    let kernels = find_kernels(fs).map_err(fserr)?;
    if kernels.is_empty() {
        return Err(InspectError::NoKernel { image: source.to_string() });
    }
    let mut boot = None;
    for (p, dialect) in BOOT_CONFIGS {
        if let Some(r) = fs.try_resolve(p).map_err(fserr)?
            && r.stat.kind == Kind::File
        {
            let text = String::from_utf8_lossy(&fs.read_file(&r.path).map_err(fserr)?).into_owned();
            let (default_kernel, default_root) = default_entry(&text, *dialect);
            boot = Some(BootConfig {
                path: p.to_string(),
                real_path: r.path,
                dialect: *dialect,
                text,
                default_kernel,
                default_root,
            });
            break;
        }
    }
    let boot = boot.ok_or_else(|| InspectError::NoBootConfig { image: source.to_string() })?;
    let default_kernel = boot.default_kernel.as_deref().and_then(|img| {
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
    let persistent_net_rules = ["/etc/udev/rules.d/70-persistent-net.rules"]
        .iter()
        .find(|p| matches!(fs.try_resolve(p), Ok(Some(r)) if r.stat.kind == Kind::File))
        .map(|p| p.to_string());
    Ok(Guest {
        source: source.to_string(),
        os: crate::guestos::detect(fs).map_err(fserr)?,
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

fn find_kernels(fs: &Ext2Fs) -> Result<Vec<Kernel>, Ext2Error> {
    let Some(_) = fs.try_resolve("/boot")? else { return Ok(Vec::new()) };
    let entries = fs.list_dir("/boot")?;
    let names: Vec<&str> = entries.iter().filter(|(_, k)| *k == Kind::File).map(|(n, _)| n.as_str()).collect();
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
        .find(|c| names.contains(&c.as_str()))
        .map(|c| format!("/boot/{c}"));
        let config = names.contains(&format!("config-{version}").as_str()).then(|| format!("/boot/config-{version}"));
        let modules_dir = [format!("/lib/modules/{version}"), format!("/usr/lib/modules/{version}")]
            .into_iter()
            .find(|d| matches!(fs.try_resolve(d), Ok(Some(r)) if r.stat.kind == Kind::Dir));
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

/// The kernel image and `root=` of a config's default entry.
pub fn default_entry(text: &str, dialect: ConfigDialect) -> (Option<String>, Option<String>) {
    let mut entries: Vec<Vec<&str>> = Vec::new();
    let mut default = 0usize;
    for line in text.lines() {
        let t = line.trim();
        let mut words = t.split(|c: char| c.is_whitespace() || (dialect == ConfigDialect::Legacy && c == '='));
        let kw = words.next().unwrap_or("");
        match (dialect, kw) {
            (ConfigDialect::Legacy, "default") => {
                default = words.find(|w| !w.is_empty()).and_then(|w| w.parse().ok()).unwrap_or(0)
            }
            (ConfigDialect::Legacy, "title") | (ConfigDialect::Grub2, "menuentry") => entries.push(Vec::new()),
            (_, "kernel" | "linux" | "linux16" | "linuxefi") => {
                if entries.is_empty() {
                    entries.push(Vec::new());
                }
                entries.last_mut().expect("entry").push(t);
            }
            _ => {}
        }
    }
    let entry = entries.get(default).or_else(|| entries.first());
    let Some(line) = entry.and_then(|e| e.first()) else { return (None, None) };
    let mut words = line.split_whitespace().skip(1);
    let image = words.next().map(|w| w.rsplit(')').next().unwrap_or(w).to_string());
    let root = line.split_whitespace().find_map(|w| w.strip_prefix("root=")).map(str::to_string);
    (image, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_entry_legacy_and_grub2() {
        let menu = "default 1\ntitle a\nroot (hd0)\nkernel /boot/vmlinuz-a root=/dev/xvda1\ntitle b\nkernel (hd0)/boot/vmlinuz-b root=LABEL=/ ro\n";
        assert_eq!(
            default_entry(menu, ConfigDialect::Legacy),
            (Some("/boot/vmlinuz-b".into()), Some("LABEL=/".into()))
        );
        let menu = "default=0\ntitle a\nkernel /vmlinuz-a root=/dev/xvde1\n";
        assert_eq!(default_entry(menu, ConfigDialect::Legacy), (Some("/vmlinuz-a".into()), Some("/dev/xvde1".into())));
        let cfg = "set default=0\nmenuentry 'x' {\n  linux /boot/vmlinuz-x root=UUID=u ro\n}\n";
        assert_eq!(default_entry(cfg, ConfigDialect::Grub2), (Some("/boot/vmlinuz-x".into()), Some("UUID=u".into())));
        assert_eq!(default_entry("", ConfigDialect::Legacy), (None, None));
    }
}
