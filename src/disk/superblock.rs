//! The ext2/3/4 superblock fields pv2hvm reports and checks, parsed from raw bytes.

use serde::{Deserialize, Serialize};

use crate::io::BlockSource;

pub const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;

const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x200, "sparse_super2"),
];
const INCOMPAT: &[(u32, &str)] = &[
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x2000, "project"),
    (0x8000, "verity"),
];

/// An ext2/3/4 superblock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superblock {
    pub fs_type: String,
    pub uuid: String,
    pub label: String,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub features: Vec<String>,
    pub needs_recovery: bool,
}

impl Superblock {
    /// Parses the 1024-byte superblock; `None` when the magic is absent.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 1024 || u16::from_le_bytes([b[0x38], b[0x39]]) != EXT_MAGIC {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let compat = u32_at(0x5C);
        let incompat = u32_at(0x60);
        let ro_compat = u32_at(0x64);
        let log = u32_at(0x18);
        if log > 6 {
            return None;
        }
        let wide = incompat & 0x80 != 0;
        let blocks = u64::from(u32_at(0x4)) | if wide { u64::from(u32_at(0x150)) << 32 } else { 0 };
        let free_blocks = u64::from(u32_at(0xC)) | if wide { u64::from(u32_at(0x158)) << 32 } else { 0 };
        let mut features = Vec::new();
        for (set, table) in [(compat, COMPAT), (incompat, INCOMPAT), (ro_compat, RO_COMPAT)] {
            features.extend(table.iter().filter(|(bit, _)| set & bit != 0).map(|(_, n)| n.to_string()));
        }
        let fs_type = if incompat & (0x40 | 0x80 | 0x200 | 0x8000) != 0 || ro_compat & (0x8 | 0x40 | 0x400) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let label_raw = &b[0x78..0x88];
        let label_end = label_raw.iter().position(|&c| c == 0).unwrap_or(16);
        Some(Superblock {
            fs_type: fs_type.to_string(),
            uuid: format_uuid(&b[0x68..0x78]),
            label: String::from_utf8_lossy(&label_raw[..label_end]).into_owned(),
            block_size: 1024 << log,
            blocks,
            free_blocks,
            features,
            needs_recovery: incompat & 0x4 != 0,
        })
    }

    /// Reads the superblock of a filesystem starting at `offset` in `src`.
    pub fn read(src: &dyn BlockSource, offset: u64) -> std::io::Result<Option<Self>> {
        let mut buf = vec![0u8; 1024];
        if src.len() < offset + SUPERBLOCK_OFFSET + 1024 {
            return Ok(None);
        }
        src.read_exact_at(offset + SUPERBLOCK_OFFSET, &mut buf)?;
        Ok(Self::parse(&buf))
    }

    /// Bytes the filesystem spans (saturating: a count too large for that is
    /// [`corruption`](Self::corruption), and then also larger than any source).
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// Blocks in use. A free count above the block count is [`corruption`](Self::corruption),
    /// which detection refuses; here it counts as nothing used rather than wrapping.
    pub fn used_blocks(&self) -> u64 {
        self.blocks.saturating_sub(self.free_blocks)
    }

    /// Bytes the superblock counts as free (saturating, as [`size_bytes`](Self::size_bytes)).
    pub fn free_bytes(&self) -> u64 {
        self.free_blocks.saturating_mul(self.block_size)
    }

    /// What makes the counts impossible, if anything: no blocks, more free blocks than
    /// blocks, or a size beyond 2^64 bytes.
    pub fn corruption(&self) -> Option<String> {
        if self.blocks == 0 {
            return Some("its block count is 0".into());
        }
        if self.free_blocks > self.blocks {
            return Some(format!("its free block count {} exceeds its block count {}", self.free_blocks, self.blocks));
        }
        if self.blocks.checked_mul(self.block_size).is_none() {
            return Some(format!("its block count {} of {} bytes overflows 64 bits", self.blocks, self.block_size));
        }
        None
    }

    pub fn has_extents(&self) -> bool {
        self.features.iter().any(|f| f == "extent")
    }
}

fn format_uuid(b: &[u8]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&524288u32.to_le_bytes());
        b[0xC..0x10].copy_from_slice(&1000u32.to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        b[0x5C..0x60].copy_from_slice(&0x4u32.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&(0x2u32 | 0x4 | 0x40).to_le_bytes());
        b[0x68..0x78].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8]);
        b[0x78..0x7F].copy_from_slice(b"pv-root");
        b
    }

    #[test]
    fn parses_fields() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(sb.fs_type, "ext4");
        assert_eq!(sb.uuid, "12345678-9abc-def0-0102-030405060708");
        assert_eq!(sb.label, "pv-root");
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.size_bytes(), 2 << 30);
        assert!(sb.needs_recovery);
        assert!(sb.features.iter().any(|f| f == "has_journal") && sb.features.iter().any(|f| f == "extent"));
    }

    #[test]
    fn impossible_counts_are_corruption_and_never_wrap() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(sb.corruption(), None);
        assert_eq!(sb.used_blocks(), 524288 - 1000);
        let mut b = sample();
        b[0xC..0x10].copy_from_slice(&600000u32.to_le_bytes());
        let sb = Superblock::parse(&b).unwrap();
        assert_eq!(sb.corruption().unwrap(), "its free block count 600000 exceeds its block count 524288");
        assert_eq!(sb.used_blocks(), 0);
        let mut b = sample();
        // 64bit: block count 2^62 of 4 KiB blocks.
        b[0x60..0x64].copy_from_slice(&(0x2u32 | 0x4 | 0x40 | 0x80).to_le_bytes());
        b[0x150..0x154].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let sb = Superblock::parse(&b).unwrap();
        assert!(sb.corruption().unwrap().contains("overflows 64 bits"), "{:?}", sb.corruption());
        assert_eq!(sb.size_bytes(), u64::MAX);
        let mut b = sample();
        b[0x4..0x8].copy_from_slice(&0u32.to_le_bytes());
        b[0xC..0x10].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Superblock::parse(&b).unwrap().corruption().unwrap(), "its block count is 0");
    }

    #[test]
    fn rejects_bad_magic_and_block_size() {
        let mut b = sample();
        b[0x38] = 0;
        assert!(Superblock::parse(&b).is_none());
        let mut b = sample();
        b[0x18] = 40;
        assert!(Superblock::parse(&b).is_none());
    }
}
