//! The filesystem itself: every FUSE operation passed through to the
//! backing directory, with the bookkeeping a cut needs (per file, its
//! synced length and the undo pages written since), and the cut.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::CutReport;

mod backing;
use backing::{attr_of, backing_options, errno, stat};

/// The undo log's unit: the first write to a page since the file's last
/// `fsync` saves the page's old content.
const PAGE: u64 = 4096;

/// How long the kernel may cache names and attributes: not at all, so a
/// length the filesystem changed is seen at once.
const TTL: Duration = Duration::ZERO;

/// What a power cut would take back from one file.
#[derive(Debug, Default)]
struct FileState {
    /// Its length at its last `fsync`.
    synced_len: u64,
    /// Each page written since, with its content at the last `fsync`
    /// (clipped at `synced_len`).
    undo: BTreeMap<u64, Vec<u8>>,
    /// Written (or truncated) since its last `fsync`.
    touched: bool,
}

#[derive(Debug)]
pub(crate) struct State {
    backing: PathBuf,
    powered: bool,
    /// Each known inode's (parent, name); the root has none.
    names: HashMap<u64, (u64, std::ffi::OsString)>,
    /// Files written on since they were first seen, by inode.
    files: HashMap<u64, FileState>,
    handles: HashMap<u64, Arc<File>>,
    next_handle: u64,
}

impl State {
    pub(crate) fn new(backing: PathBuf) -> Self {
        Self {
            backing,
            powered: true,
            names: HashMap::new(),
            files: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 1,
        }
    }

    /// Turns the power off (every later operation fails with `EIO`) and
    /// takes back, in the backing directory, every write since each
    /// file's last `fsync`.
    pub(crate) fn cut(&mut self) -> io::Result<CutReport> {
        self.powered = false;
        self.handles.clear();
        let mut report = CutReport::default();
        for (ino, file) in std::mem::take(&mut self.files) {
            if !file.touched {
                continue;
            }
            report.files += 1;
            // An unlinked file has nothing left to take back.
            let Some(path) = self.path(ino) else {
                continue;
            };
            let Ok(backing) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            for (page, old) in &file.undo {
                backing.write_all_at(old, page * PAGE)?;
                report.pages_restored += 1;
            }
            let len = backing.metadata()?.len();
            if len != file.synced_len {
                report.bytes_truncated += len.saturating_sub(file.synced_len);
                backing.set_len(file.synced_len)?;
            }
        }
        Ok(report)
    }

    /// The backing path of inode `ino`, if it is known and still linked.
    fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != INodeNo::ROOT.0 {
            let (parent, name) = self.names.get(&at)?;
            parts.push(name.clone());
            at = *parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        let mut path = self.backing.clone();
        path.extend(parts.iter().rev());
        Some(path)
    }

    /// The backing path of `name` in directory `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent).ok_or(Errno::ENOENT)?.join(name))
    }

    /// Records `name` in `parent` as inode `ino`.
    /// The attributes of the new or newly seen entry `name` (at `path`) in
    /// `parent`, remembered under its backing inode number (every entry but
    /// the root is known by it: stable across renames).
    fn enter(&mut self, parent: u64, name: &OsStr, path: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(path).map_err(errno)?;
        self.remember(meta.ino(), parent, name);
        Ok(attr_of(meta.ino(), &meta))
    }

    fn remember(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if ino != INodeNo::ROOT.0 {
            self.names.insert(ino, (parent, name.to_owned()));
        }
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.handles.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn open_handle(&mut self, file: File) -> FileHandle {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// The file's state, its synced length taken from `current_len` when
    /// first seen (what is on the backing disk is durable).
    fn file(&mut self, ino: u64, current_len: u64) -> &mut FileState {
        self.files.entry(ino).or_insert_with(|| FileState {
            synced_len: current_len,
            ..FileState::default()
        })
    }

    /// Saves, before `[from, to)` of `file` changes, the synced content of
    /// every page in it not saved yet.
    fn save_range(&mut self, ino: u64, file: &File, from: u64, to: u64) -> io::Result<()> {
        let len = file.metadata()?.len();
        let state = self.file(ino, len);
        state.touched = true;
        let end = to.min(state.synced_len);
        if from >= end {
            return Ok(());
        }
        for page in from / PAGE..end.div_ceil(PAGE) {
            if state.undo.contains_key(&page) {
                continue;
            }
            let start = page * PAGE;
            let size = (state.synced_len.min(start + PAGE) - start) as usize;
            let mut old = vec![0; size];
            let mut read = 0;
            while read < size {
                match file.read_at(&mut old[read..], start + read as u64)? {
                    0 => break,
                    n => read += n,
                }
            }
            old.truncate(read);
            state.undo.insert(page, old);
        }
        Ok(())
    }
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for PowerCutFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerCutFs")
    }
}

impl PowerCutFs {
    pub(crate) fn new(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }

    /// The state, or `EIO` once the power is off.
    fn powered(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = lock(&self.state);
        if state.powered {
            Ok(state)
        } else {
            Err(Errno::EIO)
        }
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.child(parent.0, name)?;
            state.enter(parent.0, name, &path)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = (|| {
            let state = self.powered()?;
            let path = state.path(ino.0).ok_or(Errno::ENOENT)?;
            stat(ino.0, &path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.path(ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if let Some(size) = size {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(errno)?;
                let len = file.metadata().map_err(errno)?.len();
                // Shrinking loses synced content past `size`: saved first.
                state
                    .save_range(ino.0, &file, size.min(len), len)
                    .map_err(errno)?;
                file.set_len(size).map_err(errno)?;
            }
            stat(ino.0, &path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.child(parent.0, name)?;
            std::fs::create_dir(&path).map_err(errno)?;
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            )
            .map_err(errno)?;
            state.enter(parent.0, name, &path)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.child(parent.0, name)?;
            let ino = std::fs::symlink_metadata(&path).map_err(errno)?.ino();
            std::fs::remove_file(&path).map_err(errno)?;
            state.names.remove(&ino);
            state.files.remove(&ino);
            Ok::<_, Errno>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.child(parent.0, name)?;
            let ino = std::fs::symlink_metadata(&path).map_err(errno)?.ino();
            std::fs::remove_dir(&path).map_err(errno)?;
            state.names.remove(&ino);
            Ok::<_, Errno>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let from = state.child(parent.0, name)?;
            let to = state.child(newparent.0, newname)?;
            let ino = std::fs::symlink_metadata(&from).map_err(errno)?.ino();
            let replaced = std::fs::symlink_metadata(&to).ok().map(|m| m.ino());
            std::fs::rename(&from, &to).map_err(errno)?;
            if let Some(replaced) = replaced.filter(|&r| r != ino) {
                state.names.remove(&replaced);
                state.files.remove(&replaced);
            }
            state.remember(ino, newparent.0, newname);
            Ok::<_, Errno>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.path(ino.0).ok_or(Errno::ENOENT)?;
            let file = backing_options(flags.0).open(&path).map_err(errno)?;
            Ok::<_, Errno>(state.open_handle(file))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.child(parent.0, name)?;
            let mut options = backing_options(flags);
            options.create(true).mode(mode & !umask & 0o7777);
            let file = options.open(&path).map_err(errno)?;
            let meta = file.metadata().map_err(errno)?;
            let ino = meta.ino();
            state.remember(ino, parent.0, name);
            // Its name is durable at once; its content only once synced.
            let created = state.file(ino, 0);
            created.touched = true;
            let fh = state.open_handle(file);
            Ok::<_, Errno>((attr_of(ino, &meta), fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.powered().and_then(|state| state.handle(fh)) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0; size as usize];
        let mut read = 0;
        while read < buf.len() {
            match file.read_at(&mut buf[read..], offset + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..read]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Under the lock: a cut never sees half of a write's bookkeeping.
        let result = (|| {
            let mut state = self.powered()?;
            let file = state.handle(fh)?;
            state
                .save_range(ino.0, &file, offset, offset + data.len() as u64)
                .map_err(errno)?;
            file.write_all_at(data, offset).map_err(errno)?;
            Ok::<_, Errno>(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.powered() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    /// Everything written to the file so far becomes durable. The backing
    /// file is not synced itself: a cut is simulated, the backing disk's
    /// own durability is not what is tested.
    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let file = state.handle(fh)?;
            let len = file.metadata().map_err(errno)?.len();
            let synced = state.file(ino.0, len);
            synced.synced_len = len;
            synced.undo.clear();
            synced.touched = false;
            Ok::<_, Errno>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.powered() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let path = state.path(ino.0).ok_or(Errno::ENOENT)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, std::ffi::OsString::from(".")),
                (ino.0, FileType::Directory, std::ffi::OsString::from("..")),
            ];
            for entry in std::fs::read_dir(&path).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let child = meta.ino();
                state.remember(child, ino.0, &entry.file_name());
                entries.push((child, attr_of(child, &meta).kind, entry.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.powered() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = (|| {
            let state = self.powered()?;
            nix::sys::statvfs::statvfs(&state.backing).map_err(|e| Errno::from_i32(e as i32))
        })();
        match result {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut state = self.powered()?;
            let file = state.handle(fh)?;
            // Punching or zeroing a range changes its content: saved first.
            state
                .save_range(ino.0, &file, offset, offset + length)
                .map_err(errno)?;
            nix::fcntl::fallocate(
                &*file,
                nix::fcntl::FallocateFlags::from_bits_truncate(mode),
                offset as i64,
                length as i64,
            )
            .map_err(|e| Errno::from_i32(e as i32))
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
