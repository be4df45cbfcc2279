//! The few system calls the chaos tests make: signals (kill -9, SIGSTOP,
//! SIGCONT) and the ext4 shutdown ioctl that simulates power loss. This is
//! the crate's only `unsafe` code.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Sends `signal` (e.g. `libc::SIGKILL`) to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `EXT4_IOC_SHUTDOWN` = `_IOR('X', 125, __u32)` (read direction 2 on x86
/// and arm64, size 4).
const EXT4_IOC_SHUTDOWN: u64 = (2 << 30) | (4 << 16) | ((b'X' as u64) << 8) | 125;

/// `EXT4_GOING_FLAGS_NOLOGFLUSH`: stop the file system at once, without
/// flushing the journal or any dirty data, as a power cut would.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// Shuts the ext4 file system mounted at `mount` down as a power cut would:
/// every write not yet on the device is lost, and every later I/O on it fails.
pub fn ext4_shutdown(mount: &Path) -> io::Result<()> {
    let root = std::fs::File::open(mount)?;
    let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 through the pointer, which points to a
    // live local for the duration of the call; the descriptor is open.
    let rc = unsafe {
        libc::ioctl(
            root.as_raw_fd(),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective user id is root (loop devices and mounts need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
