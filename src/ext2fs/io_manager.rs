//! A libext2fs I/O manager over pv2hvm's block traits, so the filesystem is read wherever its
//! blocks live (a local image, later an EBS snapshot) and edited through a copy-on-write
//! [`Overlay`] that never writes the source.
//!
//! libext2fs addresses the channel in blocks of `block_size`; a negative `count` means bytes.
//! The channel is reference-counted by libext2fs (`refcount`) and freed on the last close.
//! A failed read or write keeps its `io::Error` in [`ChannelErrors`], so the caller can say
//! what really failed instead of libext2fs' "short read". No panic crosses the C boundary:
//! every callback runs under `catch_unwind`.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use libc::{c_char, c_int, c_ulong, c_ulonglong, c_void};

use super::ffi::*;
use crate::io::{BlockSource, Overlay};

/// What a channel reads from and writes to.
#[derive(Clone)]
pub enum Backing {
    /// Read-only: a source, with the filesystem at byte `offset`.
    Source { source: Arc<dyn BlockSource>, offset: u64 },
    /// Read-write: an overlay addressed from the filesystem's first byte.
    Overlay(Arc<Overlay>),
}

/// The last I/O error of a channel, shared with the filesystem handle that opened it.
#[derive(Default)]
pub struct ChannelErrors(Mutex<Option<std::io::Error>>);

impl ChannelErrors {
    fn set(&self, err: std::io::Error) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
    }
    /// Takes the last error, if any.
    pub fn take(&self) -> Option<std::io::Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

struct Private {
    backing: Backing,
    errors: Arc<ChannelErrors>,
    _name: CString,
}

static MANAGER: IoManager = IoManager {
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

/// The manager to pass to `ext2fs_open2`.
pub fn manager() -> io_manager {
    (&MANAGER as *const IoManager).cast_mut()
}

type Registry = Mutex<HashMap<u64, (Backing, Arc<ChannelErrors>)>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers a backing for one `ext2fs_open2` call; returns the device name to pass, the
/// channel's error slot, and a guard that unregisters the name.
pub fn register(backing: Backing) -> (CString, Arc<ChannelErrors>, Registration) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let errors = Arc::new(ChannelErrors::default());
    registry().lock().unwrap_or_else(PoisonError::into_inner).insert(id, (backing, Arc::clone(&errors)));
    let name = CString::new(format!("pv2hvm-source:{id}")).unwrap_or_default();
    (name, errors, Registration(id))
}

pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// Runs a callback body, turning a panic into an error code instead of unwinding into C.
fn guarded(body: impl FnOnce() -> errcode_t) -> errcode_t {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(EXT2_ET_INVALID_ARGUMENT)
}

unsafe extern "C" fn open(name: *const c_char, flags: c_int, channel: *mut *mut IoChannel) -> errcode_t {
    guarded(|| {
        // SAFETY: libext2fs passes the NUL-terminated name given to ext2fs_open2.
        let name = unsafe { CStr::from_ptr(name) }.to_owned();
        let Some(id) =
            name.to_str().ok().and_then(|n| n.strip_prefix("pv2hvm-source:")).and_then(|n| n.parse::<u64>().ok())
        else {
            return EXT2_ET_BAD_DEVICE_NAME;
        };
        let Some((backing, errors)) = registry().lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
        else {
            return EXT2_ET_BAD_DEVICE_NAME;
        };
        if flags & IO_FLAG_RW != 0 && !matches!(backing, Backing::Overlay(_)) {
            return EXT2_ET_RO_FILSYS;
        }
        let name_ptr = name.as_ptr() as *mut c_char;
        let private = Box::into_raw(Box::new(Private { backing, errors, _name: name }));
        let ch = Box::new(IoChannel {
            magic: EXT2_ET_MAGIC_IO_CHANNEL,
            manager: &MANAGER,
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
        // SAFETY: `channel` is the out-pointer libext2fs passed for the new channel.
        unsafe { *channel = Box::into_raw(ch) };
        0
    })
}

unsafe extern "C" fn close(channel: *mut IoChannel) -> errcode_t {
    guarded(|| {
        // SAFETY: the channel was made by `open` and stays alive until its refcount reaches
        // zero; then both boxes made there are freed exactly once, here.
        unsafe {
            (*channel).refcount -= 1;
            if (*channel).refcount > 0 {
                return 0;
            }
            drop(Box::from_raw((*channel).private_data as *mut Private));
            drop(Box::from_raw(channel));
        }
        0
    })
}

unsafe extern "C" fn set_blksize(channel: *mut IoChannel, blksize: c_int) -> errcode_t {
    if blksize <= 0 {
        return EXT2_ET_INVALID_ARGUMENT;
    }
    // SAFETY: a live channel made by `open`.
    unsafe { (*channel).block_size = blksize };
    0
}

/// The channel's private data and the byte range `(block, count)` addresses.
///
/// # Safety
/// `channel` must be a live channel made by `open`.
/// `None` when a (corrupted) block number puts it beyond 2^64 bytes.
unsafe fn span<'a>(channel: *mut IoChannel, block: c_ulonglong, count: c_int) -> (&'a Private, Option<(u64, usize)>) {
    // SAFETY: per the contract, the channel and its private data are alive.
    let (p, bs) = unsafe { (&*((*channel).private_data as *const Private), (*channel).block_size as u64) };
    let len = if count < 0 { Some(u64::from(count.unsigned_abs())) } else { (count as u64).checked_mul(bs) };
    let range = block
        .checked_mul(bs)
        .zip(len)
        .filter(|&(at, len)| at.checked_add(len).is_some())
        .and_then(|(at, len)| Some((at, usize::try_from(len).ok()?)));
    (p, range)
}

fn out_of_range(block: c_ulonglong) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("block {block} lies beyond 2^64 bytes"))
}

fn read_backing(p: &Private, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    match &p.backing {
        Backing::Source { source, offset } => {
            // Past the end of the source reads as zeros (a filesystem may end mid-block).
            let at = offset.checked_add(at).ok_or_else(|| out_of_range(at))?;
            let avail = source.len().saturating_sub(at).min(buf.len() as u64) as usize;
            buf[avail..].fill(0);
            if avail > 0 { source.read_exact_at(at, &mut buf[..avail]) } else { Ok(()) }
        }
        Backing::Overlay(o) => {
            let avail = o.len().saturating_sub(at).min(buf.len() as u64) as usize;
            buf[avail..].fill(0);
            if avail > 0 { o.read_exact_at(at, &mut buf[..avail]) } else { Ok(()) }
        }
    }
}

unsafe extern "C" fn read_blk64(
    channel: *mut IoChannel,
    block: c_ulonglong,
    count: c_int,
    data: *mut c_void,
) -> errcode_t {
    guarded(|| {
        // SAFETY: a live channel; libext2fs gives `data` room for the requested bytes.
        let (p, range) = unsafe { span(channel, block, count) };
        let Some((at, len)) = range else {
            p.errors.set(out_of_range(block));
            return EXT2_ET_SHORT_READ;
        };
        // SAFETY: as above, `data` holds `len` writable bytes for the duration of the call.
        let buf = unsafe { std::slice::from_raw_parts_mut(data as *mut u8, len) };
        match read_backing(p, at, buf) {
            Ok(()) => 0,
            Err(err) => {
                p.errors.set(err);
                EXT2_ET_SHORT_READ
            }
        }
    })
}

unsafe extern "C" fn read_blk(channel: *mut IoChannel, block: c_ulong, count: c_int, data: *mut c_void) -> errcode_t {
    // SAFETY: the same contract as read_blk64, which this forwards to.
    unsafe { read_blk64(channel, block as c_ulonglong, count, data) }
}

/// Writes `len` bytes at byte `at` of the overlay.
///
/// # Safety
/// `channel` must be live and `data` must hold `len` readable bytes.
unsafe fn write_bytes(channel: *mut IoChannel, at: u64, len: usize, data: *const c_void) -> errcode_t {
    // SAFETY: per the contract.
    let (p, buf) =
        unsafe { (&*((*channel).private_data as *const Private), std::slice::from_raw_parts(data as *const u8, len)) };
    let Backing::Overlay(o) = &p.backing else { return EXT2_ET_RO_FILSYS };
    match o.write_all_at(at, buf) {
        Ok(()) => 0,
        Err(err) => {
            p.errors.set(err);
            EXT2_ET_SHORT_WRITE
        }
    }
}

unsafe extern "C" fn write_blk64(
    channel: *mut IoChannel,
    block: c_ulonglong,
    count: c_int,
    data: *const c_void,
) -> errcode_t {
    guarded(|| {
        // SAFETY: a live channel; `data` holds the bytes libext2fs asks to write.
        unsafe {
            let (p, range) = span(channel, block, count);
            let Some((at, len)) = range else {
                p.errors.set(out_of_range(block));
                return EXT2_ET_SHORT_WRITE;
            };
            write_bytes(channel, at, len, data)
        }
    })
}

unsafe extern "C" fn write_blk(
    channel: *mut IoChannel,
    block: c_ulong,
    count: c_int,
    data: *const c_void,
) -> errcode_t {
    // SAFETY: the same contract as write_blk64, which this forwards to.
    unsafe { write_blk64(channel, block as c_ulonglong, count, data) }
}

unsafe extern "C" fn write_byte(
    channel: *mut IoChannel,
    offset: c_ulong,
    size: c_int,
    data: *const c_void,
) -> errcode_t {
    if size < 0 {
        return EXT2_ET_INVALID_ARGUMENT;
    }
    // SAFETY: a live channel; `data` holds `size` bytes (the superblock write path).
    guarded(|| unsafe { write_bytes(channel, offset, size as usize, data) })
}

unsafe extern "C" fn flush(_: *mut IoChannel) -> errcode_t {
    0
}

unsafe extern "C" fn set_option(_: *mut IoChannel, _: *const c_char, _: *const c_char) -> errcode_t {
    EXT2_ET_INVALID_ARGUMENT
}
