//! The library preloaded into a real program (`date`): its wall clock is
//! the real time plus the file's offset, and follows the file when it
//! changes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The built library, beside this test's binary's directory
/// (`target/<profile>/deps/..`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let library = dir.join("libordermq_clockshift.so");
    assert!(
        library.exists(),
        "{} not built (cargo builds the package's library with its tests)",
        library.display()
    );
    library
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// `date +%s` under the library with `offset` in its file.
fn date_with(offset: &str) -> i64 {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("offset");
    std::fs::write(&file, offset).expect("the offset file");
    let out = Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", library())
        .env("CLOCKSHIFT_FILE", &file)
        .output()
        .expect("date runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("date printed seconds")
}

#[test]
fn a_preloaded_program_reads_the_real_time_plus_the_offset() {
    for (offset, shift) in [
        ("+3600\n", 3_600),
        ("-86400", -86_400),
        ("0", 0),
        ("junk", 0),
    ] {
        let before = now_secs();
        let seen = date_with(offset);
        let after = now_secs();
        assert!(
            (before + shift..=after + shift).contains(&seen),
            "offset {offset:?}: date said {seen}, real time {before}..{after}"
        );
    }
}
