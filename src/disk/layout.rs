//! The HVM disk's layout: where the root filesystem and GRUB's core.img go, and the bytes of
//! the boot sector and partition tables.
//!
//! - in-place: the filesystem stays where it is. An unpartitioned source becomes a whole-disk
//!   filesystem behind boot.img in sector 0 (ext never uses its first 1,024 bytes); a
//!   partitioned one keeps its partition table. core.img goes in the gap after the MBR when
//!   partition 1 starts at 1 MiB or later, else in blocks of the filesystem's reserved
//!   boot-loader inode (5), reached through diskboot's blocklist.
//! - mbr and gpt: the filesystem moves into partition 1, so PV-GRUB's `(hd0,0)` and Linux's
//!   `…p1`/`…1` names hold. Offsets are multiples of 1 MiB, which keeps a shifted copy aligned
//!   to EBS's 512 KiB blocks.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use super::detect::SourceLayout;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
const GPT_TAIL_SECTORS: u64 = 33; // backup entries (32) + backup header
const MBR_LIMIT: u64 = (u32::MAX as u64) * SECTOR;

pub use crate::spec::LayoutKind;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "a {size}-byte disk cannot hold the {fs}-byte filesystem behind its boot area (need at least {need} bytes)"
    )]
    TooSmall { size: u64, fs: u64, need: u64 },
    #[error("an MBR disk cannot address {0} bytes: use --layout gpt")]
    MbrTooLarge(u64),
    #[error("core.img is {size} bytes but its gap holds {room}")]
    CoreTooLarge { size: usize, room: u64 },
    #[error("an in-place disk keeps the source's {source_len} bytes: --size cannot shrink it to {size}")]
    Shrink { size: u64, source_len: u64 },
    #[error(
        "in place, core.img needs {need} bytes of free space in the root filesystem, which has {free}: use --layout mbr"
    )]
    NoRoomForCore { need: u64, free: u64 },
    #[error(
        "in place, core.img goes in the root filesystem's boot-loader inode 5, which already holds {0} bytes (another bootloader's): use --layout mbr"
    )]
    BootLoaderInodeInUse(u64),
    #[error("writing the GPT: {0}")]
    Gpt(String),
    #[error(transparent)]
    Grub(#[from] crate::boot::grub::GrubError),
}

/// Where core.img lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorePlacement {
    /// Contiguous sectors outside the filesystem (`core_lba`, `core_room`): the gap after the
    /// MBR, or the BIOS boot partition.
    Gap,
    /// Blocks of the root filesystem's reserved boot-loader inode (5), allocated at conversion
    /// and reached through diskboot's blocklist.
    BootLoaderInode,
}

/// Where everything goes on the new disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    pub kind: LayoutKind,
    pub disk_size: u64,
    /// The root filesystem: byte offset and length (partition 1 for mbr and gpt).
    pub root_start: u64,
    pub root_size: u64,
    /// Partition number of the root filesystem; 0 for a whole-disk filesystem.
    pub root_partition: u32,
    /// First sector of core.img and the bytes available for it (a gap; 0 in the filesystem).
    pub core_lba: u64,
    pub core_room: u64,
    pub core_placement: CorePlacement,
    /// Why core.img goes where it goes.
    pub core_reason: String,
    /// GPT only: the BIOS boot partition (number 2), byte offset and length.
    pub bios_boot: Option<(u64, u64)>,
}

/// The in-place core.img placement: the post-MBR gap when partition 1 starts at 1 MiB or
/// later, else the boot-loader inode.
fn in_place_core(source: &SourceLayout) -> (u64, u64, CorePlacement, String) {
    if source.shape == "mbr" && source.fs_offset >= MIB {
        let room = source.fs_offset - SECTOR;
        let why = format!("the gap between the MBR and partition 1 ({} KiB)", room / 1024);
        (1, room, CorePlacement::Gap, why)
    } else {
        let before = if source.shape == "mbr" {
            format!("partition 1 starts at sector {}, leaving no room for it", source.fs_offset / SECTOR)
        } else {
            "the filesystem starts at sector 0, so there is no gap".to_string()
        };
        let why = format!(
            "blocks of the root filesystem's reserved boot-loader inode 5, which e2fsck, resize2fs and defragmenters leave where they are: {before}"
        );
        (0, 0, CorePlacement::BootLoaderInode, why)
    }
}

impl DiskLayout {
    /// The layout of a `disk_size`-byte disk for `source`.
    pub fn new(kind: LayoutKind, disk_size: u64, source: &SourceLayout) -> Result<Self, LayoutError> {
        let fs_size = source.fs.size_bytes();
        let disk_size = disk_size / SECTOR * SECTOR;
        let gap = |lba: u64, room: u64| (lba, room, CorePlacement::Gap, String::new());
        let layout = match kind {
            LayoutKind::InPlace => {
                let source_len = source.fs_offset + source.available;
                if disk_size < source_len / SECTOR * SECTOR {
                    return Err(LayoutError::Shrink { size: disk_size, source_len });
                }
                if source.shape == "mbr" && disk_size > MBR_LIMIT {
                    return Err(LayoutError::MbrTooLarge(disk_size));
                }
                let (core_lba, core_room, core_placement, core_reason) = in_place_core(source);
                DiskLayout {
                    kind,
                    disk_size,
                    root_start: source.fs_offset,
                    root_size: fs_size,
                    root_partition: if source.shape == "mbr" { 1 } else { 0 },
                    core_lba,
                    core_room,
                    core_placement,
                    core_reason,
                    bios_boot: None,
                }
            }
            LayoutKind::Mbr => {
                if disk_size > MBR_LIMIT {
                    return Err(LayoutError::MbrTooLarge(disk_size));
                }
                let (core_lba, core_room, core_placement, _) = gap(1, MIB - SECTOR);
                DiskLayout {
                    kind,
                    disk_size,
                    root_start: MIB,
                    root_size: disk_size.saturating_sub(MIB),
                    root_partition: 1,
                    core_lba,
                    core_room,
                    core_placement,
                    core_reason: "the gap between the MBR and partition 1 at 1 MiB".into(),
                    bios_boot: None,
                }
            }
            LayoutKind::Gpt => {
                let tail = GPT_TAIL_SECTORS * SECTOR;
                let (core_lba, core_room, core_placement, _) = gap(MIB / SECTOR, MIB);
                DiskLayout {
                    kind,
                    disk_size,
                    root_start: 2 * MIB,
                    root_size: disk_size.saturating_sub(2 * MIB + tail),
                    root_partition: 1,
                    core_lba,
                    core_room,
                    core_placement,
                    core_reason: "the BIOS boot partition (2) at 1 MiB".into(),
                    bios_boot: Some((MIB, MIB)),
                }
            }
        };
        if layout.root_size < fs_size {
            let need = fs_size + (disk_size - layout.root_size);
            return Err(LayoutError::TooSmall { size: disk_size, fs: fs_size, need });
        }
        Ok(layout)
    }

    /// The regions to write outside the root filesystem: boot sector, partition tables and,
    /// in a gap, core.img. `boot_sector` is boot.img already patched (see
    /// [`crate::boot::grub::patch_boot_img`]); `core` is core.img as built (ignored when it
    /// lives in the filesystem); `source_mbr` is the source's sector 0, whose disk signature
    /// and partition table an in-place partitioned disk keeps.
    pub fn boot_regions(
        &self,
        boot_sector: &[u8; 512],
        core: &[u8],
        disk_id: u32,
        disk_guid: uuid::Uuid,
        source_mbr: &[u8; 512],
    ) -> Result<Vec<(u64, Vec<u8>)>, LayoutError> {
        let mut regions = Vec::new();
        if self.core_placement == CorePlacement::Gap {
            if core.len() as u64 > self.core_room {
                return Err(LayoutError::CoreTooLarge { size: core.len(), room: self.core_room });
            }
            let mut core = core.to_vec();
            crate::boot::grub::place_core_img(&mut core, self.core_lba)?;
            regions.push((self.core_lba * SECTOR, core));
        }
        match self.kind {
            LayoutKind::InPlace => {
                let mut mbr = *boot_sector;
                if self.root_partition == 0 {
                    // A whole-disk filesystem: no disk signature and no partition entries.
                    mbr[0x1B8..0x1FE].fill(0);
                } else {
                    mbr[0x1B8..0x1FE].copy_from_slice(&source_mbr[0x1B8..0x1FE]);
                }
                mbr[0x1FE] = 0x55;
                mbr[0x1FF] = 0xAA;
                regions.insert(0, (0, mbr.to_vec()));
            }
            LayoutKind::Mbr => {
                let mut mbr = *boot_sector;
                mbr[0x1B8..0x1BC].copy_from_slice(&disk_id.to_le_bytes());
                mbr[0x1BC..0x1BE].fill(0);
                mbr[0x1BE..0x1FE].fill(0);
                let entry = mbr_entry(0x80, 0x83, self.root_start / SECTOR, self.root_size / SECTOR);
                mbr[0x1BE..0x1CE].copy_from_slice(&entry);
                mbr[0x1FE] = 0x55;
                mbr[0x1FF] = 0xAA;
                regions.insert(0, (0, mbr.to_vec()));
            }
            LayoutKind::Gpt => {
                let mut tables = self.gpt_regions(boot_sector, disk_id, disk_guid)?;
                tables.append(&mut regions);
                regions = tables;
            }
        }
        Ok(regions)
    }

    fn gpt_regions(
        &self,
        boot_sector: &[u8; 512],
        disk_id: u32,
        disk_guid: uuid::Uuid,
    ) -> Result<Vec<(u64, Vec<u8>)>, LayoutError> {
        let err = |e: &dyn std::fmt::Display| LayoutError::Gpt(e.to_string());
        let total = self.disk_size / SECTOR;
        let dev = SectorMap::new(self.disk_size);
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .create_from_device(dev, Some(disk_guid))
            .map_err(|e| err(&e))?;
        disk.add_partition_at(
            "root",
            1,
            self.root_start / SECTOR,
            self.root_size / SECTOR,
            gpt::partition_types::LINUX_FS,
            0,
        )
        .map_err(|e| err(&e))?;
        let (bb_start, bb_len) = self.bios_boot.expect("gpt has a BIOS boot partition");
        disk.add_partition_at("bios-boot", 2, bb_start / SECTOR, bb_len / SECTOR, gpt::partition_types::BIOS, 0)
            .map_err(|e| err(&e))?;
        let mut dev = disk.write().map_err(|e| err(&e))?;
        let mut pmbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total - 1).unwrap_or(u32::MAX));
        let mut code = [0u8; 440];
        code.copy_from_slice(&boot_sector[..440]);
        pmbr.set_bootcode(code);
        pmbr.set_disk_signature(disk_id.to_le_bytes());
        pmbr.overwrite_lba0(&mut dev).map_err(|e| err(&e))?;
        Ok(dev.regions())
    }
}

fn mbr_entry(status: u8, ptype: u8, start: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = status;
    e[1..4].copy_from_slice(&chs(start));
    e[4] = ptype;
    e[5..8].copy_from_slice(&chs(start + sectors - 1));
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    e
}

/// CHS address with 255 heads and 63 sectors per track, saturating as fdisk does.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, spt) = (255u64, 63u64);
    let c = lba / (heads * spt);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / spt) % heads;
    let s = lba % spt + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// An in-memory disk that keeps only the sectors written to it; the rest read as zeros.
#[derive(Debug)]
struct SectorMap {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, [u8; 512]>,
}

impl SectorMap {
    fn new(len: u64) -> Self {
        SectorMap { len, pos: 0, sectors: BTreeMap::new() }
    }

    /// Written sectors merged into contiguous (offset, bytes) runs.
    fn regions(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&lba, data) in &self.sectors {
            match out.last_mut() {
                Some((off, buf)) if *off + buf.len() as u64 == lba * SECTOR => buf.extend_from_slice(data),
                _ => out.push((lba * SECTOR, data.to_vec())),
            }
        }
        out
    }
}

impl Read for SectorMap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = self.sectors.get(&(p / SECTOR)).map_or(0, |s| s[(p % SECTOR) as usize]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SectorMap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past the end of the disk"));
        }
        for (i, b) in buf.iter().enumerate() {
            let p = self.pos + i as u64;
            self.sectors.entry(p / SECTOR).or_insert([0u8; 512])[(p % SECTOR) as usize] = *b;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SectorMap {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before start"));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A source holding a `fs`-byte filesystem at `offset`, in a disk of `len` bytes.
    fn source(shape: &str, offset: u64, fs: u64, len: u64) -> SourceLayout {
        SourceLayout {
            shape: shape.into(),
            fs_offset: offset,
            available: len - offset,
            fs: crate::disk::superblock::Superblock {
                fs_type: "ext4".into(),
                uuid: "u".into(),
                label: String::new(),
                block_size: 4096,
                blocks: fs / 4096,
                free_blocks: 0,
                features: Vec::new(),
                needs_recovery: false,
            },
        }
    }

    fn fs(size: u64) -> SourceLayout {
        source("unpartitioned", 0, size, size)
    }

    const NO_MBR: [u8; 512] = [0u8; 512];

    #[test]
    fn mbr_partition_starts_at_1mib_and_fills_the_disk() {
        let l = DiskLayout::new(LayoutKind::Mbr, 3 * GIB, &fs(2 * GIB)).unwrap();
        let regions = l.boot_regions(&[0u8; 512], &[0u8; 1024], 0xdeadbeef, uuid::Uuid::nil(), &NO_MBR).unwrap();
        let mbr = &regions[0].1;
        assert_eq!(regions[0].0, 0);
        assert_eq!(&mbr[0x1B8..0x1BC], &0xdeadbeefu32.to_le_bytes());
        assert_eq!(mbr[0x1BE], 0x80);
        assert_eq!(mbr[0x1C2], 0x83);
        assert_eq!(u32::from_le_bytes(mbr[0x1C6..0x1CA].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(mbr[0x1CA..0x1CE].try_into().unwrap()) as u64, (3 * GIB - MIB) / 512);
        assert_eq!(&mbr[0x1FE..], &[0x55, 0xAA]);
        assert_eq!(mbr[0x1CE..0x1FE], [0u8; 48]);
        assert_eq!(regions[1].0, 512);
    }

    #[test]
    fn gpt_has_root_first_and_bios_boot_second() {
        let l = DiskLayout::new(LayoutKind::Gpt, 3 * GIB, &fs(2 * GIB)).unwrap();
        let regions = l.boot_regions(&[0u8; 512], &[0u8; 1024], 7, uuid::Uuid::from_u128(42), &NO_MBR).unwrap();
        let head = &regions[0].1;
        assert_eq!(regions[0].0, 0);
        assert_eq!(head[0x1C2], 0xEE, "protective MBR");
        assert_eq!(&head[512..520], b"EFI PART");
        let entry = &head[1024..1024 + 128];
        assert_eq!(u64::from_le_bytes(entry[32..40].try_into().unwrap()), 4096, "root first LBA");
        let entry2 = &head[1024 + 128..1024 + 256];
        assert_eq!(u64::from_le_bytes(entry2[32..40].try_into().unwrap()), 2048, "BIOS boot first LBA");
        assert_eq!(u64::from_le_bytes(entry2[40..48].try_into().unwrap()), 4095);
        // The backup header sits in the last sector.
        let (tail_off, tail) = &regions[1];
        assert_eq!(tail_off + tail.len() as u64, 3 * GIB);
        assert_eq!(&tail[tail.len() - 512..tail.len() - 504], b"EFI PART");
        // core.img goes to the BIOS boot partition.
        assert_eq!(regions.last().unwrap().0, MIB);
    }

    #[test]
    fn refuses_too_small_and_huge_mbr() {
        assert!(matches!(DiskLayout::new(LayoutKind::Mbr, 2 * GIB, &fs(2 * GIB)), Err(LayoutError::TooSmall { .. })));
        assert!(matches!(DiskLayout::new(LayoutKind::Mbr, 3 << 40, &fs(GIB)), Err(LayoutError::MbrTooLarge(_))));
        assert!(DiskLayout::new(LayoutKind::Gpt, 3 << 40, &fs(GIB)).is_ok());
        assert!(matches!(DiskLayout::new(LayoutKind::InPlace, GIB, &fs(2 * GIB)), Err(LayoutError::Shrink { .. })));
    }

    #[test]
    fn in_place_whole_disk_keeps_the_filesystem_at_zero_with_no_partition() {
        let l = DiskLayout::new(LayoutKind::InPlace, 2 * GIB, &fs(2 * GIB)).unwrap();
        assert_eq!((l.root_start, l.root_partition, &l.core_placement), (0, 0, &CorePlacement::BootLoaderInode));
        assert!(l.core_reason.contains("boot-loader inode 5"), "{}", l.core_reason);
        let mut boot = [0xB0u8; 512];
        boot[0x1B8..].fill(0x77);
        let regions = l.boot_regions(&boot, &[0u8; 1024], 9, uuid::Uuid::nil(), &[0x11u8; 512]).unwrap();
        assert_eq!(regions.len(), 1, "core.img is not written outside the filesystem");
        let (at, mbr) = &regions[0];
        assert_eq!((*at, mbr.len()), (0, 512));
        assert!(mbr[..0x1B8].iter().all(|&b| b == 0xB0), "boot code kept");
        assert!(mbr[0x1B8..0x1FE].iter().all(|&b| b == 0), "no signature, no partition entries");
        assert_eq!(&mbr[0x1FE..], &[0x55, 0xAA]);
        // Growing is allowed.
        assert_eq!(DiskLayout::new(LayoutKind::InPlace, 3 * GIB, &fs(2 * GIB)).unwrap().disk_size, 3 * GIB);
    }

    #[test]
    fn in_place_partitioned_keeps_the_table_and_uses_the_gap_when_there_is_one() {
        let mut src_mbr = [0u8; 512];
        src_mbr[0x1B8..0x1FE].fill(0x42);
        let at_1mib = DiskLayout::new(LayoutKind::InPlace, 3 * GIB, &source("mbr", MIB, 2 * GIB, 3 * GIB)).unwrap();
        assert_eq!((at_1mib.root_start, at_1mib.root_partition), (MIB, 1));
        assert_eq!((at_1mib.core_placement.clone(), at_1mib.core_lba), (CorePlacement::Gap, 1));
        let regions = at_1mib.boot_regions(&[0u8; 512], &[0u8; 1024], 9, uuid::Uuid::nil(), &src_mbr).unwrap();
        assert_eq!(regions.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 512]);
        assert!(regions[0].1[0x1B8..0x1FE].iter().all(|&b| b == 0x42), "the source's table is kept");
        let at_63 = DiskLayout::new(LayoutKind::InPlace, 3 * GIB, &source("mbr", 63 * 512, 2 * GIB, 3 * GIB)).unwrap();
        assert_eq!(at_63.core_placement, CorePlacement::BootLoaderInode);
        assert!(at_63.core_reason.contains("sector 63"), "{}", at_63.core_reason);
    }

    #[test]
    fn chs_saturates() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [0xFE, 0xFF, 0xFF]);
    }
}
