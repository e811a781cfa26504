//! Rewrites a bootloader config (GRUB legacy menu.lst/grub.conf or GRUB 2 grub.cfg) for HVM:
//! `(hd0)` becomes `(hd0,0)` when the root filesystem moves into partition 1 (a whole-disk
//! filesystem keeps `(hd0)`), device-name `root=` becomes `root=UUID=`, and the Xen console
//! becomes tty0 plus ttyS0. Ubuntu's update-grub-legacy-ec2 magic comments (`# groot=`,
//! `# kopt=`, `# defoptions=`) get the same.

use super::{Rewrite, is_device_name};

/// Facts the rewrite needs.
pub struct BootFacts<'a> {
    pub fs_uuid: &'a str,
    /// Arguments to add to every kernel line (and `# kopt=`) that lacks them (playbooks).
    pub extra_args: &'a [String],
    /// The filesystem stays the whole disk (in place): `(hd0)` still names it.
    pub whole_disk: bool,
}

pub const HVM_CONSOLE: [&str; 2] = ["console=tty0", "console=ttyS0,115200n8"];

const KERNEL_KEYWORDS: &[&str] = &["kernel", "linux", "linux16", "linuxefi"];
const MAGIC_ARGS: &[&str] = &["# kopt=", "# defoptions=", "# altoptions=", "# xenkopt="];

pub fn rewrite(text: &str, facts: &BootFacts) -> Rewrite {
    let mut out = Rewrite::default();
    let mut lines = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let (body, eol) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut new = body.to_string();
        if !facts.whole_disk && new.contains("(hd0)") {
            new = new.replace("(hd0)", "(hd0,0)");
            out.notes.push(format!("line {}: (hd0) -> (hd0,0)", n + 1));
        }
        let trimmed = new.trim_start();
        let keyword = trimmed.split_whitespace().next().unwrap_or("");
        // A kernel line without an image is left alone: there is nothing to boot.
        if KERNEL_KEYWORDS.contains(&keyword) && trimmed.split_whitespace().nth(1).is_some() {
            let indent = &new[..new.len() - trimmed.len()];
            let rest = trimmed[keyword.len()..].trim_start();
            let (image, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let (args, notes) = rewrite_args(args, facts.fs_uuid);
            let (args, more) = add_args(&args, facts.extra_args);
            for note in notes.into_iter().chain(more) {
                out.notes.push(format!("line {}: {note}", n + 1));
            }
            let sep = &trimmed[keyword.len()..trimmed.len() - rest.len()];
            new = if args.is_empty() {
                format!("{indent}{keyword}{sep}{image}")
            } else {
                format!("{indent}{keyword}{sep}{image} {args}")
            };
        } else if let Some(prefix) = MAGIC_ARGS.iter().find(|p| trimmed.starts_with(**p)) {
            let indent = &new[..new.len() - trimmed.len()];
            let (args, mut notes) = rewrite_args(&trimmed[prefix.len()..], facts.fs_uuid);
            let args = if *prefix == "# kopt=" {
                let (args, more) = add_args(&args, facts.extra_args);
                notes.extend(more);
                args
            } else {
                args
            };
            for note in notes {
                out.notes.push(format!("line {}: {note}", n + 1));
            }
            new = format!("{indent}{prefix}{args}");
        }
        lines.push(format!("{new}{eol}"));
    }
    out.text = lines.concat();
    out
}

/// Appends the `extra` arguments a command line lacks.
fn add_args(args: &str, extra: &[String]) -> (String, Vec<String>) {
    let mut words: Vec<&str> = args.split_whitespace().collect();
    let mut notes = Vec::new();
    for e in extra {
        if !words.contains(&e.as_str()) {
            words.push(e);
            notes.push(format!("{e} added"));
        }
    }
    (words.join(" "), notes)
}

/// Rewrites a kernel command line; returns it and what changed.
pub fn rewrite_args(args: &str, fs_uuid: &str) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut console_at: Option<usize> = None;
    for w in args.split_whitespace() {
        if let Some(dev) = w.strip_prefix("root=")
            && is_device_name(dev)
        {
            words.push(format!("root=UUID={fs_uuid}"));
            notes.push(format!("{w} -> root=UUID={fs_uuid}"));
            continue;
        }
        let xen_console =
            matches!(w, "console=hvc0" | "console=xvc0") || w.starts_with("console=hvc0,") || w.starts_with("xencons=");
        if xen_console {
            notes.push(format!("{w} removed"));
            console_at.get_or_insert(words.len());
            continue;
        }
        words.push(w.to_string());
    }
    if let Some(at) = console_at {
        // A serial console the line already has counts, whatever its speed.
        let present = |c: &str| {
            words.iter().any(|w| w == c || (c.starts_with("console=ttyS0") && w.starts_with("console=ttyS0")))
        };
        let missing: Vec<String> = HVM_CONSOLE.iter().filter(|c| !present(c)).map(|c| c.to_string()).collect();
        if !missing.is_empty() {
            notes.push(format!("{} added", missing.join(" ")));
        }
        words.splice(at..at, missing);
    }
    serial_console_last(&mut words, &mut notes);
    (words.join(" "), notes)
}

/// The last `console=` becomes /dev/console, where userspace writes: on HVM that must be the
/// serial port EC2's console output and serial console read, so ttyS0 goes after the others.
fn serial_console_last(words: &mut Vec<String>, notes: &mut Vec<String>) {
    let consoles: Vec<usize> = (0..words.len()).filter(|&i| words[i].starts_with("console=")).collect();
    let Some(&serial) = consoles.iter().find(|&&i| words[i].starts_with("console=ttyS0")) else { return };
    let Some(&last) = consoles.last() else { return };
    if serial != last {
        let w = words.remove(serial);
        notes.push(format!("{w} moved after the other consoles: the last console= is /dev/console"));
        words.insert(last, w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0d9e7b8c-1111-2222-3333-444455556666";
    fn facts() -> BootFacts<'static> {
        BootFacts { fs_uuid: UUID, extra_args: &[], whole_disk: false }
    }

    #[test]
    fn playbook_arguments_are_added_once() {
        let extra = vec!["nvme_core.io_timeout=4294967295".to_string()];
        let f = BootFacts { fs_uuid: UUID, extra_args: &extra, whole_disk: false };
        let old = "# kopt=root=LABEL=x ro\ntitle a\nkernel /vmlinuz root=LABEL=x ro\n";
        let r = rewrite(old, &f);
        assert_eq!(
            r.text,
            "# kopt=root=LABEL=x ro nvme_core.io_timeout=4294967295\ntitle a\nkernel /vmlinuz root=LABEL=x ro nvme_core.io_timeout=4294967295\n"
        );
        assert_eq!(rewrite(&r.text, &f).text, r.text);
        // A kernel line with no image is left as it is (found by fuzzing).
        assert_eq!(rewrite("kernel", &f).text, "kernel");
        assert_eq!(rewrite("\tlinux  \n", &f).text, "\tlinux  \n");
    }

    #[test]
    fn amazon_linux_menu_lst() {
        let old = "default=0\ntimeout=1\nhiddenmenu\ntitle Amazon Linux 2014.09 (3.14.19-17.43.amzn1.x86_64)\nroot (hd0)\nkernel /boot/vmlinuz-3.14.19-17.43.amzn1.x86_64 root=LABEL=/ console=hvc0 LANG=en_US.UTF-8 KEYTABLE=us\ninitrd /boot/initramfs-3.14.19-17.43.amzn1.x86_64.img\n";
        let r = rewrite(old, &facts());
        assert_eq!(
            r.text,
            "default=0\ntimeout=1\nhiddenmenu\ntitle Amazon Linux 2014.09 (3.14.19-17.43.amzn1.x86_64)\nroot (hd0,0)\nkernel /boot/vmlinuz-3.14.19-17.43.amzn1.x86_64 root=LABEL=/ console=tty0 console=ttyS0,115200n8 LANG=en_US.UTF-8 KEYTABLE=us\ninitrd /boot/initramfs-3.14.19-17.43.amzn1.x86_64.img\n"
        );
        assert_eq!(
            r.notes,
            [
                "line 5: (hd0) -> (hd0,0)",
                "line 6: console=hvc0 removed",
                "line 6: console=tty0 console=ttyS0,115200n8 added"
            ]
        );
    }

    #[test]
    fn every_entry_and_path_forms() {
        let old = "title a\n\troot (hd0)\n\tkernel (hd0)/boot/vmlinuz-a root=/dev/xvda1 ro console=hvc0 xencons=tty\n\tinitrd (hd0)/boot/initrd-a\ntitle b\n\tkernel /boot/vmlinuz-b root=/dev/xvde1 ro\n";
        let r = rewrite(old, &facts());
        assert_eq!(
            r.text,
            format!(
                "title a\n\troot (hd0,0)\n\tkernel (hd0,0)/boot/vmlinuz-a root=UUID={UUID} ro console=tty0 console=ttyS0,115200n8\n\tinitrd (hd0,0)/boot/initrd-a\ntitle b\n\tkernel /boot/vmlinuz-b root=UUID={UUID} ro\n"
            )
        );
    }

    #[test]
    fn a_whole_disk_filesystem_keeps_hd0() {
        let old = "root (hd0)\nkernel (hd0)/boot/vmlinuz root=/dev/xvda1 console=hvc0\n";
        let f = BootFacts { fs_uuid: UUID, extra_args: &[], whole_disk: true };
        let r = rewrite(old, &f);
        assert_eq!(
            r.text,
            format!("root (hd0)\nkernel (hd0)/boot/vmlinuz root=UUID={UUID} console=tty0 console=ttyS0,115200n8\n")
        );
        assert!(r.notes.iter().all(|n| !n.contains("(hd0,0)")), "{:?}", r.notes);
    }

    #[test]
    fn hd0_0_and_labels_kept() {
        let old = "root (hd0,0)\nkernel /vmlinuz root=LABEL=cloudimg-rootfs ro console=hvc0";
        let r = rewrite(old, &facts());
        assert_eq!(
            r.text,
            "root (hd0,0)\nkernel /vmlinuz root=LABEL=cloudimg-rootfs ro console=tty0 console=ttyS0,115200n8"
        );
    }

    #[test]
    fn ubuntu_magic_comments() {
        let old = "# groot=(hd0)\n# kopt=root=LABEL=cloudimg-rootfs ro console=hvc0\n# defoptions=console=hvc0 quiet\n## ## End Default Options ##\n";
        let r = rewrite(old, &facts());
        assert_eq!(
            r.text,
            "# groot=(hd0,0)\n# kopt=root=LABEL=cloudimg-rootfs ro console=tty0 console=ttyS0,115200n8\n# defoptions=console=tty0 console=ttyS0,115200n8 quiet\n## ## End Default Options ##\n"
        );
    }

    #[test]
    fn grub2_linux_lines_and_idempotence() {
        let old = "menuentry 'x' {\n\tlinux /boot/vmlinuz root=/dev/xvda1 ro console=hvc0\n}\n";
        let once = rewrite(old, &facts());
        assert!(
            once.text
                .contains(&format!("linux /boot/vmlinuz root=UUID={UUID} ro console=tty0 console=ttyS0,115200n8\n"))
        );
        let twice = rewrite(&once.text, &facts());
        assert_eq!(twice.text, once.text);
        assert!(twice.notes.is_empty());
    }

    #[test]
    fn existing_serial_console_not_duplicated_and_last() {
        let (args, notes) = rewrite_args("ro console=ttyS0,115200n8 console=hvc0", UUID);
        assert_eq!(args, "ro console=tty0 console=ttyS0,115200n8");
        assert_eq!(
            notes,
            [
                "console=hvc0 removed",
                "console=tty0 added",
                "console=ttyS0,115200n8 moved after the other consoles: the last console= is /dev/console"
            ]
        );
    }

    #[test]
    fn the_serial_console_ends_up_last_in_every_case() {
        for (line, want) in [
            ("ro console=hvc0", "ro console=tty0 console=ttyS0,115200n8"),
            ("console=ttyS0,9600 ro console=tty0", "ro console=tty0 console=ttyS0,9600"),
            ("console=ttyS0 console=hvc0 quiet", "console=tty0 console=ttyS0 quiet"),
            ("ro quiet", "ro quiet"),
            ("console=tty0 console=ttyS0,115200n8", "console=tty0 console=ttyS0,115200n8"),
        ] {
            let (args, _) = rewrite_args(line, UUID);
            assert_eq!(args, want, "{line}");
            let consoles: Vec<&str> = args.split(' ').filter(|w| w.starts_with("console=")).collect();
            assert!(consoles.last().is_none_or(|c| c.starts_with("console=ttyS0")), "{line}: {args}");
        }
    }
}
