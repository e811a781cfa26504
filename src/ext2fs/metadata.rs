//! Which blocks of a filesystem are metadata, found the way `e2image -r` finds them: the
//! superblocks and group descriptors, the bitmaps, the used part of each inode table, every
//! block of directories, symlinks and reserved inodes, the journal (whole, or its first block
//! and map), xattr blocks, and the extent or indirect blocks of regular files, whose data is
//! left out. A sparse image of these blocks is what e2fsck needs to replay a journal or check
//! the filesystem, so neither reads file data.

use std::ops::Range;

use super::ffi::*;
use super::{Ext2Error, Ext2Fs, Result};

const BLOCK_FLAG_READ_ONLY: libc::c_int = 8;
const BLOCK_ABORT: libc::c_int = 2;
const ENOENT: errcode_t = libc::ENOENT as errcode_t;

/// What the block iteration of one inode marks.
struct Marking {
    bitmap: *mut libc::c_void,
    /// Every block (directories, the journal…), or only the mapping blocks (regular files).
    all: bool,
    /// Also the first data block (the journal's superblock).
    first: bool,
    failed: bool,
}

unsafe extern "C" fn mark_block(
    _fs: ext2_filsys,
    blocknr: *mut u64,
    blockcnt: i64,
    _ref_blk: u64,
    _ref_offset: libc::c_int,
    priv_data: *mut libc::c_void,
) -> libc::c_int {
    let body = || {
        // SAFETY: libext2fs passes a valid block number pointer and the Marking we gave it,
        // which outlives the iteration.
        unsafe {
            let m = &mut *(priv_data as *mut Marking);
            if m.all || blockcnt < 0 || (m.first && blockcnt == 0) {
                ext2fs_mark_block_bitmap2(m.bitmap, *blocknr);
            }
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(()) => 0,
        Err(_) => {
            // SAFETY: as above.
            unsafe { (*(priv_data as *mut Marking)).failed = true };
            BLOCK_ABORT
        }
    }
}

/// Reads a little-endian field of the in-memory superblock.
///
/// # Safety
/// `sup` must point at a live 1024-byte superblock and `T` fit at `off`.
unsafe fn field<T: Copy>(sup: *mut libc::c_void, off: usize) -> T {
    // SAFETY: per the contract.
    unsafe { std::ptr::read_unaligned((sup as *const u8).add(off).cast::<T>()) }
}

impl Ext2Fs {
    /// Byte ranges of the metadata blocks (see the module docs); `whole_journal` takes every
    /// journal block, as a replay needs, instead of its first block and map.
    pub fn metadata_ranges(&self, whole_journal: bool) -> Result<Vec<Range<u64>>> {
        const PATH: &str = "<metadata>";
        let mut bitmap: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: `fs` is open; `bitmap` is an out-pointer freed below.
        self.check("allocating a bitmap for", PATH, unsafe {
            ext2fs_allocate_block_bitmap(self.fs, c"metadata".as_ptr(), &mut bitmap)
        })?;
        let result = self.mark_metadata(bitmap, whole_journal).and_then(|()| self.bitmap_ranges(bitmap, PATH));
        // SAFETY: allocated above and not used after this.
        unsafe { ext2fs_free_block_bitmap(bitmap) };
        result
    }

    fn mark_metadata(&self, bitmap: *mut libc::c_void, whole_journal: bool) -> Result<()> {
        const PATH: &str = "<metadata>";
        // SAFETY: `fs` is open; its superblock fields are read at their on-disk offsets.
        let (groups, sup) = unsafe { ((*self.fs).group_desc_count, (*self.fs).super_) };
        // SAFETY: as above.
        let (inodes_per_group, first_ino, inode_size, journal_ino, rev, ro_compat): (u32, u32, u16, u32, u32, u32) = unsafe {
            (field(sup, 0x28), field(sup, 0x54), field(sup, 0x58), field(sup, 0xE0), field(sup, 0x4C), field(sup, 0x64))
        };
        let (first_ino, inode_size) = if rev == 0 { (11, 128) } else { (first_ino, inode_size) };
        let lazy_tables = ro_compat & (0x10 | 0x400) != 0; // uninit_bg or metadata_csum
        let bs = self.block_size();
        for g in 0..groups {
            // SAFETY: `fs` is open, `g` a valid group and `bitmap` one of its block bitmaps.
            unsafe {
                ext2fs_reserve_super_and_bgd(self.fs, g, bitmap);
                for loc in [ext2fs_block_bitmap_loc(self.fs, g), ext2fs_inode_bitmap_loc(self.fs, g)] {
                    if loc != 0 {
                        ext2fs_mark_block_bitmap2(bitmap, loc);
                    }
                }
                let table = ext2fs_inode_table_loc(self.fs, g);
                let used = if lazy_tables {
                    inodes_per_group.saturating_sub(ext2fs_bg_itable_unused(self.fs, g))
                } else {
                    inodes_per_group
                };
                let blocks = (u64::from(used) * u64::from(inode_size)).div_ceil(bs);
                if table != 0 && blocks > 0 {
                    ext2fs_mark_block_bitmap_range2(bitmap, table, blocks as libc::c_uint);
                }
            }
        }
        let mut scan: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: `fs` is open; `scan` is an out-pointer closed below.
        self.check("scanning the inodes of", PATH, unsafe { ext2fs_open_inode_scan(self.fs, 0, &mut scan) })?;
        let mut buf = vec![0u8; usize::from(inode_size).max(128)];
        let result = (|| {
            loop {
                let mut ino = 0u32;
                // SAFETY: the scan is open and `buf` holds a whole on-disk inode.
                let rc = unsafe {
                    ext2fs_get_next_inode_full(scan, &mut ino, buf.as_mut_ptr().cast(), buf.len() as libc::c_int)
                };
                self.check("scanning the inodes of", PATH, rc)?;
                if ino == 0 {
                    return Ok(());
                }
                let inode = buf.as_mut_ptr().cast::<ext2_inode>();
                // SAFETY: `buf` holds at least the 128-byte inode.
                let (mode, links, dtime) = unsafe { ((*inode).i_mode, (*inode).i_links_count, (*inode).i_dtime) };
                let reserved = ino < first_ino;
                if !reserved && (links == 0 || dtime != 0) {
                    continue;
                }
                // SAFETY: `fs` is open and `inode` a valid inode buffer.
                let acl = unsafe { ext2fs_file_acl_block(self.fs, inode) };
                if acl != 0 {
                    // SAFETY: as above.
                    unsafe { ext2fs_mark_block_bitmap2(bitmap, acl) };
                }
                // SAFETY: as above.
                if unsafe { ext2fs_inode_has_valid_blocks2(self.fs, inode) } == 0 {
                    continue;
                }
                let regular = mode & 0o170000 == 0o100000;
                let journal = ino == journal_ino;
                let all = (reserved && !journal) || !regular || (journal && whole_journal);
                let mut m = Marking { bitmap, all, first: journal, failed: false };
                // SAFETY: `fs` is open; `mark_block` only touches `m`, which outlives the call.
                let rc = unsafe {
                    ext2fs_block_iterate3(
                        self.fs,
                        ino,
                        BLOCK_FLAG_READ_ONLY,
                        std::ptr::null_mut(),
                        mark_block,
                        (&mut m as *mut Marking).cast(),
                    )
                };
                self.check("mapping the blocks of", &format!("<inode {ino}>"), rc)?;
                if m.failed {
                    return Err(Ext2Error::errno("mapping the blocks of", format!("<inode {ino}>"), libc::EIO));
                }
            }
        })();
        // SAFETY: opened above and not used after this.
        unsafe { ext2fs_close_inode_scan(scan) };
        result
    }

    /// The set runs of a block bitmap, as byte ranges.
    pub(super) fn bitmap_ranges(&self, bitmap: *mut libc::c_void, path: &str) -> Result<Vec<Range<u64>>> {
        // SAFETY: `fs` is open; the superblock's s_first_data_block is the u32 at 0x14.
        let (total, first) = unsafe {
            let sup = (*self.fs).super_;
            (ext2fs_blocks_count(sup), u64::from(field::<u32>(sup, 0x14)))
        };
        if bitmap.is_null() || total == 0 {
            return Err(Ext2Error::errno("reading", path, libc::ENODATA));
        }
        let (bs, end) = (self.block_size(), total - 1);
        let mut out = Vec::new();
        let mut at = first;
        while at <= end {
            let (mut set, mut zero) = (0u64, 0u64);
            // SAFETY: the bitmap is live; `set` is an out-pointer.
            let rc = unsafe { ext2fs_find_first_set_block_bitmap2(bitmap, at, end, &mut set) };
            if rc == ENOENT {
                break;
            }
            self.check("reading", path, rc)?;
            // SAFETY: as above; `zero` is an out-pointer.
            let rc = unsafe { ext2fs_find_first_zero_block_bitmap2(bitmap, set, end, &mut zero) };
            if rc == ENOENT {
                zero = end + 1;
            } else {
                self.check("reading", path, rc)?;
            }
            out.push(set * bs..zero * bs);
            at = zero;
        }
        Ok(out)
    }
}
