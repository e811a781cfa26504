//! Pure text rewrites of guest files. Each takes the old text and the facts it needs and
//! returns the new text (if anything changed) with one note per change, for the plan.

pub mod bootcfg;
pub mod console;
pub mod fstab;

/// The result of rewriting one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub text: String,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Rewrite {
    pub fn changed(&self, original: &str) -> bool {
        self.text != original
    }
}

/// True for a kernel device name of a whole disk or partition (`/dev/xvda1`, `/dev/sda`,
/// `/dev/xvde1`, `/dev/hda1`, `/dev/nvme0n1p1`), which changes between PV and HVM.
pub fn is_device_name(spec: &str) -> bool {
    let Some(dev) = spec.strip_prefix("/dev/") else { return false };
    let alpha_disk = |prefix: &str| {
        dev.strip_prefix(prefix).is_some_and(|rest| {
            let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
            !letters.is_empty() && letters.chars().all(|c| c.is_ascii_lowercase())
        })
    };
    alpha_disk("xvd") || alpha_disk("sd") || alpha_disk("hd") || alpha_disk("vd") || dev.starts_with("nvme")
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_names() {
        for d in ["/dev/xvda1", "/dev/xvde1", "/dev/sda1", "/dev/sda", "/dev/hda1", "/dev/nvme0n1p1", "/dev/xvdaa"] {
            assert!(super::is_device_name(d), "{d}");
        }
        for d in ["UUID=x", "LABEL=/", "/dev/mapper/vg-root", "/dev/md0", "/dev/xvd", "tmpfs", "/dev/disk/by-uuid/x"] {
            assert!(!super::is_device_name(d), "{d}");
        }
    }
}
