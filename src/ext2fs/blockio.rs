//! A read-only libext2fs I/O manager over a [`BlockSource`], so the filesystem can be read
//! wherever its blocks live (a local image, an EBS snapshot) and every byte read is counted.
//!
//! libext2fs addresses the channel in blocks of `block_size`; a negative `count` means bytes.
//! The channel is reference-counted by libext2fs (`refcount`); it is freed on the last close.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libc::{c_char, c_int, c_long, c_ulong, c_ulonglong, c_void};

use super::ffi::errcode_t;
use crate::blockdev::BlockSource;

const EXT2_ET_MAGIC_IO_CHANNEL: errcode_t = 2133571333;
const EXT2_ET_MAGIC_IO_MANAGER: errcode_t = 2133571335;
const EXT2_ET_RO_FILSYS: errcode_t = 2133571349;
const EXT2_ET_SHORT_READ: errcode_t = 2133571364;
const EXT2_ET_BAD_DEVICE_NAME: errcode_t = 2133571386;
const EXT2_ET_INVALID_ARGUMENT: errcode_t = 2133571399;
const IO_FLAG_RW: c_int = 0x0001;

type ReadError =
    Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *mut c_void, usize, c_int, errcode_t) -> errcode_t>;
type WriteError =
    Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void, usize, c_int, errcode_t) -> errcode_t>;

/// `struct struct_io_channel` (ext2fs/ext2_io.h).
#[repr(C)]
pub struct IoChannel {
    magic: errcode_t,
    manager: *const IoManager,
    name: *mut c_char,
    block_size: c_int,
    read_error: ReadError,
    write_error: WriteError,
    refcount: c_int,
    flags: c_int,
    reserved: [c_long; 14],
    private_data: *mut c_void,
    app_data: *mut c_void,
    align: c_int,
}

/// `struct struct_io_manager` (ext2fs/ext2_io.h).
#[repr(C)]
pub struct IoManager {
    magic: errcode_t,
    name: *const c_char,
    open: Option<unsafe extern "C" fn(*const c_char, c_int, *mut *mut IoChannel) -> errcode_t>,
    close: Option<unsafe extern "C" fn(*mut IoChannel) -> errcode_t>,
    set_blksize: Option<unsafe extern "C" fn(*mut IoChannel, c_int) -> errcode_t>,
    read_blk: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *mut c_void) -> errcode_t>,
    write_blk: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void) -> errcode_t>,
    flush: Option<unsafe extern "C" fn(*mut IoChannel) -> errcode_t>,
    write_byte: Option<unsafe extern "C" fn(*mut IoChannel, c_ulong, c_int, *const c_void) -> errcode_t>,
    set_option: Option<unsafe extern "C" fn(*mut IoChannel, *const c_char, *const c_char) -> errcode_t>,
    get_stats: Option<unsafe extern "C" fn(*mut IoChannel, *mut *mut c_void) -> errcode_t>,
    read_blk64: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_int, *mut c_void) -> errcode_t>,
    write_blk64: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_int, *const c_void) -> errcode_t>,
    discard: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    cache_readahead: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    zeroout: Option<unsafe extern "C" fn(*mut IoChannel, c_ulonglong, c_ulonglong) -> errcode_t>,
    reserved: [c_long; 14],
}

// SAFETY: the manager is immutable and only holds function pointers and a static string.
unsafe impl Sync for IoManager {}

struct Private {
    source: Arc<dyn BlockSource>,
    offset: u64,
    _name: CString,
}

pub static BLOCK_SOURCE_IO_MANAGER: IoManager = IoManager {
    magic: EXT2_ET_MAGIC_IO_MANAGER,
    name: c"pv2hvm block source".as_ptr(),
    open: Some(open),
    close: Some(close),
    set_blksize: Some(set_blksize),
    read_blk: Some(read_blk),
    write_blk: Some(write_blk),
    flush: Some(flush),
    write_byte: Some(write_byte),
    set_option: Some(set_option),
    get_stats: None,
    read_blk64: Some(read_blk64),
    write_blk64: Some(write_blk64),
    discard: None,
    cache_readahead: None,
    zeroout: None,
    reserved: [0; 14],
};

type Registry = Mutex<HashMap<u64, (Arc<dyn BlockSource>, u64)>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers a source for one `ext2fs_open2` call; returns the device name to pass and a
/// guard that unregisters it.
pub fn register(source: Arc<dyn BlockSource>, offset: u64) -> (CString, Registration) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry().lock().expect("registry").insert(id, (source, offset));
    (CString::new(format!("pv2hvm-source:{id}")).expect("no NUL"), Registration(id))
}

pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().lock().expect("registry").remove(&self.0);
    }
}

unsafe extern "C" fn open(name: *const c_char, flags: c_int, channel: *mut *mut IoChannel) -> errcode_t {
    if flags & IO_FLAG_RW != 0 {
        return EXT2_ET_RO_FILSYS;
    }
    // SAFETY: libext2fs passes the NUL-terminated name given to ext2fs_open2.
    let name = unsafe { CStr::from_ptr(name) }.to_owned();
    let Some(id) =
        name.to_str().ok().and_then(|n| n.strip_prefix("pv2hvm-source:")).and_then(|n| n.parse::<u64>().ok())
    else {
        return EXT2_ET_BAD_DEVICE_NAME;
    };
    let Some((source, offset)) = registry().lock().expect("registry").get(&id).cloned() else {
        return EXT2_ET_BAD_DEVICE_NAME;
    };
    let name_ptr = name.as_ptr() as *mut c_char;
    let private = Box::into_raw(Box::new(Private { source, offset, _name: name }));
    let ch = Box::new(IoChannel {
        magic: EXT2_ET_MAGIC_IO_CHANNEL,
        manager: &BLOCK_SOURCE_IO_MANAGER,
        name: name_ptr,
        block_size: 1024,
        read_error: None,
        write_error: None,
        refcount: 1,
        flags: 0,
        reserved: [0; 14],
        private_data: private.cast(),
        app_data: std::ptr::null_mut(),
        align: 0,
    });
    // SAFETY: channel is a valid out-pointer.
    unsafe { *channel = Box::into_raw(ch) };
    0
}

unsafe extern "C" fn close(channel: *mut IoChannel) -> errcode_t {
    // SAFETY: channel was made by `open` and is alive until its refcount drops to zero.
    unsafe {
        (*channel).refcount -= 1;
        if (*channel).refcount > 0 {
            return 0;
        }
        drop(Box::from_raw((*channel).private_data as *mut Private));
        drop(Box::from_raw(channel));
    }
    0
}

unsafe extern "C" fn set_blksize(channel: *mut IoChannel, blksize: c_int) -> errcode_t {
    if blksize <= 0 {
        return EXT2_ET_INVALID_ARGUMENT;
    }
    // SAFETY: a live channel.
    unsafe { (*channel).block_size = blksize };
    0
}

unsafe extern "C" fn read_blk64(
    channel: *mut IoChannel,
    block: c_ulonglong,
    count: c_int,
    data: *mut c_void,
) -> errcode_t {
    // SAFETY: a live channel whose private data is ours; `data` holds the requested bytes.
    unsafe {
        let ch = &*channel;
        let p = &*(ch.private_data as *const Private);
        let bs = ch.block_size as u64;
        let len = if count < 0 { (-(count as i64)) as u64 } else { count as u64 * bs };
        let buf = std::slice::from_raw_parts_mut(data as *mut u8, len as usize);
        let at = p.offset + block * bs;
        // Past the end of the source reads as zeros (a filesystem may end mid-block).
        let avail = p.source.len().saturating_sub(at).min(len) as usize;
        buf[avail..].fill(0);
        if avail > 0 && p.source.read_exact_at(at, &mut buf[..avail]).is_err() {
            return EXT2_ET_SHORT_READ;
        }
    }
    0
}

unsafe extern "C" fn read_blk(channel: *mut IoChannel, block: c_ulong, count: c_int, data: *mut c_void) -> errcode_t {
    unsafe { read_blk64(channel, block as c_ulonglong, count, data) }
}

unsafe extern "C" fn write_blk(_: *mut IoChannel, _: c_ulong, _: c_int, _: *const c_void) -> errcode_t {
    EXT2_ET_RO_FILSYS
}

unsafe extern "C" fn write_blk64(_: *mut IoChannel, _: c_ulonglong, _: c_int, _: *const c_void) -> errcode_t {
    EXT2_ET_RO_FILSYS
}

unsafe extern "C" fn write_byte(_: *mut IoChannel, _: c_ulong, _: c_int, _: *const c_void) -> errcode_t {
    EXT2_ET_RO_FILSYS
}

unsafe extern "C" fn flush(_: *mut IoChannel) -> errcode_t {
    0
}

unsafe extern "C" fn set_option(_: *mut IoChannel, _: *const c_char, _: *const c_char) -> errcode_t {
    EXT2_ET_INVALID_ARGUMENT
}
