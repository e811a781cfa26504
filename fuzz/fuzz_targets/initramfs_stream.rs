//! The initramfs as a stream: parsed from a reader that hands out a few bytes at a time (so
//! every look-ahead crosses reads), it must parse as it does from memory; and the main
//! archive rebuilt with a file added and a held one replaced (every other member streamed
//! through from the original) must parse again with both, and with every member kept.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pv2hvm::guest::initramfs::Initramfs;

/// Reads at most `step` bytes at a time.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else { return };
    let whole = Initramfs::parse(data);
    let streamed = Initramfs::parse_from(Trickle { data, step: usize::from(step % 17) + 1 }, data.len() as u64);
    assert_eq!(whole.is_ok(), streamed.is_ok(), "{whole:?} {streamed:?}");
    let (Ok(whole), Ok(mut ird)) = (whole, streamed) else { return };
    let paths = |i: &Initramfs| i.entries().map(|e| (e.name.clone(), e.size)).collect::<Vec<_>>();
    assert_eq!(paths(&whole), paths(&ird));
    let before = ird.entries().count();
    let main = ird.main_segment();
    main.put_file("conf/modules", 0o644, b"nvme\n".to_vec());
    main.put_file("fuzz/added.ko", 0o644, b"ELF".to_vec());
    // A re-encoding may fail (a member over what the encoder takes); it must not panic.
    let Ok(out) = ird.to_vec(data) else { return };
    let again = Initramfs::parse(&out).expect("a rebuilt initramfs parses");
    assert_eq!(again.find("conf/modules").and_then(|e| e.data()), Some(&b"nvme\n"[..]));
    assert_eq!(again.find("fuzz/added.ko").map(|e| e.size), Some(3));
    assert!(again.entries().count() >= before);
});
