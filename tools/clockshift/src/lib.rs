//! A wall clock that the fault suite steps: preloaded (`LD_PRELOAD`) into
//! `ordermq serve`, this library answers `clock_gettime`, `gettimeofday`
//! and `time` with the real time plus an offset in seconds, read from the
//! file named by [`OFFSET_FILE_ENV`] (`+120`, `-120`, `0`; missing or
//! unreadable: 0) at most every [`REREAD_EVERY_NS`]. Only the wall clocks
//! (`CLOCK_REALTIME` and its coarse and TAI forms) move: the monotonic and
//! boot clocks, which tokio's timers run on, keep the real time, as on a
//! machine whose clock NTP or an operator steps.
//!
//! Why not `libfaketime`: ordermq's allocator (jemalloc, unprefixed, so the
//! `malloc` of every library) reads the monotonic clock while it
//! initialises, and `libfaketime` looks up libc's functions with `dlsym`
//! on its first call, which allocates: the process deadlocks on
//! jemalloc's init lock before `main`. This library never allocates and
//! never calls `dlsym`: it reads the clocks with the `clock_gettime`
//! system call itself (a little slower than the vDSO, which only a test
//! notices) and its file with `open`/`read`.

// Every function here is called by C code with C's pointers.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI64, Ordering};

/// The environment variable naming the offset file (not `ORDERMQ_`: ordermq
/// refuses settings it does not know).
pub const OFFSET_FILE_ENV: &str = "CLOCKSHIFT_FILE";

/// The same, NUL-terminated, for `getenv`.
const OFFSET_FILE_ENV_C: &[u8] = b"CLOCKSHIFT_FILE\0";

/// How often (monotonic nanoseconds) the offset file is read again.
pub const REREAD_EVERY_NS: i64 = 200_000_000;

/// The offset in nanoseconds, as last read.
static OFFSET_NS: AtomicI64 = AtomicI64::new(0);

/// Monotonic nanoseconds after which the file is read again (0: never read).
static NEXT_READ_AT: AtomicI64 = AtomicI64::new(0);

/// The kernel's clock, without libc's wrapper (which would call us).
fn raw_clock(clock: libc::clockid_t, ts: &mut libc::timespec) -> libc::c_int {
    // SAFETY: `ts` is a valid, exclusive timespec for the kernel to fill.
    unsafe {
        libc::syscall(libc::SYS_clock_gettime, clock, ts as *mut libc::timespec) as libc::c_int
    }
}

fn nanos(ts: &libc::timespec) -> i64 {
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Parses the file's text: optional spaces, a sign, seconds. Anything
/// else is 0.
pub fn parse_offset_secs(text: &[u8]) -> i64 {
    let text = text.trim_ascii();
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 12 {
        return 0;
    }
    let value = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    if negative { -value } else { value }
}

/// The offset file's value in seconds, or 0.
fn read_offset_secs() -> i64 {
    // SAFETY: a NUL-terminated name; getenv neither allocates nor keeps it.
    let path = unsafe { libc::getenv(OFFSET_FILE_ENV_C.as_ptr().cast()) };
    if path.is_null() {
        return 0;
    }
    // SAFETY: `path` is the NUL-terminated value getenv returned.
    let fd = unsafe { libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is writable for its length; `fd` is ours and closed after.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return 0;
    }
    parse_offset_secs(&buf[..n as usize])
}

/// The current offset, read again from the file when due.
fn offset_ns() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if raw_clock(libc::CLOCK_MONOTONIC, &mut now) != 0 {
        return OFFSET_NS.load(Ordering::Relaxed);
    }
    let now = nanos(&now);
    let due = NEXT_READ_AT.load(Ordering::Relaxed);
    if due == 0 || now >= due {
        // Several threads may read it at once: each stores the same value.
        NEXT_READ_AT.store(now + REREAD_EVERY_NS, Ordering::Relaxed);
        OFFSET_NS.store(read_offset_secs() * 1_000_000_000, Ordering::Relaxed);
    }
    OFFSET_NS.load(Ordering::Relaxed)
}

/// Whether `clock` is a wall clock (moves with the offset).
fn is_wall(clock: libc::clockid_t) -> bool {
    matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE | libc::CLOCK_TAI
    )
}

/// Adds `offset` nanoseconds to `ts`.
fn shift(ts: &mut libc::timespec, offset: i64) {
    let total = nanos(ts) + offset;
    ts.tv_sec = total.div_euclid(1_000_000_000);
    ts.tv_nsec = total.rem_euclid(1_000_000_000);
}

/// libc's `clock_gettime`, the wall clocks shifted.
///
/// # Safety
///
/// `ts` must be null or valid for writes, as for libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_gettime(
    clock: libc::clockid_t,
    ts: *mut libc::timespec,
) -> libc::c_int {
    // SAFETY: the caller passes a valid timespec (or null, refused below).
    let Some(ts) = (unsafe { ts.as_mut() }) else {
        return raw_null_clock(clock);
    };
    let result = raw_clock(clock, ts);
    if result == 0 && is_wall(clock) {
        shift(ts, offset_ns());
    }
    result
}

/// `clock_gettime(clock, NULL)`: the kernel's answer (`EFAULT`).
fn raw_null_clock(clock: libc::clockid_t) -> libc::c_int {
    // SAFETY: the kernel checks the null pointer itself.
    unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            clock,
            std::ptr::null_mut::<libc::timespec>(),
        ) as libc::c_int
    }
}

/// The shifted wall clock, or `None` if the kernel refused.
fn wall_now() -> Option<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    (raw_clock(libc::CLOCK_REALTIME, &mut ts) == 0).then(|| {
        shift(&mut ts, offset_ns());
        ts
    })
}

/// libc's `gettimeofday`, shifted (the time zone, obsolete, left alone).
///
/// # Safety
///
/// `tv` must be null or valid for writes, as for libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gettimeofday(
    tv: *mut libc::timeval,
    _tz: *mut libc::c_void,
) -> libc::c_int {
    let Some(now) = wall_now() else {
        return -1;
    };
    // SAFETY: the caller passes a valid timeval or null.
    if let Some(tv) = unsafe { tv.as_mut() } {
        tv.tv_sec = now.tv_sec;
        tv.tv_usec = now.tv_nsec / 1_000;
    }
    0
}

/// libc's `time`, shifted.
///
/// # Safety
///
/// `out` must be null or valid for writes, as for libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn time(out: *mut libc::time_t) -> libc::time_t {
    let Some(now) = wall_now() else {
        return -1;
    };
    // SAFETY: the caller passes a valid time_t or null.
    if let Some(out) = unsafe { out.as_mut() } {
        *out = now.tv_sec;
    }
    now.tv_sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_file_reads_signed_seconds_and_anything_else_is_zero() {
        assert_eq!(parse_offset_secs(b"+120\n"), 120);
        assert_eq!(parse_offset_secs(b" -120 "), -120);
        assert_eq!(parse_offset_secs(b"7"), 7);
        for bad in [&b""[..], b"+", b"1h", b"--3", b"12 3", b"9999999999999"] {
            assert_eq!(
                parse_offset_secs(bad),
                0,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_shift_carries_into_the_seconds_both_ways() {
        let mut ts = libc::timespec {
            tv_sec: 10,
            tv_nsec: 900_000_000,
        };
        shift(&mut ts, 200_000_000);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (11, 100_000_000));
        shift(&mut ts, -1_200_000_000);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (9, 900_000_000));
    }
}
