//! Disk-level work: recognising the source, the ext superblock, and the new disk's layout.

pub mod detect;
pub mod layout;
pub mod superblock;
