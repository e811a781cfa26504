//! Rewrites /etc/fstab: device-name entries become `UUID=` where the filesystem is known (the
//! root volume), and entries for other volumes that cannot be resolved get `nofail`, so a
//! missing ephemeral or data volume does not stop the boot on HVM.

use super::{Rewrite, is_device_name};

pub struct FstabFacts<'a> {
    pub root_uuid: &'a str,
    /// Device names the root volume had under PV (from fstab's `/` and the kernel's `root=`).
    pub root_devices: &'a [String],
}

/// One parsed fstab entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub line: usize,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = t.split_whitespace().collect();
            (f.len() >= 2).then(|| Entry {
                line: i + 1,
                spec: f[0].to_string(),
                mountpoint: f[1].to_string(),
                fstype: f.get(2).unwrap_or(&"auto").to_string(),
                options: f.get(3).unwrap_or(&"defaults").to_string(),
            })
        })
        .collect()
}

pub fn rewrite(text: &str, facts: &FstabFacts) -> Rewrite {
    let mut out = Rewrite::default();
    let mut lines = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            lines.push(line.to_string());
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        if fields.len() < 2 || !is_device_name(fields[0]) {
            lines.push(line.to_string());
            continue;
        }
        let spec = fields[0];
        let is_root = fields[1] == "/" || facts.root_devices.iter().any(|d| d == spec);
        let mut new = line.to_string();
        if is_root {
            let uuid = format!("UUID={}", facts.root_uuid);
            new = replace_field(&new, 0, &uuid);
            out.notes.push(format!("line {}: {spec} -> {uuid} ({})", i + 1, fields[1]));
        } else if fields.len() >= 4 {
            if !fields[3].split(',').any(|o| o == "nofail") {
                new = replace_field(&new, 3, &format!("{},nofail", fields[3]));
                out.notes.push(format!("line {}: {spec} ({}) gets nofail", i + 1, fields[1]));
            }
            out.warnings.push(format!(
                "/etc/fstab line {}: {spec} on {} is another volume whose device name changes on HVM; it was kept with nofail",
                i + 1,
                fields[1]
            ));
        } else {
            let eol = if new.ends_with('\n') { "\n" } else { "" };
            new = format!("{} {} {} defaults,nofail{eol}", fields[0], fields[1], fields.get(2).unwrap_or(&"auto"));
            out.notes.push(format!("line {}: {spec} ({}) gets nofail", i + 1, fields[1]));
            out.warnings.push(format!(
                "/etc/fstab line {}: {spec} on {} is another volume; it was kept with nofail",
                i + 1,
                fields[1]
            ));
        }
        lines.push(new);
    }
    out.text = lines.concat();
    out
}

/// Replaces whitespace-separated field `idx` in `line`, keeping the spacing around it.
fn replace_field(line: &str, idx: usize, value: &str) -> String {
    let mut spans = Vec::new();
    let mut start = None;
    for (pos, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                spans.push((s, pos));
            }
        } else if start.is_none() {
            start = Some(pos);
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    match spans.get(idx) {
        Some(&(s, e)) => format!("{}{}{}", &line[..s], value, &line[e..]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0d9e7b8c-1111-2222-3333-444455556666";

    #[test]
    fn root_by_uuid_others_nofail_labels_kept() {
        let old = "# comment\n/dev/xvda1  /  ext4  defaults,errors=remount-ro  0  1\nLABEL=data /data ext4 defaults 0 2\n/dev/xvdb\t/mnt\tauto\tdefaults,comment=cloudconfig\t0\t2\n/dev/xvda3 none swap sw,nofail 0 0\nproc /proc proc defaults 0 0\n";
        let r = rewrite(old, &FstabFacts { root_uuid: UUID, root_devices: &[] });
        assert_eq!(
            r.text,
            format!(
                "# comment\nUUID={UUID}  /  ext4  defaults,errors=remount-ro  0  1\nLABEL=data /data ext4 defaults 0 2\n/dev/xvdb\t/mnt\tauto\tdefaults,comment=cloudconfig,nofail\t0\t2\n/dev/xvda3 none swap sw,nofail 0 0\nproc /proc proc defaults 0 0\n"
            )
        );
        assert_eq!(
            r.warnings,
            [
                "/etc/fstab line 4: /dev/xvdb on /mnt is another volume whose device name changes on HVM; it was kept with nofail",
                "/etc/fstab line 5: /dev/xvda3 on none is another volume whose device name changes on HVM; it was kept with nofail"
            ]
        );
    }

    #[test]
    fn root_device_from_kernel_args_and_short_lines() {
        let devs = vec!["/dev/sda1".to_string()];
        let r = rewrite(
            "/dev/sda1 /srv ext3 defaults\n/dev/sdb /x\n",
            &FstabFacts { root_uuid: UUID, root_devices: &devs },
        );
        assert_eq!(r.text, format!("UUID={UUID} /srv ext3 defaults\n/dev/sdb /x auto defaults,nofail\n"));
    }

    #[test]
    fn parses_entries() {
        let e = parse("# c\n\nUUID=a / ext4 ro 0 1\n/dev/xvdb /mnt\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[1],
            Entry {
                line: 4,
                spec: "/dev/xvdb".into(),
                mountpoint: "/mnt".into(),
                fstype: "auto".into(),
                options: "defaults".into()
            }
        );
    }
}
