//! `pv2hvm doctor`: checks the host tools conversion relies on and names the package that
//! provides each one missing.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::find_on_path;
use crate::boot::grub::DEFAULT_GRUB_DIR;

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: &'static str,
    pub found: Option<String>,
    pub package: &'static str,
    /// Needed for every conversion (false: only for --boot-check).
    pub required: bool,
}

pub fn run(grub_dir: Option<&Path>) -> Vec<Check> {
    let dir = grub_dir.map_or_else(|| PathBuf::from(DEFAULT_GRUB_DIR), Path::to_path_buf);
    let file = |p: PathBuf| p.is_file().then(|| p.display().to_string());
    let tool = |n: &str| find_on_path(n).map(|p| p.display().to_string());
    vec![
        Check {
            what: "GRUB i386-pc boot.img",
            found: file(dir.join("boot.img")),
            package: "grub-pc-bin",
            required: true,
        },
        Check {
            what: "GRUB i386-pc modules",
            found: file(dir.join("legacycfg.mod"))
                .and(file(dir.join("biosdisk.mod")))
                .map(|_| dir.display().to_string()),
            package: "grub-pc-bin",
            required: true,
        },
        Check { what: "grub-mkimage", found: tool("grub-mkimage"), package: "grub-common", required: true },
        Check {
            what: "libext2fs",
            found: Some(format!("{} (linked)", crate::ext2fs::library_version())),
            package: "libext2fs2",
            required: true,
        },
        Check { what: "e2fsck", found: tool("e2fsck"), package: "e2fsprogs", required: true },
        Check {
            what: "qemu-system-x86_64 (--boot-check)",
            found: tool("qemu-system-x86_64"),
            package: "qemu-system-x86",
            required: false,
        },
        Check {
            what: "SeaBIOS (--boot-check)",
            found: file(PathBuf::from("/usr/share/seabios/bios-256k.bin"))
                .or_else(|| file(PathBuf::from("/usr/share/qemu/bios-256k.bin"))),
            package: "seabios",
            required: false,
        },
    ]
}
