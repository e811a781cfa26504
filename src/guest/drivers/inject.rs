//! Writing the drivers into an initramfs: the modules and their indexes, and the load lists
//! of the initramfs's generator, either in one appended archive (the original bytes kept) or
//! by rebuilding the archive that holds `init`.

use std::collections::HashSet;
use std::io::Write;

use super::{DriverError, Generator, GuestModules, InitramfsPlan, text};
use crate::ext2fs::Ext2Fs;
use crate::guest::initramfs::{Initramfs, Level, Segment, kmod_index};
use crate::guest::inspect::Kernel;
use crate::spec::InitramfsMode;

/// Writes the new initramfs for a plan into `out`, reading modules from the guest and the
/// original initramfs again as a stream; returns its size.
pub fn rebuild(fs: &Ext2Fs, plan: &InitramfsPlan, out: &mut dyn Write) -> Result<u64, DriverError> {
    let path = &plan.path;
    // The plan's unpacked copy serves when the file is still the one it read.
    let mut ird = match &plan.parsed {
        Some(parsed) if fs.try_sha256_file(path)?.as_deref() == Some(plan.sha256.as_str()) => Initramfs::clone(parsed),
        _ => super::read_initramfs(fs, path)?.0,
    };
    let guest = GuestModules::load(
        fs,
        &Kernel {
            version: plan.kernel.clone(),
            image: String::new(),
            config: None,
            initramfs: None,
            modules_dir: Some(plan.guest_moddir.clone()),
        },
    )?;
    let moddir = plan.moddir.clone();
    let read_text = |ird: &Initramfs, name: &str| {
        ird.find(&format!("{moddir}/{name}"))
            .and_then(|e| e.data())
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default()
    };
    let mut dep = read_text(&ird, "modules.dep");
    let mut alias = read_text(&ird, "modules.alias");
    let mut symbols = read_text(&ird, "modules.symbols");
    let mut order = read_text(&ird, "modules.order");
    let added: HashSet<String> = plan.add.iter().map(|p| kmod_index::module_name(p)).collect();
    let guest_alias = text(fs, &format!("{}/modules.alias", guest.dir))?.unwrap_or_default();
    let guest_symbols = text(fs, &format!("{}/modules.symbols", guest.dir))?.unwrap_or_default();
    // The load lists extend files the initramfs may already have (wherever they are in it).
    let original = |p: &str| ird.find(p).and_then(|e| Some((e.data.clone()?, e.mode)));
    let originals = LoadListFiles { conf_modules: original("conf/modules"), init: original("init") };
    let have_builtin: Vec<bool> =
        BUILTIN_INDEXES.iter().map(|f| ird.find(&format!("{moddir}/{f}")).is_some()).collect();
    let seg = match plan.mode {
        InitramfsMode::Append => {
            let compression = ird.compression();
            ird.append_segment(compression, Level::Fast)
        }
        InitramfsMode::Rebuild => ird.main_segment(),
    };
    for rel in &plan.add {
        let bytes = fs.read_file(&format!("{}/{rel}", guest.dir))?;
        let name = kmod_index::module_name(rel);
        let dest = if plan.generator == Generator::Mkinitrd {
            format!("lib/{}", rel.rsplit('/').next().unwrap_or(rel))
        } else {
            format!("{moddir}/{rel}")
        };
        seg.put_file(&dest, 0o644, bytes);
        if let Some(line) = guest.dep_text.lines().find(|l| l.split_once(':').is_some_and(|(p, _)| p == rel)) {
            push_line(&mut dep, line);
        }
        push_line(&mut order, rel);
        for line in guest_alias.lines().filter(|l| l.split_whitespace().nth(2) == Some(name.as_str())) {
            push_line(&mut alias, line);
        }
        for line in guest_symbols.lines().filter(|l| l.split_whitespace().nth(2) == Some(name.as_str())) {
            push_line(&mut symbols, line);
        }
    }
    if plan.generator != Generator::Mkinitrd && !added.is_empty() {
        let prio = kmod_index::dep_order(&dep);
        seg.put_file(&format!("{moddir}/modules.dep"), 0o644, dep.clone().into_bytes());
        seg.put_file(&format!("{moddir}/modules.dep.bin"), 0o644, kmod_index::dep_index(&dep));
        seg.put_file(&format!("{moddir}/modules.alias"), 0o644, alias.clone().into_bytes());
        seg.put_file(&format!("{moddir}/modules.alias.bin"), 0o644, kmod_index::alias_index(&alias, &prio));
        seg.put_file(&format!("{moddir}/modules.symbols"), 0o644, symbols.clone().into_bytes());
        seg.put_file(&format!("{moddir}/modules.symbols.bin"), 0o644, kmod_index::symbols_index(&symbols, &prio));
        seg.put_file(&format!("{moddir}/modules.order"), 0o644, order.into_bytes());
        for (f, have) in BUILTIN_INDEXES.iter().zip(have_builtin) {
            if !have && let Some(b) = fs.try_read_file(&format!("{}/{f}", guest.dir))? {
                seg.put_file(&format!("{moddir}/{f}"), 0o644, b);
            }
        }
    }
    add_load_list(seg, plan, originals);
    let mut source = fs.open_file(path)?;
    let written = ird.write_to(&mut source, out);
    if let Some(err) = source.take_error() {
        return Err(err.into());
    }
    written.map_err(|err| DriverError::Encode { path: path.clone(), err })
}

fn push_line(text: &mut String, line: &str) {
    if text.lines().any(|l| l == line) {
        return;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

/// Makes the initramfs load the plan's modules at boot, the way its generator does.
/// Indexes of built-in modules an initramfs needs beside modules.dep.
const BUILTIN_INDEXES: [&str; 3] = ["modules.builtin", "modules.builtin.bin", "modules.builtin.modinfo"];

/// The initramfs's own files that a load list extends: data and mode.
struct LoadListFiles {
    conf_modules: Option<(Vec<u8>, u32)>,
    init: Option<(Vec<u8>, u32)>,
}

fn add_load_list(seg: &mut Segment, plan: &InitramfsPlan, originals: LoadListFiles) {
    match plan.generator {
        Generator::InitramfsTools => {
            let mut text =
                originals.conf_modules.map(|(d, _)| String::from_utf8_lossy(&d).into_owned()).unwrap_or_default();
            for n in &plan.load {
                push_line(&mut text, n);
            }
            seg.put_file("conf/modules", 0o644, text.into_bytes());
        }
        Generator::Dracut => {
            let list: String = plan.load.iter().map(|n| format!("{n}\n")).collect();
            seg.put_file("etc/modules-load.d/pv2hvm.conf", 0o644, list.into_bytes());
            let cmdline = format!("rd.driver.pre={}\n", plan.load.join(","));
            seg.put_file("etc/cmdline.d/50-pv2hvm.conf", 0o644, cmdline.into_bytes());
        }
        Generator::Mkinitrd => {
            let Some((data, mode)) = originals.init else { return };
            let text = String::from_utf8_lossy(&data).into_owned();
            let files: Vec<String> = plan.add.iter().map(|p| p.rsplit('/').next().unwrap_or(p).to_string()).collect();
            seg.put_file("init", mode, nash_insmod(&text, &files).into_bytes());
        }
    }
}

/// Inserts `insmod /lib/<file>` lines into a nash init script after its last insmod (or
/// before it makes the root device), dependencies first as given.
pub fn nash_insmod(init: &str, files: &[String]) -> String {
    let lines: Vec<&str> = init.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("insmod "))
        .map(|i| i + 1)
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.trim_start().starts_with("mkblkdevs") || l.trim_start().starts_with("mkrootdev"))
        })
        .unwrap_or(lines.len());
    let mut out: Vec<String> = lines[..at].iter().map(|s| s.to_string()).collect();
    for f in files {
        let line = format!("insmod /lib/{f}");
        if !lines.contains(&line.as_str()) {
            out.push(format!("echo \"Loading {} module\"", f.trim_end_matches(".ko")));
            out.push(line);
        }
    }
    out.extend(lines[at..].iter().map(|s| s.to_string()));
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nash_insmod_goes_after_the_last_insmod() {
        let init = "#!/bin/nash\nmount -t proc /proc /proc\necho \"Loading ext3.ko module\"\ninsmod /lib/ext3.ko\nmkblkdevs\nmkrootdev -t ext3 -o defaults,ro sda1\n";
        let out = nash_insmod(init, &["nvme-core.ko".into(), "nvme.ko".into()]);
        assert_eq!(
            out,
            "#!/bin/nash\nmount -t proc /proc /proc\necho \"Loading ext3.ko module\"\ninsmod /lib/ext3.ko\necho \"Loading nvme-core module\"\ninsmod /lib/nvme-core.ko\necho \"Loading nvme module\"\ninsmod /lib/nvme.ko\nmkblkdevs\nmkrootdev -t ext3 -o defaults,ro sda1\n"
        );
        assert_eq!(nash_insmod(&out, &["nvme.ko".into()]), out, "idempotent");
    }

    #[test]
    fn push_line_appends_once() {
        let mut t = String::from("a");
        push_line(&mut t, "b");
        push_line(&mut t, "b");
        assert_eq!(t, "a\nb\n");
    }
}
