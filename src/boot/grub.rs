//! GRUB 2 for i386-pc BIOS boot, installed without grub-install: boot.img is patched the way
//! grub-bios-setup patches it, and a self-contained core.img (every module embedded, since a PV
//! guest has no /boot/grub/i386-pc) is built with the host's grub-mkimage. Its embedded config
//! finds the root filesystem by UUID and hands over to the guest's own config.

use std::io::{Read, Seek};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest::bootcfg::ConfigDialect;
use crate::host::find_on_path;

/// Where Debian's grub-pc-bin puts the i386-pc images and modules.
pub const DEFAULT_GRUB_DIR: &str = "/usr/lib/grub/i386-pc";

/// Modules embedded into core.img: disk and filesystem access, both config dialects, the
/// serial console, and what legacy_configfile's translation calls (linux16, sleep, loadenv).
pub const MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "part_gpt",
    "ext2",
    "legacycfg",
    "normal",
    "linux",
    "linux16",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "serial",
    "terminal",
    "terminfo",
    "echo",
    "test",
    "configfile",
    "sleep",
    "loadenv",
    "gzio",
    "minicmd",
    "cat",
];

// Offsets in boot.img and core.img (GRUB include/grub/i386/pc/boot.h, kernel.h).
const KERNEL_SECTOR: usize = 0x5C;
const DRIVE_CHECK: usize = 0x66;
const CORE_BLOCKLIST_START: usize = 0x1F4;
const BLOCKLIST_ENTRY: usize = 12;
/// BIOS disk sector size: diskboot's blocklist counts sectors of 512 bytes.
const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("GRUB i386-pc file {path} is missing: install the grub-pc-bin package (or pass --grub-dir)")]
    MissingImage { path: PathBuf },
    #[error("grub-mkimage was not found on PATH: install the grub-common package")]
    MkimageMissing,
    #[error("grub-mkimage failed ({status}): {stderr}")]
    Mkimage { status: String, stderr: String },
    #[error("{path}: boot.img must be exactly 512 bytes, found {len}")]
    BadBootImg { path: PathBuf, len: usize },
    #[error("{context}: {err}")]
    Io { context: String, err: std::io::Error },
    #[error("core.img's blocklist: {0}")]
    Blocklist(String),
}

/// The host's GRUB i386-pc installation.
#[derive(Clone, Debug)]
pub struct GrubPc {
    pub dir: PathBuf,
    pub mkimage: PathBuf,
}

/// The two pieces a BIOS bootloader install writes.
pub struct BootImages {
    pub boot_img: [u8; 512],
    pub core_img: Vec<u8>,
}

impl GrubPc {
    /// Finds boot.img, the modules and grub-mkimage, naming the package for what is missing.
    pub fn locate(grub_dir: Option<&Path>) -> Result<Self, GrubError> {
        let dir = grub_dir.map_or_else(|| PathBuf::from(DEFAULT_GRUB_DIR), Path::to_path_buf);
        for f in ["boot.img", "kernel.img", "biosdisk.mod", "legacycfg.mod"] {
            let path = dir.join(f);
            if !path.is_file() {
                return Err(GrubError::MissingImage { path });
            }
        }
        let mkimage = find_on_path("grub-mkimage").ok_or(GrubError::MkimageMissing)?;
        Ok(GrubPc { dir, mkimage })
    }

    /// The config embedded in core.img.
    pub fn embedded_config(fs_uuid: &str, guest_config: &str, dialect: ConfigDialect) -> String {
        let handover = match dialect {
            ConfigDialect::Legacy => "legacy_configfile",
            ConfigDialect::Grub2 => "configfile",
        };
        format!(
            "search --no-floppy --fs-uuid --set=root {fs_uuid}\n\
             set prefix=($root)/boot/grub\n\
             serial --unit=0 --speed=115200\n\
             terminal_input console serial\n\
             terminal_output console serial\n\
             {handover} {guest_config}\n"
        )
    }

    /// Reads boot.img and builds core.img for a root filesystem `fs_uuid` whose config is
    /// `guest_config`.
    pub fn build(&self, fs_uuid: &str, guest_config: &str, dialect: ConfigDialect) -> Result<BootImages, GrubError> {
        let boot_path = self.dir.join("boot.img");
        let boot = std::fs::read(&boot_path)
            .map_err(|err| GrubError::Io { context: format!("reading {}", boot_path.display()), err })?;
        let boot_img: [u8; 512] = boot
            .as_slice()
            .try_into()
            .map_err(|_| GrubError::BadBootImg { path: boot_path.clone(), len: boot.len() })?;
        let tmp = tempfile::tempdir()
            .map_err(|err| GrubError::Io { context: "creating a temporary directory".into(), err })?;
        let cfg = tmp.path().join("embedded.cfg");
        std::fs::write(&cfg, Self::embedded_config(fs_uuid, guest_config, dialect))
            .map_err(|err| GrubError::Io { context: format!("writing {}", cfg.display()), err })?;
        // core.img goes to grub-mkimage's standard output, a file in memory: it syncs its output
        // (a pipe would fail that), and a sync on disk would wait behind whatever else is being
        // written there, such as the copy of the source.
        let io = |context: &str| {
            let context = context.to_string();
            move |err| GrubError::Io { context, err }
        };
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the descriptor it returns
        // is owned by the File made from it and nothing else.
        let mut core = unsafe {
            let fd = libc::memfd_create(c"pv2hvm-core.img".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io("creating an in-memory file for core.img")(std::io::Error::last_os_error()));
            }
            std::fs::File::from_raw_fd(fd)
        };
        let stdout = core.try_clone().map_err(io("duplicating the in-memory file for core.img"))?;
        let out = Command::new(&self.mkimage)
            .arg("-O")
            .arg("i386-pc")
            .arg("-d")
            .arg(&self.dir)
            .arg("-c")
            .arg(&cfg)
            .arg("-p")
            .arg("/boot/grub")
            .args(MODULES)
            .stdout(std::process::Stdio::from(stdout))
            .output()
            .map_err(|err| GrubError::Io { context: format!("running {}", self.mkimage.display()), err })?;
        if !out.status.success() {
            return Err(GrubError::Mkimage {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let mut core_img = Vec::new();
        core.seek(std::io::SeekFrom::Start(0))
            .and_then(|_| core.read_to_end(&mut core_img))
            .map_err(io("reading core.img from grub-mkimage"))?;
        Ok(BootImages { boot_img, core_img })
    }
}

/// Patches boot.img as grub-bios-setup does for a hard disk: the LBA of core.img's first
/// sector at 0x5C and NOPs over the drive-check jump at 0x66. Bytes 0x1B8–0x1FD (disk
/// signature and partition table) are the caller's to fill.
pub fn patch_boot_img(boot_img: &[u8; 512], core_lba: u64) -> [u8; 512] {
    let mut out = *boot_img;
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    out[DRIVE_CHECK] = 0x90;
    out[DRIVE_CHECK + 1] = 0x90;
    out
}

/// Points core.img's first-sector blocklist at the rest of core.img when core.img starts at
/// `core_lba` and is contiguous (grub-mkimage pre-fills it for LBA 1).
pub fn place_core_img(core: &mut [u8], core_lba: u64) -> Result<(), GrubError> {
    set_blocklist(core, &[(core_lba, core_sectors(core))])
}

/// How many blocklist entries fit in core.img's first sector: the space between the end of
/// diskboot's code and the first entry, less one slot for the terminating empty entry.
pub fn blocklist_capacity(core: &[u8]) -> usize {
    let first = &core[..CORE_BLOCKLIST_START.min(core.len())];
    let code_end = first.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (CORE_BLOCKLIST_START.saturating_sub(code_end)) / BLOCKLIST_ENTRY
}

/// Writes diskboot's blocklist for core.img stored in `runs` of `(first LBA, sectors)`, in
/// core.img's order. boot.img loads the first sector (`runs[0].0`); the list covers the rest:
/// entries of `{u64 start, u16 sectors, u16 segment}` from 0x1F4 downwards, each segment
/// 0x820 plus 0x20 per sector loaded before it, ended by an entry of length 0 (GRUB's
/// `grub-core/boot/i386/pc/diskboot.S`).
pub fn set_blocklist(core: &mut [u8], runs: &[(u64, u64)]) -> Result<(), GrubError> {
    let total: u64 = runs.iter().map(|r| r.1).sum();
    if total < core_sectors(core) || core.len() < 512 {
        return Err(GrubError::Blocklist(format!(
            "the runs hold {total} sectors, core.img needs {}",
            core_sectors(core)
        )));
    }
    // Everything after core.img's first sector, as runs.
    let mut rest: Vec<(u64, u64)> = Vec::new();
    let mut skip = 1u64;
    let mut left = core_sectors(core) - 1;
    for &(lba, n) in runs {
        let skipped = skip.min(n);
        skip -= skipped;
        let (lba, n) = (lba + skipped, (n - skipped).min(left));
        if n > 0 {
            rest.push((lba, n));
            left -= n;
        }
    }
    let capacity = blocklist_capacity(core);
    if rest.len() > capacity {
        return Err(GrubError::Blocklist(format!(
            "core.img lies in {} separate runs, but diskboot's blocklist holds {capacity}",
            rest.len()
        )));
    }
    let mut loaded = 0u64;
    for i in 0..=capacity {
        let at = CORE_BLOCKLIST_START - i * BLOCKLIST_ENTRY;
        core[at..at + BLOCKLIST_ENTRY].fill(0);
    }
    for (i, &(lba, n)) in rest.iter().enumerate() {
        let at = CORE_BLOCKLIST_START - i * BLOCKLIST_ENTRY;
        let segment = u16::try_from(0x820 + 0x20 * loaded)
            .map_err(|_| GrubError::Blocklist(format!("core.img is too large to load ({loaded} sectors)")))?;
        let len = u16::try_from(n).map_err(|_| GrubError::Blocklist(format!("a run of {n} sectors is too long")))?;
        core[at..at + 8].copy_from_slice(&lba.to_le_bytes());
        core[at + 8..at + 10].copy_from_slice(&len.to_le_bytes());
        core[at + 10..at + 12].copy_from_slice(&segment.to_le_bytes());
        loaded += n;
    }
    Ok(())
}

/// Sectors core.img occupies.
pub fn core_sectors(core: &[u8]) -> u64 {
    (core.len() as u64).div_ceil(SECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_kernel_sector_and_drive_check_only() {
        let mut img = [0u8; 512];
        img[DRIVE_CHECK] = 0xEB;
        img[DRIVE_CHECK + 1] = 0x05;
        img[0x1B8] = 0x11;
        let out = patch_boot_img(&img, 2048);
        assert_eq!(u64::from_le_bytes(out[0x5C..0x64].try_into().unwrap()), 2048);
        assert_eq!(&out[0x66..0x68], &[0x90, 0x90]);
        let changed: Vec<usize> = (0..512).filter(|&i| out[i] != img[i]).collect();
        assert_eq!(changed, vec![0x5D, 0x66, 0x67]);
    }

    /// A core.img whose first sector has diskboot-like code up to 0x148, as on Debian 12.
    fn core(sectors: usize) -> Vec<u8> {
        let mut core = vec![0u8; sectors * 512];
        core[..0x148].fill(0xCC);
        core
    }

    fn entry(core: &[u8], i: usize) -> (u64, u16, u16) {
        let at = 0x1F4 - 12 * i;
        (
            u64::from_le_bytes(core[at..at + 8].try_into().unwrap()),
            u16::from_le_bytes(core[at + 8..at + 10].try_into().unwrap()),
            u16::from_le_bytes(core[at + 10..at + 12].try_into().unwrap()),
        )
    }

    #[test]
    fn blocklist_follows_core_placement() {
        let mut c = core(4);
        place_core_img(&mut c, 1).unwrap();
        assert_eq!(entry(&c, 0), (2, 3, 0x820));
        place_core_img(&mut c, 2048).unwrap();
        assert_eq!(entry(&c, 0), (2049, 3, 0x820));
        assert_eq!(entry(&c, 1).1, 0, "the list ends");
    }

    #[test]
    fn blocklist_of_scattered_runs() {
        let mut c = core(20);
        // 8 sectors at 1000 (the first is diskboot itself), 4 at 5000, 8 at 9000.
        set_blocklist(&mut c, &[(1000, 8), (5000, 4), (9000, 8)]).unwrap();
        assert_eq!(entry(&c, 0), (1001, 7, 0x820));
        assert_eq!(entry(&c, 1), (5000, 4, 0x820 + 7 * 0x20));
        assert_eq!(entry(&c, 2), (9000, 8, 0x820 + 11 * 0x20));
        assert_eq!(entry(&c, 3), (0, 0, 0));
        assert!(c[..0x148].iter().all(|&b| b == 0xCC), "diskboot's code is untouched");
        // A run that only holds the first sector adds no entry.
        let mut c = core(3);
        set_blocklist(&mut c, &[(7, 1), (20, 2)]).unwrap();
        assert_eq!(entry(&c, 0), (20, 2, 0x820));
        assert_eq!(entry(&c, 1).1, 0);
    }

    #[test]
    fn blocklist_capacity_and_refusals() {
        let c = core(40);
        assert_eq!(blocklist_capacity(&c), 14);
        let runs: Vec<(u64, u64)> = (0..20).map(|i| (i * 100, 2)).collect();
        let mut c2 = c.clone();
        assert!(matches!(set_blocklist(&mut c2, &runs), Err(GrubError::Blocklist(_))));
        let mut c3 = c.clone();
        assert!(matches!(set_blocklist(&mut c3, &[(5, 10)]), Err(GrubError::Blocklist(_))), "too few sectors");
    }

    #[test]
    fn embedded_config_hands_over() {
        let c = GrubPc::embedded_config("abcd", "/boot/grub/menu.lst", ConfigDialect::Legacy);
        assert!(c.starts_with("search --no-floppy --fs-uuid --set=root abcd\n"));
        assert!(c.ends_with("legacy_configfile /boot/grub/menu.lst\n"));
        let c = GrubPc::embedded_config("abcd", "/boot/grub2/grub.cfg", ConfigDialect::Grub2);
        assert!(c.ends_with("\nconfigfile /boot/grub2/grub.cfg\n"));
    }
}
