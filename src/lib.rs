//! pv2hvm: converts AWS Xen PV root volumes into HVM disks that boot under a BIOS, with their
//! own GRUB 2, on Xen HVM and Nitro instance types.
//!
//! The pipeline, `inspect → plan → (stop on --dry-run) → convert → verify → output`, reads
//! top-down through the modules:
//! - [`io`]: where blocks come from and go to ([`io::BlockSource`], [`io::BlockSink`]), the
//!   composable wrappers (counting, progress, zero-skipping) and the copy-on-write overlay;
//! - [`disk`]: recognising the source and laying out the new disk;
//! - [`ext2fs`]: reading and editing the root filesystem through libext2fs;
//! - [`guest`]: inspecting the guest, its drivers, initramfs and playbooks, and the text
//!   rewrites of its files;
//! - [`plan`]: everything a conversion will do, as reviewable data;
//! - [`boot`]: GRUB 2 for BIOS boot, and the QEMU boot check;
//! - [`convert`]: the pipeline itself, over the block traits;
//! - [`host`]: the host tools pv2hvm runs (e2fsck) and checks (`doctor`);
//! - [`aws`]: EBS snapshots as block sources and sinks, and `migrate` / `plan` / `cleanup`
//!   against AWS (the engine above never sees it);
//! - [`fleet`]: many sources at once: plans, crash-safe batch runs with a journal, shards for
//!   array jobs, reports.
//!
//! [`spec::ConvertSpec`] holds the choices that shape a conversion; [`error::Error`] classifies
//! every failure into an [`error::ErrorKind`] with its exit code.

#[cfg(feature = "aws")]
pub mod aws;
pub mod boot;
pub mod convert;
pub mod disk;
pub mod error;
pub mod ext2fs;
#[cfg(feature = "aws")]
pub mod fleet;
pub mod guest;
pub mod host;
pub mod io;
pub mod plan;
pub mod progress;
pub mod spec;
pub mod util;

pub use error::{Error, ErrorKind};
