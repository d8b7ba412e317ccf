//! How the backing directory's entries appear through the filesystem: their
//! attributes as the kernel wants them, the errors as errno values, and the
//! flags a backing file is opened with.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

/// The attributes of a backing entry, known to the kernel as `ino`.
pub(super) fn attr_of(ino: u64, meta: &std::fs::Metadata) -> FileAttr {
    let time = |secs: i64, nanos: i64| {
        UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    let kind = match meta.mode() & libc_mode::S_IFMT {
        libc_mode::S_IFDIR => FileType::Directory,
        libc_mode::S_IFLNK => FileType::Symlink,
        _ => FileType::RegularFile,
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// The file-type bits of `st_mode` (as `libc` names them).
mod libc_mode {
    pub(crate) const S_IFMT: u32 = 0o170000;
    pub(crate) const S_IFDIR: u32 = 0o040000;
    pub(crate) const S_IFLNK: u32 = 0o120000;
}

/// The attributes of the backing entry at `path`, known to the kernel as
/// `ino`.
pub(super) fn stat(ino: u64, path: &Path) -> Result<FileAttr, Errno> {
    let meta = std::fs::symlink_metadata(path).map_err(errno)?;
    Ok(attr_of(ino, &meta))
}

pub(super) fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// Open flags the backing file takes: the access mode (read and write for
/// any writer) and those that change how writes land; creation flags are
/// the kernel's business.
pub(super) fn backing_options(flags: i32) -> OpenOptions {
    const O_ACCMODE: i32 = 0o3;
    const O_WRONLY: i32 = 0o1;
    const O_RDWR: i32 = 0o2;
    const O_APPEND: i32 = 0o2000;
    let mut options = OpenOptions::new();
    options.custom_flags(flags & O_APPEND);
    match flags & O_ACCMODE {
        // Read too: a write first saves the page's old content.
        O_WRONLY | O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    options
}
