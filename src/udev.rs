//! A bound on device-mapper's wait for udev. When udev runs, a dm call
//! that activates or removes a device waits on a SysV semaphore (the
//! "cookie") that only udev's `95-dm-notify.rules` releases; devicemapper-rs
//! waits with no timeout. An initramfs without those rules would hang the
//! boot for good. A watchdog releases the cookie itself after a deadline,
//! so `cowroot.timeout` bounds every wait, and says what is missing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// libdevmapper's DM_COOKIE_MAGIC: the high 16 bits of every cookie key.
const DM_COOKIE_MAGIC: i64 = 0x0D4D;

/// The SysV semaphore ids of device-mapper udev cookies, from the text of
/// `/proc/sysvipc/sem` (`key semid perms nsems ...`, a header line first).
pub fn dm_cookie_semids(table: &str) -> Vec<i32> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let key: i64 = words.next()?.parse().ok()?;
            let semid: i32 = words.next()?.parse().ok()?;
            (key >> 16 == DM_COOKIE_MAGIC).then_some(semid)
        })
        .collect()
}

/// Releases this process's dm cookies that are being waited for (someone
/// waits for zero, and the last operation on it was ours: the wait after
/// our own decrement), one step at a time; returns how many it touched.
/// Other processes' cookies, and ours before the library's own decrement,
/// are left alone.
fn release_dm_cookies() -> usize {
    let table = std::fs::read_to_string("/proc/sysvipc/sem").unwrap_or_default();
    let me = std::process::id() as i32;
    let mut released = 0;
    for semid in dm_cookie_semids(&table) {
        // SAFETY: semctl with GETZCNT/GETPID takes no argument; a vanished
        // id is an error return.
        let (waiters, last) = unsafe {
            (nix::libc::semctl(semid, 0, nix::libc::GETZCNT), nix::libc::semctl(semid, 0, nix::libc::GETPID))
        };
        if waiters <= 0 || last != me {
            continue;
        }
        let mut op = nix::libc::sembuf { sem_num: 0, sem_op: -1, sem_flg: nix::libc::IPC_NOWAIT as i16 };
        // SAFETY: semop reads one sembuf; a wrong or vanished id is an error return.
        if unsafe { nix::libc::semop(semid, &mut op, 1) } == 0 {
            released += 1;
        }
    }
    released
}

/// Runs while one dm call may wait for udev; after `limit`, releases the
/// cookies nobody else will.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<bool>>,
}

impl Watchdog {
    pub fn start(limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("udev-watchdog".into())
            .spawn(move || {
                let deadline = Instant::now() + limit;
                let mut fired = false;
                while !flag.load(Ordering::Acquire) {
                    if Instant::now() >= deadline {
                        // Keep releasing: the call may create its cookie late.
                        fired |= release_dm_cookies() > 0;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                fired
            })
            .ok();
        Watchdog { done, thread }
    }

    /// Stops the watchdog; true when it had to release a cookie.
    pub fn finish(mut self) -> bool {
        self.done.store(true, Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(false)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_device_mapper_cookies() {
        let table = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                     \x20 223161717      32769   600          1     0     0     0     0          0 1700000000\n\
                     \x20     12345          7   600          1     0     0     0     0          0 1700000000\n\
                     \x20 223150000          9   600          1     0     0     0     0          0 1700000000\n\
                     garbage\n";
        // 0x0D4D << 16 = 223150080: 223161717 is a cookie, 223150000 is not.
        assert_eq!(dm_cookie_semids(table), [32769]);
        assert_eq!(dm_cookie_semids(""), Vec::<i32>::new());
    }

    #[test]
    fn a_watchdog_that_is_not_needed_does_nothing() {
        let dog = Watchdog::start(Duration::from_secs(5));
        assert!(!dog.finish());
    }
}
