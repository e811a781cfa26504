//! Every declaration pv2hvm needs from libext2fs (e2fsprogs >= 1.46), in one place.
//!
//! Handles are opaque except where pv2hvm reads fields, and those are `repr(C)` copies of
//! the headers' layouts: `ext2_inode` (the 128-byte on-disk inode, unchanged since ext2),
//! the leading fields of `struct_ext2_filsys`, and the I/O channel and manager structs a
//! custom I/O manager fills in (ext2fs/ext2_io.h).
#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_long, c_uint, c_ulong, c_ulonglong, c_void, size_t};

pub type errcode_t = c_long;
pub type ext2_ino_t = u32;
pub type ext2_filsys = *mut ext2_filsys_head;
pub type ext2_file_t = *mut c_void;
pub type io_manager = *mut IoManager;
pub type xattr_handle = *mut c_void;
pub type extent_handle = *mut c_void;

pub const EXT2_ROOT_INO: ext2_ino_t = 2;
pub const EXT2_BOOT_LOADER_INO: ext2_ino_t = 5;
pub const EXT2_FLAG_RW: c_int = 0x01;
pub const EXT2_FLAG_64BITS: c_int = 0x20000;
pub const EXT2_FILE_WRITE: c_int = 0x0001;
pub const EXT2_FT_REG_FILE: c_int = 1;
pub const XATTR_HANDLE_FLAG_RAW: c_uint = 0x0001;
pub const EXT2_ET_DIR_NO_SPACE: errcode_t = 2133571366;
pub const EXT2_ET_FILE_NOT_FOUND: errcode_t = 2133571404;
pub const EXT4_EXTENTS_FL: u32 = 0x0008_0000;
pub const EXT2_ET_MAGIC_IO_CHANNEL: errcode_t = 2133571333;
pub const EXT2_ET_MAGIC_IO_MANAGER: errcode_t = 2133571335;
pub const EXT2_ET_RO_FILSYS: errcode_t = 2133571349;
pub const EXT2_ET_SHORT_READ: errcode_t = 2133571364;
pub const EXT2_ET_SHORT_WRITE: errcode_t = 2133571365;
pub const EXT2_ET_BAD_DEVICE_NAME: errcode_t = 2133571386;
pub const EXT2_ET_INVALID_ARGUMENT: errcode_t = 2133571399;
pub const IO_FLAG_RW: c_int = 0x0001;

/// The leading fields of `struct struct_ext2_filsys` (ext2fs/ext2fs.h), unchanged since
/// e2fsprogs 1.42; pv2hvm reads the in-memory superblock and the block size through them.
#[repr(C)]
pub struct ext2_filsys_head {
    pub magic: errcode_t,
    pub io: *mut IoChannel,
    pub flags: c_int,
    pub device_name: *mut c_char,
    /// The in-memory `struct ext2_super_block`, kept current as blocks are allocated.
    pub super_: *mut c_void,
    pub blocksize: c_uint,
    pub fragsize: c_int,
    pub group_desc_count: u32,
    pub desc_blocks: libc::c_ulong,
    pub group_desc: *mut c_void,
    pub inode_blocks_per_group: c_uint,
    pub inode_map: *mut c_void,
    /// The block bitmap, once `ext2fs_read_bitmaps` loaded it.
    pub block_map: *mut c_void,
}

pub type ReadError =
    Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *mut c_void, usize, c_int, errcode_t) -> errcode_t>;
pub type WriteError =
    Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void, usize, c_int, errcode_t) -> errcode_t>;

/// `struct struct_io_channel` (ext2fs/ext2_io.h).
#[repr(C)]
pub struct IoChannel {
    pub magic: errcode_t,
    pub manager: *const IoManager,
    pub name: *mut c_char,
    pub block_size: c_int,
    pub read_error: ReadError,
    pub write_error: WriteError,
    pub refcount: c_int,
    pub flags: c_int,
    pub reserved: [c_long; 14],
    pub private_data: *mut c_void,
    pub app_data: *mut c_void,
    pub align: c_int,
}

/// `struct struct_io_manager` (ext2fs/ext2_io.h).
#[repr(C)]
pub struct IoManager {
    pub magic: errcode_t,
    pub name: *const c_char,
    pub open: Option<unsafe extern "C" fn(*const c_char, c_int, *mut *mut IoChannel) -> errcode_t>,
    pub close: Option<unsafe extern "C" fn(*mut IoChannel) -> errcode_t>,
    pub set_blksize: Option<unsafe extern "C" fn(*mut IoChannel, c_int) -> errcode_t>,
    pub read_blk: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *mut c_void) -> errcode_t>,
    pub write_blk: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void) -> errcode_t>,
    pub flush: Option<unsafe extern "C" fn(*mut IoChannel) -> errcode_t>,
    pub write_byte: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void) -> errcode_t>,
    pub set_option: Option<unsafe extern "C" fn(*mut IoChannel, *const c_char, *const c_char) -> errcode_t>,
    pub get_stats: Option<unsafe extern "C" fn(*mut IoChannel, *mut *mut c_void) -> errcode_t>,
    pub read_blk64: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_int, *mut c_void) -> errcode_t>,
    pub write_blk64: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_int, *const c_void) -> errcode_t>,
    pub discard: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub cache_readahead: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub zeroout: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub reserved: [c_long; 14],
}

// SAFETY: a manager is immutable after construction and holds only function pointers and a
// pointer to a static string, so sharing it between threads is sound.
unsafe impl Sync for IoManager {}

/// `struct ext2_inode`: the classic 128-byte on-disk inode, Linux `osd2` flavour.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ext2_inode {
    pub i_mode: u16,
    pub i_uid: u16,
    pub i_size: u32,
    pub i_atime: u32,
    pub i_ctime: u32,
    pub i_mtime: u32,
    pub i_dtime: u32,
    pub i_gid: u16,
    pub i_links_count: u16,
    pub i_blocks: u32,
    pub i_flags: u32,
    pub osd1: u32,
    pub i_block: [u32; 15],
    pub i_generation: u32,
    pub i_file_acl: u32,
    pub i_size_high: u32,
    pub i_faddr: u32,
    pub l_i_blocks_hi: u16,
    pub l_i_file_acl_high: u16,
    pub l_i_uid_high: u16,
    pub l_i_gid_high: u16,
    pub l_i_checksum_lo: u16,
    pub l_i_reserved: u16,
}

/// `struct ext2_dir_entry`: the name follows the header.
#[repr(C)]
pub struct ext2_dir_entry {
    pub inode: u32,
    pub rec_len: u16,
    pub name_len: u16,
}

pub type DirIterFn = unsafe extern "C" fn(
    dir: ext2_ino_t,
    entry: c_int,
    dirent: *mut ext2_dir_entry,
    offset: c_int,
    blocksize: c_int,
    buf: *mut c_char,
    priv_data: *mut c_void,
) -> c_int;

pub type BlockIterFn = unsafe extern "C" fn(
    fs: ext2_filsys,
    blocknr: *mut u64,
    blockcnt: i64,
    ref_blk: u64,
    ref_offset: c_int,
    priv_data: *mut c_void,
) -> c_int;

pub type XattrIterFn =
    unsafe extern "C" fn(name: *mut c_char, value: *mut c_char, value_len: size_t, data: *mut c_void) -> c_int;

unsafe extern "C" {
    pub static unix_io_manager: io_manager;
    pub static undo_io_manager: io_manager;
    pub fn set_undo_io_backing_manager(manager: io_manager) -> errcode_t;
    pub fn set_undo_io_backup_file(file_name: *mut c_char) -> errcode_t;
    pub fn io_channel_write_byte(
        channel: *mut IoChannel,
        offset: c_ulong,
        count: c_int,
        data: *const c_void,
    ) -> errcode_t;
    pub fn ext2fs_get_library_version(ver: *mut *const c_char, date: *mut *const c_char) -> c_int;
    pub fn ext2fs_free_blocks_count(sb: *mut c_void) -> u64;
    pub fn ext2fs_blocks_count(sb: *mut c_void) -> u64;
    pub fn ext2fs_allocate_block_bitmap(fs: ext2_filsys, descr: *const c_char, ret: *mut *mut c_void) -> errcode_t;
    pub fn ext2fs_free_block_bitmap(bitmap: *mut c_void);
    pub fn ext2fs_mark_block_bitmap2(bitmap: *mut c_void, block: u64) -> c_int;
    pub fn ext2fs_mark_block_bitmap_range2(bitmap: *mut c_void, block: u64, num: c_uint);
    pub fn ext2fs_reserve_super_and_bgd(fs: ext2_filsys, group: u32, bmap: *mut c_void) -> c_int;
    pub fn ext2fs_block_bitmap_loc(fs: ext2_filsys, group: u32) -> u64;
    pub fn ext2fs_inode_bitmap_loc(fs: ext2_filsys, group: u32) -> u64;
    pub fn ext2fs_inode_table_loc(fs: ext2_filsys, group: u32) -> u64;
    pub fn ext2fs_bg_itable_unused(fs: ext2_filsys, group: u32) -> u32;
    pub fn ext2fs_open_inode_scan(fs: ext2_filsys, buffer_blocks: c_int, ret: *mut *mut c_void) -> errcode_t;
    pub fn ext2fs_get_next_inode_full(
        scan: *mut c_void,
        ino: *mut ext2_ino_t,
        inode: *mut ext2_inode,
        bufsize: c_int,
    ) -> errcode_t;
    pub fn ext2fs_close_inode_scan(scan: *mut c_void);
    pub fn ext2fs_file_acl_block(fs: ext2_filsys, inode: *const ext2_inode) -> u64;
    pub fn ext2fs_inode_has_valid_blocks2(fs: ext2_filsys, inode: *mut ext2_inode) -> c_int;
    pub fn ext2fs_block_iterate3(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        flags: c_int,
        block_buf: *mut c_char,
        func: BlockIterFn,
        priv_data: *mut c_void,
    ) -> errcode_t;
    pub fn ext2fs_find_first_set_block_bitmap2(bitmap: *mut c_void, start: u64, end: u64, out: *mut u64) -> errcode_t;
    pub fn ext2fs_find_first_zero_block_bitmap2(bitmap: *mut c_void, start: u64, end: u64, out: *mut u64) -> errcode_t;
    pub fn ext2fs_write_inode(fs: ext2_filsys, ino: ext2_ino_t, inode: *mut ext2_inode) -> errcode_t;
    pub fn ext2fs_bmap2(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode,
        block_buf: *mut c_char,
        bmap_flags: c_int,
        block: u64,
        ret_flags: *mut c_int,
        phys_blk: *mut u64,
    ) -> errcode_t;

    pub fn ext2fs_open2(
        name: *const c_char,
        io_options: *const c_char,
        flags: c_int,
        superblock: c_int,
        block_size: c_uint,
        manager: io_manager,
        ret_fs: *mut ext2_filsys,
    ) -> errcode_t;
    pub fn ext2fs_read_bitmaps(fs: ext2_filsys) -> errcode_t;
    pub fn ext2fs_close_free(fs: *mut ext2_filsys) -> errcode_t;
    pub fn ext2fs_free(fs: ext2_filsys);

    pub fn ext2fs_lookup(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        namelen: c_int,
        buf: *mut c_char,
        inode: *mut ext2_ino_t,
    ) -> errcode_t;
    pub fn ext2fs_read_inode(fs: ext2_filsys, ino: ext2_ino_t, inode: *mut ext2_inode) -> errcode_t;
    pub fn ext2fs_write_new_inode(fs: ext2_filsys, ino: ext2_ino_t, inode: *mut ext2_inode) -> errcode_t;
    pub fn ext2fs_dir_iterate2(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        flags: c_int,
        block_buf: *mut c_char,
        func: DirIterFn,
        priv_data: *mut c_void,
    ) -> errcode_t;

    pub fn ext2fs_file_open(fs: ext2_filsys, ino: ext2_ino_t, flags: c_int, ret: *mut ext2_file_t) -> errcode_t;
    pub fn ext2fs_file_close(file: ext2_file_t) -> errcode_t;
    pub fn ext2fs_file_read(file: ext2_file_t, buf: *mut c_void, wanted: c_uint, got: *mut c_uint) -> errcode_t;
    pub fn ext2fs_file_write(file: ext2_file_t, buf: *const c_void, nbytes: c_uint, written: *mut c_uint) -> errcode_t;
    pub fn ext2fs_file_set_size2(file: ext2_file_t, size: u64) -> errcode_t;

    pub fn ext2fs_new_inode(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        mode: c_int,
        map: *mut c_void,
        ret: *mut ext2_ino_t,
    ) -> errcode_t;
    pub fn ext2fs_link(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        ino: ext2_ino_t,
        flags: c_int,
    ) -> errcode_t;
    pub fn ext2fs_unlink(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        ino: ext2_ino_t,
        flags: c_int,
    ) -> errcode_t;
    pub fn ext2fs_expand_dir(fs: ext2_filsys, dir: ext2_ino_t) -> errcode_t;
    pub fn ext2fs_inode_alloc_stats2(fs: ext2_filsys, ino: ext2_ino_t, inuse: c_int, isdir: c_int);
    pub fn ext2fs_extent_open2(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode,
        handle: *mut extent_handle,
    ) -> errcode_t;
    pub fn ext2fs_extent_free(handle: extent_handle);

    pub fn ext2fs_xattrs_open(fs: ext2_filsys, ino: ext2_ino_t, handle: *mut xattr_handle) -> errcode_t;
    pub fn ext2fs_xattrs_flags(handle: xattr_handle, new_flags: *mut c_uint, old_flags: *mut c_uint) -> errcode_t;
    pub fn ext2fs_xattrs_read(handle: xattr_handle) -> errcode_t;
    pub fn ext2fs_xattrs_iterate(handle: xattr_handle, func: XattrIterFn, data: *mut c_void) -> errcode_t;
    pub fn ext2fs_xattr_set(
        handle: xattr_handle,
        key: *const c_char,
        value: *const c_void,
        value_len: size_t,
    ) -> errcode_t;
    pub fn ext2fs_xattrs_close(handle: *mut xattr_handle) -> errcode_t;

    pub fn error_message(code: errcode_t) -> *const c_char;
    pub fn initialize_ext2_error_table();
}
