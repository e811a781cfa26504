//! The cpio reader must never panic, and what it reads must write back and read again the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::initramfs::cpio::{read_archives, write_archive};

fuzz_target!(|data: &[u8]| {
    if let Ok((entries, used)) = read_archives(data) {
        assert!(used <= data.len());
        let again = write_archive(&entries).expect("entries that were read can be written");
        let (back, _) = read_archives(&again).expect("what was written reads back");
        assert_eq!(back, entries);
    }
});
