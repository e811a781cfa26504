//! pv2hvm: converts AWS Xen PV root volumes into HVM disks that boot under a BIOS, with their
//! own GRUB 2, on Xen HVM and Nitro instance types.
//!
//! The pipeline lives in [`convert`]; [`inspect`] reads a guest, [`plan`] says what will
//! change, [`rewrite`] holds the text rewrites, [`ext2fs`] edits files through libext2fs,
//! [`grub`] builds the bootloader, [`disk`] lays out the new disk, [`blockdev`] moves blocks,
//! and [`bootcheck`] proves the result boots.

pub mod blockdev;
pub mod bootcheck;
pub mod convert;
pub mod disk;
pub mod doctor;
pub mod drivers;
pub mod ext2fs;
pub mod fsck;
pub mod grub;
pub mod guestos;
pub mod initramfs;
pub mod inspect;
pub mod plan;
pub mod plan_render;
pub mod playbook;
pub mod progress;
pub mod report;
pub mod rewrite;
