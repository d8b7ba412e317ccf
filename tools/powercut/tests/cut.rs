//! A power cut on the mounted filesystem takes back exactly what was never
//! synced: written files, memory-mapped files, truncations; and nothing
//! that was. Needs `/dev/fuse` and root; skipped without them outside CI.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ordermq_powercut::Mounted;

/// A mounted filesystem over a fresh backing directory, or `None` where
/// this machine cannot mount one (outside CI).
fn mounted() -> Option<(tempfile::TempDir, Mounted)> {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("disk"), dir.path().join("mnt"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    let program = Path::new(env!("CARGO_BIN_EXE_ordermq-powercut"));
    match Mounted::start(program, &backing, &mountpoint) {
        Ok(fs) => Some((dir, fs)),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the power-cut tests (root and /dev/fuse): {e}"
            );
            eprintln!("skipping: cannot mount a FUSE filesystem here: {e}");
            None
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn a_cut_takes_back_every_write_since_the_last_fsync_and_nothing_before() {
    let Some((dir, fs)) = mounted() else {
        return;
    };
    let mnt = fs.mountpoint().to_owned();
    // Synced, then written again in place and appended to without a sync.
    let mut synced = File::create(mnt.join("synced")).unwrap();
    synced.write_all(&[1; 10_000]).unwrap();
    synced.sync_all().unwrap();
    synced.write_all_at(&[2; 100], 5_000).unwrap();
    synced.write_all(&[3; 3_000]).unwrap();
    // Created and written, never synced.
    fs::write(mnt.join("unsynced"), [4; 5_000]).unwrap();
    // Written, synced, truncated without a sync.
    let truncated = File::create(mnt.join("truncated")).unwrap();
    truncated.write_all_at(&[5; 9_000], 0).unwrap();
    truncated.sync_all().unwrap();
    truncated.set_len(1_000).unwrap();
    // A directory and a renamed file: names are durable at once.
    fs::create_dir(mnt.join("dir")).unwrap();
    let mut moved = File::create(mnt.join("dir/before")).unwrap();
    moved.write_all(&[6; 4_096]).unwrap();
    moved.sync_all().unwrap();
    moved.write_all(&[7; 10]).unwrap();
    fs::rename(mnt.join("dir/before"), mnt.join("dir/after")).unwrap();
    assert_eq!(read(&mnt.join("synced")).len(), 13_000);
    drop((synced, truncated, moved));

    let report = fs.cut().unwrap();

    let disk = dir.path().join("disk");
    assert_eq!(read(&disk.join("synced")), vec![1; 10_000]);
    assert_eq!(read(&disk.join("unsynced")), Vec::<u8>::new());
    assert_eq!(read(&disk.join("truncated")), vec![5; 9_000]);
    assert_eq!(read(&disk.join("dir/after")), vec![6; 4_096]);
    assert_eq!(report.files, 4, "{report:?}");
}

#[test]
fn a_memory_mapped_file_keeps_what_msync_made_durable() {
    let Some((dir, fs)) = mounted() else {
        return;
    };
    let path = fs.mountpoint().join("log");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(64 * 1024).unwrap();
    file.sync_all().unwrap();
    let mut map = map(&file);
    map[..4_096].fill(8);
    map.flush().unwrap(); // msync: durable
    map[4_096..8_192].fill(9); // never synced
    map.flush_async().unwrap(); // handed to the filesystem, not synced
    drop(map);
    drop(file);
    fs.cut().unwrap();
    let after = read(&dir.path().join("disk/log"));
    assert_eq!(after.len(), 64 * 1024);
    assert!(after[..4_096].iter().all(|&b| b == 8));
    assert!(
        after[4_096..].iter().all(|&b| b == 0),
        "unsynced pages kept"
    );
}

/// The shared mapping a RocketMQ commit log uses.
#[allow(unsafe_code)]
fn map(file: &File) -> memmap2::MmapMut {
    // SAFETY: the file is this test's own; nothing else truncates or
    // writes it while the mapping lives.
    unsafe { memmap2::MmapMut::map_mut(file) }.expect("mapping the file")
}
