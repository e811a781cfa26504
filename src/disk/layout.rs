//! The HVM disk's layout: where the root partition and GRUB's core.img go, and the bytes of
//! the partition tables (MBR, or GPT with a BIOS boot partition).
//!
//! Both layouts keep the root filesystem as partition 1, so PV-GRUB's `(hd0,0)` and Linux's
//! `…p1`/`…1` names hold. Offsets are multiples of 1 MiB, which keeps a shifted copy aligned to
//! EBS's 512 KiB blocks.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
const GPT_TAIL_SECTORS: u64 = 33; // backup entries (32) + backup header
const MBR_LIMIT: u64 = (u32::MAX as u64) * SECTOR;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    Mbr,
    Gpt,
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayoutKind::Mbr => "mbr",
            LayoutKind::Gpt => "gpt",
        })
    }
}

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
    #[error("writing the GPT: {0}")]
    Gpt(String),
}

/// Where everything goes on the new disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskLayout {
    pub kind: LayoutKind,
    pub disk_size: u64,
    /// Root partition (number 1): byte offset and length.
    pub root_start: u64,
    pub root_size: u64,
    /// First sector of core.img and the bytes available for it.
    pub core_lba: u64,
    pub core_room: u64,
    /// GPT only: the BIOS boot partition (number 2), byte offset and length.
    pub bios_boot: Option<(u64, u64)>,
}

impl DiskLayout {
    pub fn new(kind: LayoutKind, disk_size: u64, fs_size: u64) -> Result<Self, LayoutError> {
        let disk_size = disk_size / SECTOR * SECTOR;
        let layout = match kind {
            LayoutKind::Mbr => {
                if disk_size > MBR_LIMIT {
                    return Err(LayoutError::MbrTooLarge(disk_size));
                }
                DiskLayout {
                    kind,
                    disk_size,
                    root_start: MIB,
                    root_size: disk_size.saturating_sub(MIB),
                    core_lba: 1,
                    core_room: MIB - SECTOR,
                    bios_boot: None,
                }
            }
            LayoutKind::Gpt => {
                let tail = GPT_TAIL_SECTORS * SECTOR;
                DiskLayout {
                    kind,
                    disk_size,
                    root_start: 2 * MIB,
                    root_size: disk_size.saturating_sub(2 * MIB + tail),
                    core_lba: MIB / SECTOR,
                    core_room: MIB,
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

    /// The regions to write before the root partition (and, for GPT, at the disk's end):
    /// boot sector, partition tables and core.img. `boot_sector` is boot.img already patched
    /// for this layout (see [`crate::grub::patch_boot_img`]); `core` is core.img as built.
    pub fn boot_regions(
        &self,
        boot_sector: &[u8; 512],
        core: &[u8],
        disk_id: u32,
        disk_guid: uuid::Uuid,
    ) -> Result<Vec<(u64, Vec<u8>)>, LayoutError> {
        if core.len() as u64 > self.core_room {
            return Err(LayoutError::CoreTooLarge { size: core.len(), room: self.core_room });
        }
        let mut core = core.to_vec();
        crate::grub::place_core_img(&mut core, self.core_lba);
        let mut regions = Vec::new();
        match self.kind {
            LayoutKind::Mbr => {
                let mut mbr = *boot_sector;
                mbr[0x1B8..0x1BC].copy_from_slice(&disk_id.to_le_bytes());
                mbr[0x1BC..0x1BE].fill(0);
                mbr[0x1BE..0x1FE].fill(0);
                let entry = mbr_entry(0x80, 0x83, self.root_start / SECTOR, self.root_size / SECTOR);
                mbr[0x1BE..0x1CE].copy_from_slice(&entry);
                mbr[0x1FE] = 0x55;
                mbr[0x1FF] = 0xAA;
                regions.push((0, mbr.to_vec()));
            }
            LayoutKind::Gpt => regions.extend(self.gpt_regions(boot_sector, disk_id, disk_guid)?),
        }
        regions.push((self.core_lba * SECTOR, core));
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

    #[test]
    fn mbr_partition_starts_at_1mib_and_fills_the_disk() {
        let l = DiskLayout::new(LayoutKind::Mbr, 3 * GIB, 2 * GIB).unwrap();
        let regions = l.boot_regions(&[0u8; 512], &[1u8; 1024], 0xdeadbeef, uuid::Uuid::nil()).unwrap();
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
        let l = DiskLayout::new(LayoutKind::Gpt, 3 * GIB, 2 * GIB).unwrap();
        let regions = l.boot_regions(&[0u8; 512], &[1u8; 1024], 7, uuid::Uuid::from_u128(42)).unwrap();
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
        assert!(matches!(DiskLayout::new(LayoutKind::Mbr, 2 * GIB, 2 * GIB), Err(LayoutError::TooSmall { .. })));
        assert!(matches!(DiskLayout::new(LayoutKind::Mbr, 3 << 40, GIB), Err(LayoutError::MbrTooLarge(_))));
        assert!(DiskLayout::new(LayoutKind::Gpt, 3 << 40, GIB).is_ok());
    }

    #[test]
    fn chs_saturates() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [0xFE, 0xFF, 0xFF]);
    }
}
