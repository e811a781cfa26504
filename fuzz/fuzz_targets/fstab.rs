//! The fstab parser and rewrite must never panic, the rewrite must be idempotent, and every
//! entry parsed must name a line of the text with its first two fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::rewrite::fstab;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    for e in fstab::parse(&text) {
        let mut words = lines[e.line - 1].split_whitespace();
        assert_eq!(words.next(), Some(e.spec.as_str()));
        assert_eq!(words.next(), Some(e.mountpoint.as_str()));
    }
    let devs = vec!["/dev/xvda1".to_string(), "/dev/sda1".to_string()];
    let facts = fstab::FstabFacts { root_uuid: "0d9e7b8c-1111-2222-3333-444455556666", root_devices: &devs };
    let once = fstab::rewrite(&text, &facts);
    assert_eq!(fstab::rewrite(&once.text, &facts).text, once.text);
});
