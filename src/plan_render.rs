//! The plan as Markdown for change reviews (a summary table, details folded), and saved
//! plans: writing one atomically and checking a source against it (drift).

use std::path::Path;

use crate::disk::layout::MIB;
use crate::plan::{EditAction, Plan, SCHEMA_VERSION};

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl Plan {
    pub fn render_markdown(&self) -> String {
        let fs = &self.source_layout.fs;
        let mut s = format!("## pv2hvm plan: `{}`\n\n| | |\n|---|---|\n", self.source);
        let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        row("Source", format!("{} {} `{}` label `{}`", self.source_layout.shape, fs.fs_type, fs.uuid, fs.label));
        row("OS", format!("{} (playbook `{}`)", self.os.pretty_name, self.playbook));
        row(
            "Disk",
            format!(
                "{}, {} GiB, root partition 1 at {} MiB",
                self.disk.kind,
                self.disk.disk_size >> 30,
                self.disk.root_start / MIB
            ),
        );
        row("Bootloader", format!("GRUB 2 i386-pc, hands over to `{}`", self.bootloader.guest_config));
        if let Some(k) = &self.default_kernel {
            row("Kernel", format!("`{}`", k.version));
        }
        for ird in &self.initramfs {
            row("Xen HVM", if ird.xen_hvm_possible { "ready".into() } else { "not possible".into() });
            row("Nitro", if ird.nitro_possible { "ready".into() } else { "not possible".into() });
            let added: Vec<&str> = ird.add.iter().map(|p| p.rsplit('/').next().unwrap_or(p)).collect();
            row("Initramfs", format!("`{}`: adds {} module(s), loads {}", ird.path, added.len(), ird.load.join(" ")));
        }
        row(
            "AMI",
            format!(
                "{}, {}, {}, ENA {}, SR-IOV {}",
                self.ami.architecture,
                self.ami.virtualization_type,
                self.ami.boot_mode,
                yes(self.ami.ena_support),
                self.ami.sriov_net_support.unwrap_or("no")
            ),
        );
        let backups = self.edits.iter().filter(|e| e.backup.is_some()).count();
        row("Edits", format!("{} file(s), {} backed up as `.pv2hvm-orig`", self.edits.len(), backups));
        row("Warnings", self.warnings.len().to_string());
        s.push_str("\n<details><summary>File edits</summary>\n\n");
        for e in &self.edits {
            let verb = match e.action {
                EditAction::Rewrite => "rewrite",
                EditAction::Create => "create",
                EditAction::MoveAside => "move aside",
            };
            s.push_str(&format!("#### {verb} `{}`\n\n", e.path));
            if let Some(b) = &e.backup {
                s.push_str(&format!("Original kept as `{b}`.\n\n"));
            }
            for n in &e.notes {
                s.push_str(&format!("- {n}\n"));
            }
            if !e.diff.is_empty() {
                s.push_str(&format!("\n```diff\n{}```\n", e.diff));
            }
            s.push('\n');
        }
        s.push_str("</details>\n");
        for ird in &self.initramfs {
            s.push_str(&format!(
                "\n<details><summary>Drivers of kernel {}</summary>\n\n| driver | purpose | state |\n|---|---|---|\n",
                ird.kernel
            ));
            for d in &ird.drivers {
                s.push_str(&format!("| {} | {} | {:?} |\n", d.name, d.purpose, d.state));
            }
            s.push_str("\nModules added:\n\n");
            for a in &ird.add {
                s.push_str(&format!("- `{a}`\n"));
            }
            s.push_str("</details>\n");
        }
        if !self.warnings.is_empty() {
            s.push_str("\n<details><summary>Warnings</summary>\n\n");
            for w in &self.warnings {
                s.push_str(&format!("- {w}\n"));
            }
            s.push_str("</details>\n");
        }
        s
    }
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("{path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: not a pv2hvm plan: {why}")]
    Invalid { path: String, why: String },
    #[error("{path}: plan schema_version {found} is not supported (this pv2hvm reads {SCHEMA_VERSION})")]
    Version { path: String, found: u64 },
}

/// A saved plan and the options it records.
pub struct SavedPlan {
    pub json: serde_json::Value,
    pub layout: crate::disk::layout::LayoutKind,
    pub size_gib: u64,
    pub target: crate::drivers::Target,
    pub all_kernels: bool,
    pub keep_initramfs: bool,
}

pub fn load_saved(path: &Path) -> Result<SavedPlan, SavedPlanError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| SavedPlanError::Read { path: shown.clone(), err })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SavedPlanError::Invalid { path: shown.clone(), why: e.to_string() })?;
    let invalid = |why: &str| SavedPlanError::Invalid { path: shown.clone(), why: why.to_string() };
    let version = json["schema_version"].as_u64().ok_or_else(|| invalid("no schema_version"))?;
    if version != u64::from(SCHEMA_VERSION) {
        return Err(SavedPlanError::Version { path: shown, found: version });
    }
    let o = &json["options"];
    let layout = match o["layout"].as_str() {
        Some("mbr") => crate::disk::layout::LayoutKind::Mbr,
        Some("gpt") => crate::disk::layout::LayoutKind::Gpt,
        _ => return Err(invalid("options.layout is not mbr or gpt")),
    };
    let target = match o["target"].as_str() {
        Some("auto") => crate::drivers::Target::Auto,
        Some("nitro") => crate::drivers::Target::Nitro,
        Some("xen") => crate::drivers::Target::Xen,
        _ => return Err(invalid("options.target is not auto, nitro or xen")),
    };
    Ok(SavedPlan {
        layout,
        size_gib: o["size_gib"].as_u64().ok_or_else(|| invalid("no options.size_gib"))?,
        target,
        all_kernels: o["all_kernels"].as_bool().unwrap_or(false),
        keep_initramfs: o["keep_initramfs"].as_bool().unwrap_or(false),
        json,
    })
}

/// Compares a plan made now with a saved one; `Err` says what drifted.
pub fn check_drift(saved: &serde_json::Value, now: &Plan) -> Result<(), String> {
    let mut now = serde_json::to_value(now).expect("plans serialise");
    let mut saved = saved.clone();
    let saved_uuid = saved["source_layout"]["fs"]["uuid"].as_str().unwrap_or("").to_string();
    let now_uuid = now["source_layout"]["fs"]["uuid"].as_str().unwrap_or("").to_string();
    if saved_uuid != now_uuid {
        return Err(format!("the filesystem UUID is {now_uuid}, the plan was made for {saved_uuid}"));
    }
    let files = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for list in ["edits", "initramfs"] {
            for e in v[list].as_array().into_iter().flatten() {
                if let (Some(p), Some(h)) = (e["path"].as_str(), e["sha256"].as_str()) {
                    out.push((p.to_string(), h.to_string()));
                }
            }
        }
        out
    };
    let now_files = files(&now);
    for (path, hash) in files(&saved) {
        match now_files.iter().find(|(p, _)| *p == path) {
            Some((_, h)) if *h == hash => {}
            Some(_) => return Err(format!("{path} changed since the plan was made")),
            None => return Err(format!("{path} is no longer edited the same way")),
        }
    }
    for v in [&mut now, &mut saved] {
        if let Some(o) = v.as_object_mut() {
            o.remove("source");
            o.remove("destination");
        }
    }
    if now != saved {
        let key = now
            .as_object()
            .and_then(|o| o.iter().find(|(k, v)| saved.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()))
            .unwrap_or_else(|| "?".into());
        return Err(format!("the plan made now differs in `{key}`"));
    }
    Ok(())
}
