//! The host tools pv2hvm runs, found in one place: e2fsck on a staged image ([`fsck`]), and
//! the check of everything conversion needs ([`doctor`]). GRUB's grub-mkimage and QEMU are
//! run by [`crate::boot`], located through [`find_on_path`].

pub mod doctor;
pub mod fsck;

use std::path::PathBuf;

/// The first executable file called `name` on PATH, or in the system directories a
/// non-root PATH often lacks (e2fsck lives in /sbin).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
