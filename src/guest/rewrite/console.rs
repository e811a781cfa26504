//! Serial console for HVM: sysvinit's /etc/inittab and upstart's hvc0 job get a getty on
//! ttyS0 instead of the Xen console. systemd needs nothing (its serial-getty generator
//! follows the kernel's `console=`).

use super::Rewrite;

fn is_xen_tty(word: &str) -> bool {
    matches!(word, "hvc0" | "xvc0" | "/dev/hvc0" | "/dev/xvc0")
}

/// Moves inittab gettys on hvc0/xvc0 to ttyS0 at 115200 baud.
pub fn rewrite_inittab(text: &str) -> Rewrite {
    let mut out = Rewrite::default();
    let mut lines = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        let fields: Vec<&str> = t.splitn(4, ':').collect();
        if t.starts_with('#') || fields.len() != 4 || !fields[3].split_whitespace().any(is_xen_tty) {
            lines.push(line.to_string());
            continue;
        }
        let eol = if line.ends_with('\n') { "\n" } else { "" };
        let process: Vec<String> = fields[3]
            .split_whitespace()
            .map(|w| match w {
                "hvc0" | "xvc0" => "ttyS0".to_string(),
                "/dev/hvc0" | "/dev/xvc0" => "/dev/ttyS0".to_string(),
                "9600" | "38400" => "115200".to_string(),
                other => other.to_string(),
            })
            .collect();
        let new = format!("{}:{}:{}:{}{eol}", fields[0], fields[1], fields[2], process.join(" "));
        out.notes.push(format!("line {}: getty moved to ttyS0", i + 1));
        lines.push(new);
    }
    out.text = lines.concat();
    out
}

/// An upstart job for ttyS0 derived from the guest's hvc0 job.
pub fn upstart_ttys0_from_hvc0(hvc0_conf: &str) -> String {
    let mut s = hvc0_conf.replace("hvc0", "ttyS0").replace("xvc0", "ttyS0");
    for slow in [" 9600 ", " 38400 "] {
        s = s.replace(slow, " 115200 ");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inittab_hvc0_moves_to_ttys0() {
        let old = "id:3:initdefault:\n1:2345:respawn:/sbin/mingetty tty1\nco:2345:respawn:/sbin/agetty hvc0 9600 vt100-nav\n# x:1:respawn:/sbin/getty hvc0\n";
        let r = rewrite_inittab(old);
        assert_eq!(
            r.text,
            "id:3:initdefault:\n1:2345:respawn:/sbin/mingetty tty1\nco:2345:respawn:/sbin/agetty ttyS0 115200 vt100-nav\n# x:1:respawn:/sbin/getty hvc0\n"
        );
        assert_eq!(r.notes, ["line 3: getty moved to ttyS0"]);
    }

    #[test]
    fn upstart_job() {
        let job = "start on stopped rc RUNLEVEL=[2345]\nrespawn\nexec /sbin/getty -8 38400 hvc0\n";
        assert_eq!(
            upstart_ttys0_from_hvc0(job),
            "start on stopped rc RUNLEVEL=[2345]\nrespawn\nexec /sbin/getty -8 115200 ttyS0\n"
        );
    }
}
