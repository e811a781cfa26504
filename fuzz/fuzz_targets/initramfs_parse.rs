//! Parsing arbitrary bytes as an initramfs (compression detection, decompressors, cpio) must
//! never panic; an unchanged parse must serialise back byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::initramfs::Initramfs;

fuzz_target!(|data: &[u8]| {
    if let Ok(ird) = Initramfs::parse(data) {
        assert_eq!(ird.to_vec(data).expect("unchanged segments are copied"), data);
    }
});
