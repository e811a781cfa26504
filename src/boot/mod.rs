//! Making the disk boot, and proving it does: GRUB 2 for i386-pc BIOS boot ([`grub`]) and a
//! boot in QEMU under SeaBIOS ([`check`]).

pub mod check;
pub mod grub;
