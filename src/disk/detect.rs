//! Recognises the shape of a PV root volume: a bare ext2/3/4 filesystem (PV-GRUB "hd0") or
//! an MBR disk whose first partition holds it ("hd00"), and names what it does not support.

use serde::{Deserialize, Serialize};

use super::superblock::Superblock;
use crate::io::BlockSource;

/// Where the root filesystem sits in the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLayout {
    /// "unpartitioned" or "mbr".
    pub shape: String,
    /// Byte offset of the root filesystem.
    pub fs_offset: u64,
    /// Bytes the source holds from that offset on.
    pub available: u64,
    pub fs: Superblock,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0}: the source is empty")]
    Empty(String),
    #[error("{image}: {what} is not supported yet")]
    Unsupported { image: String, what: String },
    #[error("{0}: no ext2/ext3/ext4 filesystem or MBR partition table found")]
    Unrecognised(String),
    #[error(
        "{image}: the filesystem is truncated: its superblock spans {fs_size} bytes but only {available} are present"
    )]
    Truncated { image: String, fs_size: u64, available: u64 },
    #[error("{image}: the superblock is corrupt: {what}; check a copy with e2fsck -f")]
    Corrupt { image: String, what: String },
    #[error("{image}: reading at offset {offset}: {err}")]
    Io { image: String, offset: u64, err: std::io::Error },
}

const PROBE: usize = 0x10100 + 64;

/// Names a foreign signature at the start of a volume, if any.
fn foreign_signature(head: &[u8]) -> Option<&'static str> {
    if head.len() >= 4 && &head[0..4] == b"XFSB" {
        return Some("XFS");
    }
    if head.len() >= 0x10048 && &head[0x10040..0x10048] == b"_BHRfS_M" {
        return Some("btrfs");
    }
    for sector in 0..4 {
        let o = sector * 512;
        if head.len() >= o + 0x20 && &head[o..o + 8] == b"LABELONE" && &head[o + 0x18..o + 0x1C] == b"LVM2" {
            return Some("LVM");
        }
    }
    if head.len() >= 0x1010 && &head[0x1000..0x1004] == b"\xfc\x4e\x2b\xa9" {
        return Some("Linux software RAID (md)");
    }
    None
}

fn read_head(src: &dyn BlockSource, offset: u64) -> Result<Vec<u8>, DetectError> {
    let n = (src.len().saturating_sub(offset)).min(PROBE as u64) as usize;
    let mut buf = vec![0u8; n];
    src.read_exact_at(offset, &mut buf).map_err(|err| DetectError::Io { image: src.describe(), offset, err })?;
    Ok(buf)
}

/// Classifies the source and parses its root filesystem's superblock.
pub fn detect(src: &dyn BlockSource) -> Result<SourceLayout, DetectError> {
    let name = src.describe();
    if src.is_empty() {
        return Err(DetectError::Empty(name));
    }
    let head = read_head(src, 0)?;
    if let Some(sb) = superblock_in(&head) {
        return finish(src, "unpartitioned", 0, sb);
    }
    if let Some(what) = foreign_signature(&head) {
        return Err(DetectError::Unsupported { image: name, what: format!("{what} (whole volume)") });
    }
    if head.len() < 512 || head[510] != 0x55 || head[511] != 0xAA {
        return Err(DetectError::Unrecognised(name));
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &head[0x1BE + 16 * i..0x1BE + 16 * (i + 1)];
            let start = u32::from_le_bytes(e[8..12].try_into().expect("4")) as u64;
            let len = u32::from_le_bytes(e[12..16].try_into().expect("4")) as u64;
            (e[4], start, len)
        })
        .collect();
    if entries.iter().any(|e| e.0 == 0xEE) {
        return Err(DetectError::Unsupported { image: name, what: "a GPT-partitioned source".into() });
    }
    let Some(&(ptype, start, _len)) = entries.iter().find(|e| e.0 != 0 && e.1 != 0) else {
        return Err(DetectError::Unrecognised(name));
    };
    match ptype {
        0x8E => return Err(DetectError::Unsupported { image: name, what: "LVM (partition type 8e)".into() }),
        0x05 | 0x0F | 0x85 => {
            return Err(DetectError::Unsupported {
                image: name,
                what: "an extended partition as the first partition".into(),
            });
        }
        _ => {}
    }
    let offset = start * 512;
    if offset >= src.len() {
        return Err(DetectError::Truncated { image: name, fs_size: offset, available: src.len() });
    }
    let part = read_head(src, offset)?;
    if let Some(sb) = superblock_in(&part) {
        return finish(src, "mbr", offset, sb);
    }
    if let Some(what) = foreign_signature(&part) {
        return Err(DetectError::Unsupported { image: name, what: format!("{what} in partition 1") });
    }
    Err(DetectError::Unrecognised(name))
}

fn superblock_in(head: &[u8]) -> Option<Superblock> {
    head.get(1024..2048).and_then(Superblock::parse)
}

fn finish(
    src: &dyn BlockSource,
    shape: &'static str,
    offset: u64,
    fs: Superblock,
) -> Result<SourceLayout, DetectError> {
    let available = src.len().saturating_sub(offset);
    if let Some(what) = fs.corruption() {
        return Err(DetectError::Corrupt { image: src.describe(), what });
    }
    if fs.size_bytes() > available {
        return Err(DetectError::Truncated { image: src.describe(), fs_size: fs.size_bytes(), available });
    }
    Ok(SourceLayout { shape: shape.to_string(), fs_offset: offset, available, fs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_foreign_filesystems() {
        let mut b = vec![0u8; PROBE];
        b[0..4].copy_from_slice(b"XFSB");
        assert_eq!(foreign_signature(&b), Some("XFS"));
        let mut b = vec![0u8; PROBE];
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        assert_eq!(foreign_signature(&b), Some("btrfs"));
        let mut b = vec![0u8; PROBE];
        b[512..520].copy_from_slice(b"LABELONE");
        b[512 + 0x18..512 + 0x1C].copy_from_slice(b"LVM2");
        assert_eq!(foreign_signature(&b), Some("LVM"));
        assert_eq!(foreign_signature(&vec![0u8; PROBE]), None);
    }
}
