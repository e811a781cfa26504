//! The boot-config parser (menu.lst, grub.conf, grub.cfg) must never panic on any text, and
//! what it finds must be consistent: one entry per title or menuentry at most per line, and
//! the default entry one of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::bootcfg::{ConfigDialect, parse};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for dialect in [ConfigDialect::Legacy, ConfigDialect::Grub2] {
        let e = parse(&text, dialect);
        assert!(e.entries.len() <= text.lines().count());
        if let Some(d) = e.default_entry() {
            assert!(e.entries.contains(d));
            if let (Some(k), Some(p)) = (d.kernel.as_deref(), d.kernel_path()) {
                assert!(k.ends_with(p));
            }
        }
    }
});
