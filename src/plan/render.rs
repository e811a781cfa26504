//! The plan for people: text for a terminal and Markdown for change reviews (a summary
//! table, details folded).

use crate::disk::layout::{CorePlacement, MIB};
use crate::guest::bootcfg::ConfigDialect;
use crate::plan::Plan;
use crate::util::human;

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
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
        let root = match (self.disk.root_partition, self.disk.root_start) {
            (0, _) => "the root filesystem is the whole disk".to_string(),
            (n, start) if start % MIB == 0 => format!("partition {n} (root) at {} MiB", start / MIB),
            (n, start) => format!("partition {n} (root) at sector {}", start / 512),
        };
        let mut disk = format!(
            "{} layout, {}; {root}, {}",
            self.disk.kind,
            human(self.disk.disk_size),
            human(self.disk.root_size)
        );
        if let Some((start, len)) = self.disk.bios_boot {
            disk.push_str(&format!("; partition 2 (BIOS boot) at {} MiB, {} MiB", start / MIB, len / MIB));
        }
        line("disk", disk);
        let at = match self.disk.core_placement {
            CorePlacement::Gap => format!("at LBA {}", self.disk.core_lba),
            CorePlacement::BootLoaderInode => "in the boot-loader inode".to_string(),
        };
        line("core.img", self.disk.core_reason.clone());
        line(
            "bootloader",
            format!(
                "GRUB 2 i386-pc, core.img {at}, hands over to {} ({})",
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
                    ird.generator.name(),
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
                let how = match ird.mode {
                    crate::spec::InitramfsMode::Append => "in one appended archive",
                    crate::spec::InitramfsMode::Rebuild => "by rebuilding it",
                };
                line("", format!("adds {} {how} (original kept as {})", names.join(" "), ird.backup));
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
            s.push_str(&format!("  {} {}{backup}\n", e.action.verb(), e.path));
            for n in &e.notes {
                s.push_str(&format!("    - {n}\n"));
            }
        }
        if let Some(d) = &self.delta_estimate {
            s.push_str(&format!(
                "delta        about {} blocks of 512 KiB ({}) of the source change\n",
                d.blocks,
                human(d.upload_bytes)
            ));
        }
        if self.source_reads.bytes > 0 {
            s.push_str(&format!("read         {}\n", self.read_summary()));
        }
        if !self.notes.is_empty() {
            s.push_str("notes:\n");
            for n in &self.notes {
                s.push_str(&format!("  - {n}\n"));
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

    /// What making the plan read, in one line: bytes, requests, bytes read again, files.
    fn read_summary(&self) -> String {
        let r = &self.source_reads;
        let again = r.bytes.saturating_sub(r.distinct_bytes);
        let files: u64 = self.files_read.iter().map(|f| f.bytes).sum();
        format!(
            "{} in {} requests ({} of it read again); {} whole file(s), {}",
            human(r.bytes),
            r.requests,
            human(again),
            self.files_read.len(),
            human(files)
        )
    }

    pub fn render_markdown(&self) -> String {
        let fs = &self.source_layout.fs;
        let mut s = format!("## pv2hvm plan: `{}`\n\n| | |\n|---|---|\n", self.source);
        let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        row("Source", format!("{} {} `{}` label `{}`", self.source_layout.shape, fs.fs_type, fs.uuid, fs.label));
        row("OS", format!("{} (playbook `{}`)", self.os.pretty_name, self.playbook));
        row(
            "Disk",
            match self.disk.root_partition {
                0 => {
                    format!("{}, {}, the root filesystem is the whole disk", self.disk.kind, human(self.disk.disk_size))
                }
                n => format!(
                    "{}, {}, root partition {n} at sector {}",
                    self.disk.kind,
                    human(self.disk.disk_size),
                    self.disk.root_start / 512
                ),
            },
        );
        row("Bootloader", format!("GRUB 2 i386-pc, hands over to `{}`", self.bootloader.guest_config));
        row("core.img", self.disk.core_reason.clone());
        if let Some(d) = &self.delta_estimate {
            row("Delta", format!("about {} blocks of 512 KiB ({})", d.blocks, human(d.upload_bytes)));
        }
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
                self.ami.sriov_net_support.as_deref().unwrap_or("no")
            ),
        );
        let backups = self.edits.iter().filter(|e| e.backup.is_some()).count();
        row("Edits", format!("{} file(s), {} backed up as `.pv2hvm-orig`", self.edits.len(), backups));
        row("Warnings", self.warnings.len().to_string());
        s.push_str("\n<details><summary>File edits</summary>\n\n");
        for e in &self.edits {
            s.push_str(&format!("#### {} `{}`\n\n", e.action.verb(), e.path));
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
                s.push_str(&format!("| {} | {} | {} |\n", d.name, d.purpose.name(), d.state.label()));
            }
            s.push_str("\nModules added:\n\n");
            for a in &ird.add {
                s.push_str(&format!("- `{a}`\n"));
            }
            s.push_str("</details>\n");
        }
        if !self.files_read.is_empty() {
            s.push_str(&format!(
                "\n<details><summary>What the plan read: {}</summary>\n\n| file | bytes | why |\n|---|---|---|\n",
                self.read_summary()
            ));
            for f in &self.files_read {
                s.push_str(&format!("| `{}` | {} | {} |\n", f.path, f.bytes, f.why));
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
