//! The bootloader config, fstab and inittab rewrites must never panic and must be idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::rewrite::{bootcfg, console, fstab};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let extra = vec!["nvme_core.io_timeout=4294967295".to_string()];
    for whole_disk in [false, true] {
        let facts = bootcfg::BootFacts { fs_uuid: "0d9e7b8c-1111-2222-3333-444455556666", extra_args: &extra, whole_disk };
        let once = bootcfg::rewrite(text, &facts);
        assert_eq!(bootcfg::rewrite(&once.text, &facts).text, once.text);
    }
    let devs = vec!["/dev/xvda1".to_string()];
    let f = fstab::FstabFacts { root_uuid: "u", root_devices: &devs };
    let once = fstab::rewrite(text, &f);
    assert_eq!(fstab::rewrite(&once.text, &f).text, once.text);
    let once = console::rewrite_inittab(text);
    assert_eq!(console::rewrite_inittab(&once.text).text, once.text);
});
