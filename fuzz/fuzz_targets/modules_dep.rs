//! kmod's indexes built from any modules.dep (and the same text as modules.alias and
//! modules.symbols) must never panic; every module modules.dep names gets a priority, in
//! the order of its lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::initramfs::kmod_index;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let order = kmod_index::dep_order(&text);
    for line in text.lines() {
        if let Some((path, _)) = line.split_once(':') {
            assert!(order.contains_key(&kmod_index::module_name(path)), "{path}");
        }
    }
    let dep = kmod_index::dep_index(&text);
    let alias = kmod_index::alias_index(&text, &order);
    let symbols = kmod_index::symbols_index(&text, &order);
    // Each index starts with kmod's magic.
    for index in [dep, alias, symbols] {
        assert_eq!(index.get(..4), Some(&[0xB0, 0x07, 0xF4, 0x57][..]));
    }
});
