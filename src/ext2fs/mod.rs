//! Safe wrapper over libext2fs for reading and editing guest files without mounting.
//!
//! Call patterns follow e2fsprogs' `misc/create_inode.c`: a new file is `new_inode` + `link`
//! (expanding the directory on `DIR_NO_SPACE`) + `inode_alloc_stats2` + `write_new_inode`, and
//! its data goes through `ext2fs_file_*`. A rewrite never edits the original inode: the original
//! is renamed to `<name>.pv2hvm-orig` (keeping its inode, owner, mode and xattrs untouched) and
//! the new content goes into a fresh inode that copies the owner, mode and xattrs.

mod blockio;
mod ffi;

use std::ffi::{CStr, CString};
use std::path::Path;

use ffi::*;

/// Suffix of the backup kept beside every rewritten guest file.
pub const BACKUP_SUFFIX: &str = ".pv2hvm-orig";

const MAX_SYMLINK_HOPS: usize = 16;

/// A libext2fs failure, with the operation and guest path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {message}")]
pub struct Ext2Error {
    pub op: &'static str,
    pub path: String,
    pub code: errcode_t,
    pub message: String,
}

impl Ext2Error {
    fn new(op: &'static str, path: impl Into<String>, code: errcode_t) -> Self {
        // SAFETY: error_message returns a pointer to a static or thread-local string.
        let message = unsafe {
            let p = error_message(code);
            if p.is_null() { format!("error {code}") } else { CStr::from_ptr(p).to_string_lossy().into_owned() }
        };
        Ext2Error { op, path: path.into(), code, message }
    }

    /// True when the error says the path does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == EXT2_ET_FILE_NOT_FOUND
    }
}

pub type Result<T> = std::result::Result<T, Ext2Error>;

fn check(op: &'static str, path: &str, code: errcode_t) -> Result<()> {
    if code == 0 { Ok(()) } else { Err(Ext2Error::new(op, path, code)) }
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
}

impl Ext2Fs {
    /// Opens the filesystem in a local `image` at byte `offset`, read-only or writable.
    pub fn open(image: &Path, offset: u64, writable: bool) -> Result<Self> {
        let shown = image.display().to_string();
        let name = CString::new(image.as_os_str().as_encoded_bytes())
            .map_err(|_| Ext2Error::new("opening", &shown, EXT2_ET_FILE_NOT_FOUND))?;
        let opts = CString::new(format!("offset={offset}")).expect("no NUL in number");
        let extents = crate::disk::superblock::read_superblock_at(image, offset).is_some_and(|sb| sb.has_extents());
        // SAFETY: unix_io_manager is libext2fs' own static manager.
        Self::open_with(&shown, &name, Some(&opts), writable, unsafe { unix_io_manager }, extents)
    }

    /// Opens, read-only, the filesystem at byte `offset` of a block source: every read goes
    /// through the source (and is counted there).
    pub fn open_source(source: std::sync::Arc<dyn crate::blockdev::BlockSource>, offset: u64) -> Result<Self> {
        let shown = source.describe();
        let extents = crate::disk::superblock::Superblock::read(source.as_ref(), offset)
            .ok()
            .flatten()
            .is_some_and(|sb| sb.has_extents());
        let (name, _registration) = blockio::register(source, offset);
        let manager = (&blockio::BLOCK_SOURCE_IO_MANAGER as *const blockio::IoManager).cast_mut().cast();
        Self::open_with(&shown, &name, None, false, manager, extents)
    }

    fn open_with(
        shown: &str,
        name: &CStr,
        opts: Option<&CStr>,
        writable: bool,
        manager: io_manager,
        extents: bool,
    ) -> Result<Self> {
        let mut flags = EXT2_FLAG_64BITS;
        if writable {
            flags |= EXT2_FLAG_RW;
        }
        static ERROR_TABLE: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers libext2fs' message table with com_err, once.
        ERROR_TABLE.call_once(|| unsafe { initialize_ext2_error_table() });
        let mut fs: ext2_filsys = std::ptr::null_mut();
        let opts_ptr = opts.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: all pointers are valid for the call; fs is only used on success.
        unsafe {
            check("opening", shown, ext2fs_open2(name.as_ptr(), opts_ptr, flags, 0, 0, manager, &mut fs))?;
            // Bitmaps are only needed to allocate; a read-only open skips reading them.
            if writable {
                let rc = ext2fs_read_bitmaps(fs);
                if rc != 0 {
                    ext2fs_free(fs);
                    return Err(Ext2Error::new("reading bitmaps of", shown, rc));
                }
            }
        }
        Ok(Ext2Fs { fs, writable, extents })
    }

    /// Free space, from libext2fs' in-memory superblock (it tracks allocations as they happen).
    pub fn free_bytes(&self) -> u64 {
        // `struct struct_ext2_filsys` starts: errcode_t magic; io_channel io; int flags;
        // char *device_name; struct ext2_super_block *super — at offset 32 on LP64.
        // SAFETY: fs is open; `super` points at the 1024-byte in-memory superblock.
        let sb = unsafe {
            let sup = *(self.fs as *const u8).add(32).cast::<*const u8>();
            std::slice::from_raw_parts(sup, 1024)
        };
        crate::disk::superblock::Superblock::parse(sb).map_or(0, |s| s.free_blocks * s.block_size)
    }

    /// Flushes and closes, reporting errors that a drop would swallow.
    pub fn close(mut self) -> Result<()> {
        let rc = unsafe { ext2fs_close_free(&mut self.fs) };
        self.fs = std::ptr::null_mut();
        check("closing", "filesystem", rc)
    }

    fn read_inode(&self, ino: u32, path: &str) -> Result<ext2_inode> {
        let mut inode = ext2_inode::default();
        check("reading inode of", path, unsafe { ext2fs_read_inode(self.fs, ino, &mut inode) })?;
        Ok(inode)
    }

    fn lookup(&self, dir: u32, name: &str, path: &str) -> Result<u32> {
        let mut ino = 0;
        let rc = unsafe {
            ext2fs_lookup(self.fs, dir, name.as_ptr().cast(), name.len() as i32, std::ptr::null_mut(), &mut ino)
        };
        check("looking up", path, rc)?;
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
                    return Err(Ext2Error::new("resolving", path, 40 /* ELOOP */));
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
                return Err(Ext2Error::new("resolving", path, 20 /* ENOTDIR */));
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
            Err(e) if e.is_not_found() || e.code == 20 => Ok(None),
            Err(e) => Err(e),
        }
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
        check("opening", path, unsafe { ext2fs_file_open(self.fs, ino, 0, &mut file) })?;
        let mut out = Vec::with_capacity(size as usize);
        let mut buf = vec![0u8; 1 << 16];
        let result = loop {
            let mut got = 0u32;
            let rc = unsafe { ext2fs_file_read(file, buf.as_mut_ptr().cast(), buf.len() as u32, &mut got) };
            if rc != 0 {
                break Err(Ext2Error::new("reading", path, rc));
            }
            if got == 0 {
                break Ok(());
            }
            out.extend_from_slice(&buf[..got as usize]);
        };
        let rc = unsafe { ext2fs_file_close(file) };
        result?;
        check("closing", path, rc)?;
        Ok(out)
    }

    /// Reads a whole regular file (following symlinks).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::File {
            return Err(Ext2Error::new("reading", path, 21 /* EISDIR */));
        }
        self.read_ino(r.stat.ino, r.stat.size, &r.path)
    }

    /// Reads a file if it exists.
    pub fn try_read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.try_resolve(path)? {
            Some(r) if r.stat.kind == Kind::File => Ok(Some(self.read_ino(r.stat.ino, r.stat.size, &r.path)?)),
            _ => Ok(None),
        }
    }

    /// Lists a directory: (name, kind) pairs without `.` and `..`, sorted by name.
    pub fn list_dir(&self, path: &str) -> Result<Vec<(String, Kind)>> {
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::Dir {
            return Err(Ext2Error::new("listing", path, 20 /* ENOTDIR */));
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
            // SAFETY: libext2fs passes a valid entry whose name follows the 8-byte header.
            unsafe {
                let names = &mut *(priv_data as *mut Vec<(String, u32)>);
                let len = usize::from((*dirent).name_len & 0xff);
                let name_ptr = (dirent as *const u8).add(8);
                let name = std::slice::from_raw_parts(name_ptr, len);
                if name != b"." && name != b".." && (*dirent).inode != 0 {
                    names.push((String::from_utf8_lossy(name).into_owned(), (*dirent).inode));
                }
            }
            0
        }
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
        check("listing", path, rc)?;
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
        assert!(self.writable, "replace_file on a read-only filesystem");
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::File {
            return Err(Ext2Error::new("rewriting", path, 21 /* EISDIR */));
        }
        let backup = format!("{}{BACKUP_SUFFIX}", r.name);
        if self.lookup(r.dir_ino, &backup, &r.path).is_ok() {
            return Err(Ext2Error::new("backing up", format!("{}{BACKUP_SUFFIX}", r.path), 17 /* EEXIST */));
        }
        // Rename: the original inode moves to the backup name, untouched.
        self.link(r.dir_ino, &backup, r.stat.ino, &r.path)?;
        let cname = CString::new(r.name.as_str()).expect("no NUL in name");
        check("unlinking", &r.path, unsafe { ext2fs_unlink(self.fs, r.dir_ino, cname.as_ptr(), r.stat.ino, 0) })?;
        self.create_file(r.dir_ino, &r.name, &r.path, r.stat.ino, content)?;
        Ok(r.path)
    }

    /// Renames a file within its directory (e.g. moving a rules file aside).
    pub fn rename(&mut self, path: &str, new_name: &str) -> Result<()> {
        let r = self.resolve(path)?;
        self.link(r.dir_ino, new_name, r.stat.ino, &r.path)?;
        let cname = CString::new(r.name.as_str()).expect("no NUL in name");
        check("unlinking", &r.path, unsafe { ext2fs_unlink(self.fs, r.dir_ino, cname.as_ptr(), r.stat.ino, 0) })
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
            return Err(Ext2Error::new("creating", path, 17 /* EEXIST */));
        }
        let ino = self.create_file(dir.stat.ino, name, &path, template.stat.ino, content)?;
        let mut inode = self.read_inode(ino, &path)?;
        inode.i_mode = 0o100000 | (mode & 0o7777);
        check("writing inode of", &path, unsafe { ffi_write_inode(self.fs, ino, &mut inode) })?;
        Ok(path)
    }

    fn link(&mut self, dir: u32, name: &str, ino: u32, path: &str) -> Result<()> {
        let cname = CString::new(name).expect("no NUL in name");
        let mut rc = unsafe { ext2fs_link(self.fs, dir, cname.as_ptr(), ino, EXT2_FT_REG_FILE) };
        if rc == EXT2_ET_DIR_NO_SPACE {
            check("expanding directory of", path, unsafe { ext2fs_expand_dir(self.fs, dir) })?;
            rc = unsafe { ext2fs_link(self.fs, dir, cname.as_ptr(), ino, EXT2_FT_REG_FILE) };
        }
        check("linking", path, rc)
    }

    /// New inode named `name` in `dir`, with owner, mode and xattrs copied from `template`.
    fn create_file(&mut self, dir: u32, name: &str, path: &str, template: u32, content: &[u8]) -> Result<u32> {
        let tmpl = self.read_inode(template, path)?;
        let mut ino = 0u32;
        check("allocating inode for", path, unsafe {
            ext2fs_new_inode(self.fs, dir, 0o100644, std::ptr::null_mut(), &mut ino)
        })?;
        self.link(dir, name, ino, path)?;
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
            check("initialising extents of", path, unsafe {
                ext2fs_extent_open2(self.fs, ino, &mut inode, &mut handle)
            })?;
            unsafe { ext2fs_extent_free(handle) };
        }
        check("writing inode of", path, unsafe { ext2fs_write_new_inode(self.fs, ino, &mut inode) })?;
        self.write_ino(ino, content, path)?;
        self.copy_xattrs(template, ino, path)?;
        Ok(ino)
    }

    fn write_ino(&mut self, ino: u32, content: &[u8], path: &str) -> Result<()> {
        let mut file: ext2_file_t = std::ptr::null_mut();
        check("opening", path, unsafe { ext2fs_file_open(self.fs, ino, EXT2_FILE_WRITE, &mut file) })?;
        let mut result = Ok(());
        let mut done = 0usize;
        while done < content.len() {
            let chunk = &content[done..content.len().min(done + (1 << 20))];
            let mut written = 0u32;
            let rc = unsafe { ext2fs_file_write(file, chunk.as_ptr().cast(), chunk.len() as u32, &mut written) };
            if rc != 0 {
                result = Err(Ext2Error::new("writing", path, rc));
                break;
            }
            if written == 0 {
                result = Err(Ext2Error::new("writing", path, 28 /* ENOSPC */));
                break;
            }
            done += written as usize;
        }
        if result.is_ok() {
            result = check("sizing", path, unsafe { ext2fs_file_set_size2(file, content.len() as u64) });
        }
        let rc = unsafe { ext2fs_file_close(file) };
        result?;
        check("closing", path, rc)
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
            // SAFETY: libext2fs passes a NUL-terminated name and `len` bytes of value.
            unsafe {
                let attrs = &mut *(data as *mut Vec<(CString, Vec<u8>)>);
                let key = CStr::from_ptr(name).to_owned();
                let val = std::slice::from_raw_parts(value as *const u8, len).to_vec();
                attrs.push((key, val));
            }
            0
        }
        let mut h: xattr_handle = std::ptr::null_mut();
        check("opening xattrs of", path, unsafe { ext2fs_xattrs_open(self.fs, ino, &mut h) })?;
        let mut flags = XATTR_HANDLE_FLAG_RAW;
        let r = (|| unsafe {
            check("reading xattrs of", path, ext2fs_xattrs_flags(h, &mut flags, std::ptr::null_mut()))?;
            check("reading xattrs of", path, ext2fs_xattrs_read(h))?;
            check("reading xattrs of", path, ext2fs_xattrs_iterate(h, collect, (&mut attrs as *mut Vec<_>).cast()))
        })();
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
        check("opening xattrs of", path, unsafe { ext2fs_xattrs_open(self.fs, to, &mut h) })?;
        let mut flags = XATTR_HANDLE_FLAG_RAW;
        let r = (|| unsafe {
            check("writing xattrs of", path, ext2fs_xattrs_flags(h, &mut flags, std::ptr::null_mut()))?;
            check("reading xattrs of", path, ext2fs_xattrs_read(h))?;
            for (k, v) in &attrs {
                check("writing xattrs of", path, ext2fs_xattr_set(h, k.as_ptr(), v.as_ptr().cast(), v.len()))?;
            }
            Ok(())
        })();
        let rc = unsafe { ext2fs_xattrs_close(&mut h) };
        r?;
        check("writing xattrs of", path, rc)
    }

    /// Extended attributes of a path (raw form), for reports and tests.
    pub fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.resolve(path)?;
        let attrs = self.read_xattrs(r.stat.ino, path)?;
        Ok(attrs.into_iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v)).collect())
    }
}

unsafe fn ffi_write_inode(fs: ext2_filsys, ino: u32, inode: *mut ext2_inode) -> errcode_t {
    unsafe extern "C" {
        fn ext2fs_write_inode(fs: ext2_filsys, ino: ext2_ino_t, inode: *mut ext2_inode) -> errcode_t;
    }
    unsafe { ext2fs_write_inode(fs, ino, inode) }
}

impl Drop for Ext2Fs {
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // Read-only handles just free; writable ones flush. Errors surface via close().
            unsafe { ext2fs_close_free(&mut self.fs) };
        }
    }
}

fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect()
}

const _: () = assert!(std::mem::size_of::<usize>() == 8, "the struct_ext2_filsys layout used here is LP64");
