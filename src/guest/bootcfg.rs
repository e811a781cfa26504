//! Reading the guest's bootloader config: which file PV-GRUB reads, its dialect, and its
//! entries with their kernel, initrd, `root=` and consoles. One parser serves inspection,
//! planning and reports.

use serde::{Deserialize, Serialize};

/// Which dialect the guest's config is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigDialect {
    /// GRUB legacy menu.lst / grub.conf, read through `legacy_configfile`.
    Legacy,
    /// GRUB 2 grub.cfg, read through `configfile`.
    Grub2,
}

/// Bootloader configs PV-GRUB and GRUB 2 read, in the order they are preferred.
pub const BOOT_CONFIGS: &[(&str, ConfigDialect)] = &[
    ("/boot/grub/menu.lst", ConfigDialect::Legacy),
    ("/boot/grub/grub.conf", ConfigDialect::Legacy),
    ("/boot/grub/grub.cfg", ConfigDialect::Grub2),
    ("/boot/grub2/grub.cfg", ConfigDialect::Grub2),
];

/// One boot entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    pub title: String,
    /// The kernel image as written, `(hd0)` prefix included.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub root: Option<String>,
    pub console: Vec<String>,
}

impl BootEntry {
    fn new(title: &str) -> Self {
        BootEntry { title: title.to_string(), kernel: None, initrd: None, root: None, console: Vec::new() }
    }

    /// The kernel image path without a GRUB device prefix such as `(hd0)`.
    pub fn kernel_path(&self) -> Option<&str> {
        self.kernel.as_deref().map(|k| k.rsplit(')').next().unwrap_or(k))
    }
}

/// A parsed config: its entries and the index of the default one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries {
    pub default: usize,
    pub entries: Vec<BootEntry>,
}

impl Entries {
    /// The default entry, or the first when `default` is out of range.
    pub fn default_entry(&self) -> Option<&BootEntry> {
        self.entries.get(self.default).or_else(|| self.entries.first())
    }
}

/// Parses the entries of a bootloader config.
pub fn parse(text: &str, dialect: ConfigDialect) -> Entries {
    let mut entries: Vec<BootEntry> = Vec::new();
    let mut default = 0;
    for line in text.lines() {
        let t = line.trim();
        let (kw, rest) = t
            .split_once(|c: char| c.is_whitespace() || (dialect == ConfigDialect::Legacy && c == '='))
            .unwrap_or((t, ""));
        let rest = rest.trim().trim_start_matches('=').trim();
        match (dialect, kw) {
            (ConfigDialect::Legacy, "default") => {
                default = rest.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0)
            }
            (ConfigDialect::Legacy, "title") => entries.push(BootEntry::new(rest)),
            (ConfigDialect::Grub2, "menuentry") => {
                let title = rest.trim_start_matches(['\'', '"']).split(['\'', '"']).next().unwrap_or("");
                entries.push(BootEntry::new(title));
            }
            (_, "kernel" | "linux" | "linux16" | "linuxefi") => {
                if entries.is_empty() {
                    entries.push(BootEntry::new(""));
                }
                let Some(e) = entries.last_mut() else { continue };
                let mut words = rest.split_whitespace();
                e.kernel = words.next().map(str::to_string);
                for w in words {
                    if let Some(r) = w.strip_prefix("root=")
                        && e.root.is_none()
                    {
                        e.root = Some(r.to_string());
                    }
                    if let Some(c) = w.strip_prefix("console=") {
                        e.console.push(c.to_string());
                    }
                }
            }
            (_, "initrd" | "initrd16" | "initrdefi") => {
                if let Some(e) = entries.last_mut() {
                    e.initrd = rest.split_whitespace().next().map(str::to_string);
                }
            }
            _ => {}
        }
    }
    Entries { default, entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_entry_legacy_and_grub2() {
        let menu = "default 1\ntitle a\nroot (hd0)\nkernel /boot/vmlinuz-a root=/dev/xvda1\ntitle b\nkernel (hd0)/boot/vmlinuz-b root=LABEL=/ ro\n";
        let e = parse(menu, ConfigDialect::Legacy);
        let d = e.default_entry().unwrap();
        assert_eq!((d.kernel_path(), d.root.as_deref()), (Some("/boot/vmlinuz-b"), Some("LABEL=/")));
        let menu = "default=0\ntitle a\nkernel /vmlinuz-a root=/dev/xvde1\n";
        let e = parse(menu, ConfigDialect::Legacy);
        let d = e.default_entry().unwrap();
        assert_eq!((d.kernel_path(), d.root.as_deref()), (Some("/vmlinuz-a"), Some("/dev/xvde1")));
        let cfg = "set default=0\nmenuentry 'x' {\n  linux /boot/vmlinuz-x root=UUID=u ro\n}\n";
        let e = parse(cfg, ConfigDialect::Grub2);
        let d = e.default_entry().unwrap();
        assert_eq!((d.kernel_path(), d.root.as_deref()), (Some("/boot/vmlinuz-x"), Some("UUID=u")));
        assert_eq!(parse("", ConfigDialect::Legacy).default_entry(), None);
        let e = parse("default 7\ntitle only\nkernel /k\n", ConfigDialect::Legacy);
        assert_eq!(e.default_entry().unwrap().title, "only", "an out-of-range default falls back to the first");
    }

    #[test]
    fn entries_of_both_dialects() {
        let e = parse(
            "default=1\ntitle A\nroot (hd0)\nkernel /vmlinuz-a root=/dev/xvda1 console=hvc0\ninitrd /initrd-a\ntitle B\nkernel /vmlinuz-b root=LABEL=/ console=tty0 console=ttyS0,115200n8\n",
            ConfigDialect::Legacy,
        );
        assert_eq!(e.default, 1);
        assert_eq!(e.entries.len(), 2);
        assert_eq!(e.entries[0].title, "A");
        assert_eq!(e.entries[0].initrd.as_deref(), Some("/initrd-a"));
        assert_eq!(e.entries[0].root.as_deref(), Some("/dev/xvda1"));
        assert_eq!(e.entries[1].console, ["tty0", "ttyS0,115200n8"]);
        let e = parse(
            "menuentry 'Debian' --class x {\n linux /vmlinuz root=UUID=u ro\n initrd /initrd\n}\n",
            ConfigDialect::Grub2,
        );
        assert_eq!(e.entries[0].title, "Debian");
        assert_eq!(e.entries[0].kernel.as_deref(), Some("/vmlinuz"));
    }
}
