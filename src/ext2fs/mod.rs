//! Safe wrapper over libext2fs for reading and editing guest files without mounting.
//!
//! Call patterns follow e2fsprogs' `misc/create_inode.c`: a new file is `new_inode` + `link`
//! (expanding the directory on `DIR_NO_SPACE`) + `inode_alloc_stats2` + `write_new_inode`, and
//! its data goes through `ext2fs_file_*`. A rewrite never edits the original inode: the original
//! is renamed to `<name>.pv2hvm-orig` (keeping its inode, owner, mode and xattrs untouched) and
//! the new content goes into a fresh inode that copies the owner, mode and xattrs.

mod ffi;
mod io_manager;
mod metadata;
mod stream;
pub mod undo;

pub use stream::FileReader;

use std::ffi::{CStr, CString};
use std::sync::Arc;

use ffi::*;
use io_manager::{Backing, ChannelErrors};

use crate::io::{BlockSource, Overlay};

/// Suffix of the backup kept beside every rewritten guest file.
pub const BACKUP_SUFFIX: &str = ".pv2hvm-orig";

const MAX_SYMLINK_HOPS: usize = 16;

/// What failed: a libext2fs error code, or an errno pv2hvm's own path walk produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ext2(i64),
    Errno(i32),
}

/// A libext2fs failure, with the operation and guest path it concerned, and the I/O error
/// underneath when the block layer failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {message}")]
pub struct Ext2Error {
    pub op: &'static str,
    pub path: String,
    pub code: Code,
    pub message: String,
    /// The source's or overlay's own error, when a block read or write failed.
    #[source]
    pub io: Option<std::io::Error>,
}

impl Ext2Error {
    fn new(op: &'static str, path: impl Into<String>, code: errcode_t) -> Self {
        // SAFETY: error_message returns a pointer to a static or thread-local string, which
        // is copied out before anything else calls into com_err.
        let message = unsafe {
            let p = error_message(code);
            if p.is_null() { format!("error {code}") } else { CStr::from_ptr(p).to_string_lossy().into_owned() }
        };
        Ext2Error { op, path: path.into(), code: Code::Ext2(code), message, io: None }
    }

    fn errno(op: &'static str, path: impl Into<String>, errno: i32) -> Self {
        let message = std::io::Error::from_raw_os_error(errno).to_string();
        Ext2Error { op, path: path.into(), code: Code::Errno(errno), message, io: None }
    }

    /// True when the error says the path does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == Code::Ext2(EXT2_ET_FILE_NOT_FOUND)
    }
}

pub type Result<T> = std::result::Result<T, Ext2Error>;

/// The linked libext2fs' version string.
pub fn library_version() -> String {
    let mut ver: *const libc::c_char = std::ptr::null();
    let mut date: *const libc::c_char = std::ptr::null();
    // SAFETY: the library stores pointers to static strings in the two out-pointers.
    unsafe {
        ext2fs_get_library_version(&mut ver, &mut date);
        if ver.is_null() { "unknown".into() } else { CStr::from_ptr(ver).to_string_lossy().into_owned() }
    }
}

/// What a directory entry or path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of one inode, as pv2hvm needs it.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub ino: u32,
    pub kind: Kind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

impl Stat {
    fn from_inode(ino: u32, i: &ext2_inode) -> Self {
        let kind = match i.i_mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            _ => Kind::Other,
        };
        Stat {
            ino,
            kind,
            mode: i.i_mode,
            uid: u32::from(i.i_uid) | (u32::from(i.l_i_uid_high) << 16),
            gid: u32::from(i.i_gid) | (u32::from(i.l_i_gid_high) << 16),
            size: u64::from(i.i_size) | (u64::from(i.i_size_high) << 32),
        }
    }
}

/// A path resolved to the directory entry that names the final file (symlinks followed).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The canonical guest path of the file itself, after following symlinks.
    pub path: String,
    pub dir_ino: u32,
    pub name: String,
    pub stat: Stat,
}

/// One open filesystem. Dropping it closes the filesystem (flushing when opened writable).
pub struct Ext2Fs {
    fs: ext2_filsys,
    writable: bool,
    extents: bool,
    errors: Arc<ChannelErrors>,
    /// Every whole file read, in order: (path, bytes). The plan reports it.
    read_log: std::sync::Mutex<Vec<(String, u64)>>,
    /// Read-only: the small files read so far, by inode, so that a second look (two parts of
    /// the inspection reading one config) costs no reads.
    small_files: std::sync::Mutex<std::collections::HashMap<u32, Arc<[u8]>>>,
}

/// The largest file read whole (README, "Limits"): configs, module indexes, modules. An
/// initramfs is read as a stream instead ([`Ext2Fs::open_file`]).
pub const MAX_WHOLE_FILE: u64 = 64 << 20;

/// Files up to this size are kept once read from a read-only filesystem.
const SMALL_FILE: u64 = 1 << 20;

impl Ext2Fs {
    /// Opens, read-only, the filesystem at byte `offset` of a block source: every read goes
    /// through the source.
    pub fn open_source(source: Arc<dyn BlockSource>, offset: u64) -> Result<Self> {
        let shown = source.describe();
        let extents = crate::disk::superblock::Superblock::read(source.as_ref(), offset)
            .ok()
            .flatten()
            .is_some_and(|sb| sb.has_extents());
        Self::open_with(&shown, Backing::Source { source, offset }, false, extents)
    }

    /// Opens, writable, the filesystem that starts at the first byte of `overlay`: reads
    /// come through it and every write stays in it.
    pub fn open_overlay(overlay: Arc<Overlay>) -> Result<Self> {
        let shown = overlay.describe();
        let extents = crate::disk::superblock::Superblock::read(overlay.as_ref(), 0)
            .ok()
            .flatten()
            .is_some_and(|sb| sb.has_extents());
        Self::open_with(&shown, Backing::Overlay(overlay), true, extents)
    }

    fn open_with(shown: &str, backing: Backing, writable: bool, extents: bool) -> Result<Self> {
        let mut flags = EXT2_FLAG_64BITS;
        if writable {
            flags |= EXT2_FLAG_RW;
        }
        static ERROR_TABLE: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers libext2fs' message table with com_err, once per process.
        ERROR_TABLE.call_once(|| unsafe { initialize_ext2_error_table() });
        let (name, errors, _registration) = io_manager::register(backing);
        let mut fs: ext2_filsys = std::ptr::null_mut();
        let with_io = |mut e: Ext2Error| {
            e.io = errors.take();
            e
        };
        // SAFETY: `name` names the registered backing for the duration of the open (the
        // channel keeps its own copy after); `fs` is only used when the open succeeded.
        let rc = unsafe { ext2fs_open2(name.as_ptr(), std::ptr::null(), flags, 0, 0, io_manager::manager(), &mut fs) };
        if rc != 0 {
            return Err(with_io(Ext2Error::new("opening", shown, rc)));
        }
        // Bitmaps are only needed to allocate; a read-only open skips reading them.
        if writable {
            // SAFETY: `fs` is open.
            let rc = unsafe { ext2fs_read_bitmaps(fs) };
            if rc != 0 {
                // SAFETY: `fs` is open and not used after this.
                unsafe { ext2fs_free(fs) };
                return Err(with_io(Ext2Error::new("reading bitmaps of", shown, rc)));
            }
        }
        Ok(Ext2Fs { fs, writable, extents, errors, read_log: Default::default(), small_files: Default::default() })
    }

    /// `Ok(())` for 0; otherwise the error, with the channel's I/O error attached.
    fn check(&self, op: &'static str, path: &str, code: errcode_t) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let mut e = Ext2Error::new(op, path, code);
        e.io = self.errors.take();
        Err(e)
    }

    /// Free space, from libext2fs' in-memory superblock (it tracks allocations as they happen).
    pub fn free_bytes(&self) -> u64 {
        // SAFETY: `fs` is open, so `super_` points at its live in-memory superblock.
        unsafe { ext2fs_free_blocks_count((*self.fs).super_).saturating_mul(u64::from((*self.fs).blocksize)) }
    }

    /// Flushes and closes, reporting errors that a drop would swallow.
    pub fn close(mut self) -> Result<()> {
        // SAFETY: `fs` is open; close_free frees it and nulls the pointer, so Drop skips it.
        let rc = unsafe { ext2fs_close_free(&mut self.fs) };
        self.fs = std::ptr::null_mut();
        self.check("closing", "filesystem", rc)
    }

    fn read_inode(&self, ino: u32, path: &str) -> Result<ext2_inode> {
        let mut inode = ext2_inode::default();
        // SAFETY: `fs` is open and `inode` is a full-size inode buffer it fills.
        self.check("reading inode of", path, unsafe { ext2fs_read_inode(self.fs, ino, &mut inode) })?;
        Ok(inode)
    }

    fn lookup(&self, dir: u32, name: &str, path: &str) -> Result<u32> {
        let mut ino = 0;
        // SAFETY: `fs` is open; `name` is valid for `namelen` bytes and `ino` is an out-pointer.
        let rc = unsafe {
            ext2fs_lookup(self.fs, dir, name.as_ptr().cast(), name.len() as i32, std::ptr::null_mut(), &mut ino)
        };
        self.check("looking up", path, rc)?;
        Ok(ino)
    }

    /// Resolves a guest path, following symlinks (also in the final component), the way the
    /// guest kernel would with `/` as the filesystem root.
    pub fn resolve(&self, path: &str) -> Result<Resolved> {
        let mut pending: Vec<String> = components(path);
        pending.reverse();
        // Directories walked so far: (parent ino, name, ino).
        let mut stack: Vec<(u32, String, u32)> = Vec::new();
        let mut hops = 0;
        let joined = |stack: &[(u32, String, u32)], last: &str| {
            let mut parts: Vec<&str> = stack.iter().map(|e| e.1.as_str()).collect();
            if !last.is_empty() {
                parts.push(last);
            }
            format!("/{}", parts.join("/"))
        };
        while let Some(comp) = pending.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let parent = stack.last().map(|e| e.2).unwrap_or(EXT2_ROOT_INO);
            let ino = self.lookup(parent, &comp, path)?;
            let inode = self.read_inode(ino, path)?;
            let stat = Stat::from_inode(ino, &inode);
            if stat.kind == Kind::Symlink {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Ext2Error::errno("resolving", path, libc::ELOOP));
                }
                let target = self.symlink_target(ino, &inode, path)?;
                if target.starts_with('/') {
                    stack.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
                continue;
            }
            if pending.is_empty() {
                return Ok(Resolved { path: joined(&stack, &comp), dir_ino: parent, name: comp, stat });
            }
            if stat.kind != Kind::Dir {
                return Err(Ext2Error::errno("resolving", path, libc::ENOTDIR));
            }
            stack.push((parent, comp, ino));
        }
        // The path names a directory, or the root.
        let (parent, name, ino) = stack.pop().unwrap_or((EXT2_ROOT_INO, String::new(), EXT2_ROOT_INO));
        let inode = self.read_inode(ino, path)?;
        Ok(Resolved { path: joined(&stack, &name), dir_ino: parent, name, stat: Stat::from_inode(ino, &inode) })
    }

    /// Like [`resolve`](Self::resolve), but a missing path is `Ok(None)`.
    pub fn try_resolve(&self, path: &str) -> Result<Option<Resolved>> {
        match self.resolve(path) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() || e.code == Code::Errno(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `path` exists (symlinks followed); read errors are passed on.
    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.try_resolve(path)?.is_some())
    }

    /// Whether `path` exists and is of `kind` (symlinks followed); read errors are passed on.
    pub fn is_kind(&self, path: &str, kind: Kind) -> Result<bool> {
        Ok(self.try_resolve(path)?.is_some_and(|r| r.stat.kind == kind))
    }

    fn symlink_target(&self, ino: u32, inode: &ext2_inode, path: &str) -> Result<String> {
        let size = u64::from(inode.i_size) as usize;
        // A fast symlink keeps its target in i_block (inline data does too).
        if size < 60 && (inode.i_flags & EXT4_EXTENTS_FL == 0 || inode.i_blocks == 0) {
            let bytes: Vec<u8> = inode.i_block.iter().flat_map(|w| w.to_le_bytes()).collect();
            return Ok(String::from_utf8_lossy(&bytes[..size]).into_owned());
        }
        let data = self.read_ino(ino, size as u64, path)?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    fn read_ino(&self, ino: u32, size: u64, path: &str) -> Result<Vec<u8>> {
        let mut file: ext2_file_t = std::ptr::null_mut();
        // SAFETY: `fs` is open and `file` is an out-pointer, used only on success.
        self.check("opening", path, unsafe { ext2fs_file_open(self.fs, ino, 0, &mut file) })?;
        let mut out = Vec::with_capacity(size as usize);
        let mut buf = vec![0u8; 1 << 16];
        let result = loop {
            let mut got = 0u32;
            // SAFETY: `file` is open and `buf` has room for the `wanted` bytes asked for.
            let rc = unsafe { ext2fs_file_read(file, buf.as_mut_ptr().cast(), buf.len() as u32, &mut got) };
            if rc != 0 {
                break Err(Ext2Error::new("reading", path, rc));
            }
            if got == 0 {
                break Ok(());
            }
            out.extend_from_slice(&buf[..got as usize]);
        };
        // SAFETY: `file` was opened above and is not used after this call.
        let rc = unsafe { ext2fs_file_close(file) };
        result?;
        self.check("closing", path, rc)?;
        Ok(out)
    }

    /// Reads a whole regular file (following symlinks).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::File {
            return Err(Ext2Error::errno("reading", path, libc::EISDIR));
        }
        self.read_whole(r.stat.ino, r.stat.size, &r.path)
    }

    /// Reads a file if it exists.
    pub fn try_read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.try_resolve(path)? {
            Some(r) if r.stat.kind == Kind::File => Ok(Some(self.read_whole(r.stat.ino, r.stat.size, &r.path)?)),
            _ => Ok(None),
        }
    }

    /// Reads the file `ino` once: a small file read again on a read-only filesystem comes
    /// from memory. Each read from the source is logged.
    fn read_whole(&self, ino: u32, size: u64, path: &str) -> Result<Vec<u8>> {
        if size > MAX_WHOLE_FILE {
            let mut e = Ext2Error::errno("reading", path, libc::EFBIG);
            e.message = format!("{size} bytes, more than the {MAX_WHOLE_FILE} bytes pv2hvm reads of a file whole");
            return Err(e);
        }
        let keep = !self.writable && size <= SMALL_FILE;
        if keep && let Some(b) = self.small_files.lock().ok().and_then(|m| m.get(&ino).cloned()) {
            return Ok(b.to_vec());
        }
        let bytes = self.read_ino(ino, size, path)?;
        if let Ok(mut log) = self.read_log.lock() {
            log.push((path.to_string(), bytes.len() as u64));
        }
        if keep && let Ok(mut m) = self.small_files.lock() {
            m.insert(ino, Arc::from(bytes.as_slice()));
        }
        Ok(bytes)
    }

    /// The first `len` bytes of a file (fewer when it is shorter), if it exists: for a
    /// header, without reading the rest.
    pub fn try_read_head(&self, path: &str, len: usize) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.try_resolve(path)? else { return Ok(None) };
        if r.stat.kind != Kind::File {
            return Ok(None);
        }
        let mut file: ext2_file_t = std::ptr::null_mut();
        // SAFETY: `fs` is open and `file` is an out-pointer, used only on success.
        self.check("opening", &r.path, unsafe { ext2fs_file_open(self.fs, r.stat.ino, 0, &mut file) })?;
        let mut buf = vec![0u8; len.min(r.stat.size as usize)];
        let mut got = 0u32;
        // SAFETY: `file` is open and `buf` has room for the bytes asked for.
        let rc = unsafe { ext2fs_file_read(file, buf.as_mut_ptr().cast(), buf.len() as u32, &mut got) };
        // SAFETY: `file` was opened above and is not used after this call.
        let closed = unsafe { ext2fs_file_close(file) };
        self.check("reading", &r.path, rc)?;
        self.check("closing", &r.path, closed)?;
        buf.truncate(got as usize);
        if let Ok(mut log) = self.read_log.lock() {
            log.push((path.to_string(), buf.len() as u64));
        }
        Ok(Some(buf))
    }

    /// The whole files read so far, in order, as (path, bytes); a file read twice is listed
    /// twice.
    pub fn files_read(&self) -> Vec<(String, u64)> {
        self.read_log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Lists a directory: (name, kind) pairs without `.` and `..`, sorted by name.
    pub fn list_dir(&self, path: &str) -> Result<Vec<(String, Kind)>> {
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::Dir {
            return Err(Ext2Error::errno("listing", path, libc::ENOTDIR));
        }
        let mut names: Vec<(String, u32)> = Vec::new();
        unsafe extern "C" fn visit(
            _dir: ext2_ino_t,
            _entry: libc::c_int,
            dirent: *mut ext2_dir_entry,
            _offset: libc::c_int,
            _blocksize: libc::c_int,
            _buf: *mut libc::c_char,
            priv_data: *mut libc::c_void,
        ) -> libc::c_int {
            let body = || {
                // SAFETY: libext2fs passes a valid entry whose name follows the 8-byte header,
                // and `priv_data` is the vector list_dir passed, alive for the whole iteration.
                unsafe {
                    let names = &mut *(priv_data as *mut Vec<(String, u32)>);
                    let len = usize::from((*dirent).name_len & 0xff);
                    let name_ptr = (dirent as *const u8).add(8);
                    let name = std::slice::from_raw_parts(name_ptr, len);
                    if name != b"." && name != b".." && (*dirent).inode != 0 {
                        names.push((String::from_utf8_lossy(name).into_owned(), (*dirent).inode));
                    }
                }
            };
            // DIRENT_ABORT (2) stops the iteration instead of unwinding into C.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        }
        // SAFETY: `fs` is open; `visit` only touches the vector passed as private data, which outlives the call.
        let rc = unsafe {
            ext2fs_dir_iterate2(
                self.fs,
                r.stat.ino,
                0,
                std::ptr::null_mut(),
                visit,
                (&mut names as *mut Vec<(String, u32)>).cast(),
            )
        };
        self.check("listing", path, rc)?;
        let mut out = Vec::with_capacity(names.len());
        for (name, ino) in names {
            let inode = self.read_inode(ino, path)?;
            out.push((name, Stat::from_inode(ino, &inode).kind));
        }
        out.sort();
        Ok(out)
    }

    /// Replaces the content of the regular file at `path` (symlinks followed), keeping the
    /// original inode as `<name>.pv2hvm-orig` beside it. Returns the canonical path edited.
    pub fn replace_file(&mut self, path: &str, content: &[u8]) -> Result<String> {
        self.replace_file_from(path, &mut &content[..])
    }

    /// [`replace_file`](Self::replace_file) with the content read from `content` to its end,
    /// 1 MiB at a time.
    pub fn replace_file_from(&mut self, path: &str, content: &mut dyn std::io::Read) -> Result<String> {
        assert!(self.writable, "replace_file on a read-only filesystem");
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::File {
            return Err(Ext2Error::errno("rewriting", path, libc::EISDIR));
        }
        let backup = format!("{}{BACKUP_SUFFIX}", r.name);
        if self.lookup(r.dir_ino, &backup, &r.path).is_ok() {
            return Err(Ext2Error::errno("backing up", format!("{}{BACKUP_SUFFIX}", r.path), libc::EEXIST));
        }
        // Rename: the original inode moves to the backup name, untouched.
        self.link(r.dir_ino, &backup, r.stat.ino, &r.path)?;
        let cname = CString::new(r.name.as_str()).expect("no NUL in name");
        // SAFETY: `fs` is open and `cname` is NUL-terminated.
        self.check("unlinking", &r.path, unsafe { ext2fs_unlink(self.fs, r.dir_ino, cname.as_ptr(), r.stat.ino, 0) })?;
        self.create_file(r.dir_ino, &r.name, &r.path, r.stat.ino, content)?;
        Ok(r.path)
    }

    /// Renames a file within its directory (e.g. moving a rules file aside).
    pub fn rename(&mut self, path: &str, new_name: &str) -> Result<()> {
        let r = self.resolve(path)?;
        self.link(r.dir_ino, new_name, r.stat.ino, &r.path)?;
        let cname = CString::new(r.name.as_str()).expect("no NUL in name");
        // SAFETY: `fs` is open and `cname` is NUL-terminated.
        self.check("unlinking", &r.path, unsafe { ext2fs_unlink(self.fs, r.dir_ino, cname.as_ptr(), r.stat.ino, 0) })
    }

    /// Creates a new regular file in directory `dir_path`, owned and labelled like `like`.
    pub fn create_file_like(
        &mut self,
        dir_path: &str,
        name: &str,
        like: &str,
        mode: u16,
        content: &[u8],
    ) -> Result<String> {
        let dir = self.resolve(dir_path)?;
        let template = self.resolve(like)?;
        let path = format!("{}/{name}", dir.path.trim_end_matches('/'));
        if self.lookup(dir.stat.ino, name, &path).is_ok() {
            return Err(Ext2Error::errno("creating", path, libc::EEXIST));
        }
        let ino = self.create_file(dir.stat.ino, name, &path, template.stat.ino, &mut &content[..])?;
        let mut inode = self.read_inode(ino, &path)?;
        inode.i_mode = 0o100000 | (mode & 0o7777);
        // SAFETY: `fs` is open and `inode` is a full-size inode buffer.
        self.check("writing inode of", &path, unsafe { ext2fs_write_inode(self.fs, ino, &mut inode) })?;
        Ok(path)
    }

    fn link(&mut self, dir: u32, name: &str, ino: u32, path: &str) -> Result<()> {
        let cname = CString::new(name).expect("no NUL in name");
        // SAFETY: `fs` is open and `cname` is NUL-terminated.
        let mut rc = unsafe { ext2fs_link(self.fs, dir, cname.as_ptr(), ino, EXT2_FT_REG_FILE) };
        if rc == EXT2_ET_DIR_NO_SPACE {
            // SAFETY: `fs` is open and `dir` is a directory inode of it.
            self.check("expanding directory of", path, unsafe { ext2fs_expand_dir(self.fs, dir) })?;
            // SAFETY: `fs` is open and `cname` is NUL-terminated.
            rc = unsafe { ext2fs_link(self.fs, dir, cname.as_ptr(), ino, EXT2_FT_REG_FILE) };
        }
        self.check("linking", path, rc)
    }

    /// New inode named `name` in `dir`, with owner, mode and xattrs copied from `template`.
    fn create_file(
        &mut self,
        dir: u32,
        name: &str,
        path: &str,
        template: u32,
        content: &mut dyn std::io::Read,
    ) -> Result<u32> {
        let tmpl = self.read_inode(template, path)?;
        let mut ino = 0u32;
        // SAFETY: `fs` is open with its bitmaps read; `ino` is an out-pointer.
        self.check("allocating inode for", path, unsafe {
            ext2fs_new_inode(self.fs, dir, 0o100644, std::ptr::null_mut(), &mut ino)
        })?;
        self.link(dir, name, ino, path)?;
        // SAFETY: `fs` is open with its bitmaps read and `ino` was just allocated.
        unsafe { ext2fs_inode_alloc_stats2(self.fs, ino, 1, 0) };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        let mut inode = ext2_inode {
            i_mode: tmpl.i_mode,
            i_uid: tmpl.i_uid,
            i_gid: tmpl.i_gid,
            l_i_uid_high: tmpl.l_i_uid_high,
            l_i_gid_high: tmpl.l_i_gid_high,
            i_atime: now,
            i_ctime: now,
            i_mtime: now,
            i_links_count: 1,
            ..Default::default()
        };
        if self.extents {
            let mut handle: extent_handle = std::ptr::null_mut();
            // SAFETY: `fs` is open, `inode` is a full-size inode buffer and `handle` an out-pointer.
            self.check("initialising extents of", path, unsafe {
                ext2fs_extent_open2(self.fs, ino, &mut inode, &mut handle)
            })?;
            // SAFETY: `handle` was opened above and is not used after this call.
            unsafe { ext2fs_extent_free(handle) };
        }
        // SAFETY: `fs` is open and `inode` is a full-size inode buffer.
        self.check("writing inode of", path, unsafe { ext2fs_write_new_inode(self.fs, ino, &mut inode) })?;
        self.write_ino(ino, content, path)?;
        self.copy_xattrs(template, ino, path)?;
        Ok(ino)
    }

    /// Byte ranges of the blocks the filesystem uses, from its block bitmap (its own metadata
    /// included), as of now: a writable handle's allocations count. Needs the bitmaps, which
    /// only a writable open loads.
    pub fn used_ranges(&self) -> Result<Vec<std::ops::Range<u64>>> {
        // SAFETY: `fs` is open; `block_map` is null until the bitmaps are read.
        let bitmap = unsafe { (*self.fs).block_map };
        self.bitmap_ranges(bitmap, "<block bitmap>")
    }

    /// Block size of the open filesystem, in bytes.
    pub fn block_size(&self) -> u64 {
        // SAFETY: `fs` is open; `blocksize` is a plain field of its handle.
        u64::from(unsafe { (*self.fs).blocksize })
    }

    /// Bytes the reserved boot-loader inode (5) holds: 0 on a filesystem no bootloader used.
    pub fn boot_loader_size(&self) -> Result<u64> {
        let i = self.read_inode(EXT2_BOOT_LOADER_INO, "<boot-loader inode 5>")?;
        Ok(u64::from(i.i_size) | (u64::from(i.i_size_high) << 32) | u64::from(i.i_blocks != 0))
    }

    /// Stores `content` in the reserved boot-loader inode (5), which e2fsck, resize2fs and
    /// defragmenters leave where it is, and returns its blocks as `(first block, count)` runs
    /// in file order, read back from the real block map (so an indirect block between data
    /// blocks is never mistaken for data). Refuses when the inode already holds data.
    pub fn write_boot_loader(&mut self, content: &[u8]) -> Result<Vec<(u64, u64)>> {
        const PATH: &str = "<boot-loader inode 5>";
        let ino = EXT2_BOOT_LOADER_INO;
        let old = self.read_inode(ino, PATH)?;
        if old.i_size != 0 || old.i_blocks != 0 {
            return Err(Ext2Error::errno("storing core.img in", PATH, libc::EEXIST));
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        let mut inode = ext2_inode { i_mode: 0o100600, i_atime: now, i_ctime: now, i_mtime: now, ..old };
        if self.extents {
            let mut handle: extent_handle = std::ptr::null_mut();
            // SAFETY: `fs` is open, `inode` is a full-size inode buffer and `handle` an out-pointer.
            self.check("initialising extents of", PATH, unsafe {
                ext2fs_extent_open2(self.fs, ino, &mut inode, &mut handle)
            })?;
            // SAFETY: `handle` was opened above and is not used after this call.
            unsafe { ext2fs_extent_free(handle) };
        }
        // SAFETY: `fs` is open and `inode` is a full-size inode buffer.
        self.check("writing inode of", PATH, unsafe { ext2fs_write_inode(self.fs, ino, &mut inode) })?;
        self.write_ino(ino, &mut &content[..], PATH)?;
        let bs = self.block_size();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for logical in 0..(content.len() as u64).div_ceil(bs) {
            let mut phys = 0u64;
            // SAFETY: `fs` is open; a null inode and buffer make bmap2 read the inode itself, and
            // `phys` is an out-pointer.
            self.check("mapping", PATH, unsafe {
                ext2fs_bmap2(
                    self.fs,
                    ino,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    logical,
                    std::ptr::null_mut(),
                    &mut phys,
                )
            })?;
            if phys == 0 {
                return Err(Ext2Error::errno("mapping", PATH, libc::EIO));
            }
            match runs.last_mut() {
                Some((start, n)) if *start + *n == phys => *n += 1,
                _ => runs.push((phys, 1)),
            }
        }
        Ok(runs)
    }

    /// All extended attributes of an inode, raw (as stored, ACLs untranslated).
    fn read_xattrs(&self, ino: u32, path: &str) -> Result<Vec<(CString, Vec<u8>)>> {
        let mut attrs: Vec<(CString, Vec<u8>)> = Vec::new();
        unsafe extern "C" fn collect(
            name: *mut libc::c_char,
            value: *mut libc::c_char,
            len: libc::size_t,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            let body = || {
                // SAFETY: libext2fs passes a NUL-terminated name and `len` bytes of value, and
                // `data` is the vector read_xattrs passed, alive for the whole iteration.
                unsafe {
                    let attrs = &mut *(data as *mut Vec<(CString, Vec<u8>)>);
                    let key = CStr::from_ptr(name).to_owned();
                    let val = std::slice::from_raw_parts(value as *const u8, len).to_vec();
                    attrs.push((key, val));
                }
            };
            // XATTR_ABORT (1) stops the iteration instead of unwinding into C.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
        let mut h: xattr_handle = std::ptr::null_mut();
        // SAFETY: `fs` is open and `h` is an out-pointer, used only on success.
        self.check("opening xattrs of", path, unsafe { ext2fs_xattrs_open(self.fs, ino, &mut h) })?;
        let mut flags = XATTR_HANDLE_FLAG_RAW;
        // SAFETY: `h` is an open xattr handle; the flags pointers are valid or null.
        let r = (|| unsafe {
            self.check("reading xattrs of", path, ext2fs_xattrs_flags(h, &mut flags, std::ptr::null_mut()))?;
            self.check("reading xattrs of", path, ext2fs_xattrs_read(h))?;
            self.check("reading xattrs of", path, ext2fs_xattrs_iterate(h, collect, (&mut attrs as *mut Vec<_>).cast()))
        })();
        // SAFETY: `h` was opened above; close frees it and nulls the handle.
        unsafe { ext2fs_xattrs_close(&mut h) };
        r?;
        Ok(attrs)
    }

    fn copy_xattrs(&mut self, from: u32, to: u32, path: &str) -> Result<()> {
        let mut attrs = self.read_xattrs(from, path)?;
        // Inline file data is stored as an xattr; it is not metadata to copy.
        attrs.retain(|(k, _)| k.as_bytes() != b"system.data");
        if attrs.is_empty() {
            return Ok(());
        }
        let mut h: xattr_handle = std::ptr::null_mut();
        // SAFETY: `fs` is open and `h` is an out-pointer, used only on success.
        self.check("opening xattrs of", path, unsafe { ext2fs_xattrs_open(self.fs, to, &mut h) })?;
        let mut flags = XATTR_HANDLE_FLAG_RAW;
        // SAFETY: `h` is an open xattr handle; the flags pointers are valid or null.
        let r = (|| unsafe {
            self.check("writing xattrs of", path, ext2fs_xattrs_flags(h, &mut flags, std::ptr::null_mut()))?;
            self.check("reading xattrs of", path, ext2fs_xattrs_read(h))?;
            for (k, v) in &attrs {
                self.check("writing xattrs of", path, ext2fs_xattr_set(h, k.as_ptr(), v.as_ptr().cast(), v.len()))?;
            }
            Ok(())
        })();
        // SAFETY: `h` was opened above; close frees it and nulls the handle.
        let rc = unsafe { ext2fs_xattrs_close(&mut h) };
        r?;
        self.check("writing xattrs of", path, rc)
    }

    /// Extended attributes of a path (raw form), for reports and tests.
    pub fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.resolve(path)?;
        let attrs = self.read_xattrs(r.stat.ino, path)?;
        Ok(attrs.into_iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v)).collect())
    }
}

impl Drop for Ext2Fs {
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // Read-only handles just free; writable ones flush. Errors surface via close().
            // SAFETY: `fs` is open; close_free frees it and nulls the pointer, so it is never used again.
            unsafe { ext2fs_close_free(&mut self.fs) };
        }
    }
}

fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests;
