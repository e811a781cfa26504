//! The guest inside the root filesystem: what it is ([`inspect`], [`os`], [`report`]), which
//! drivers it has and gets ([`drivers`], [`initramfs`]), what differs per distribution
//! ([`playbook`]), its bootloader config ([`bootcfg`]) and the text rewrites of its files
//! ([`rewrite`]). Nothing from the guest is ever executed.

pub mod bootcfg;
pub mod drivers;
pub mod initramfs;
pub mod inspect;
pub mod os;
pub mod playbook;
pub mod report;
pub mod rewrite;
