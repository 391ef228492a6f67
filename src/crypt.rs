//! `cowroot.crypt=random`: the pool's metadata and data through dm-crypt
//! with keys made at boot and never stored, so what a session wrote is
//! unreadable once the machine is off. Only the keys live here; the
//! layers are planned in `plan` and their tables printed by `table`.

use crate::error::{Error, Result};
use std::fmt;

/// XTS with two AES-256 keys: the kernel's default for disk encryption.
pub const CIPHER: &str = "aes-xts-plain64";
const KEY_BYTES: usize = 64;

/// One dm-crypt key. Never printed (Debug and the dry run show a
/// placeholder); zeroed when dropped, though the hex copies made for the
/// kernel's table are not (the key lives in that table anyway).
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl Key {
    /// A key from the kernel's random source (getrandom: waits until the
    /// kernel's generator is seeded, which early boot may need).
    pub fn random() -> Result<Key> {
        let mut key = [0u8; KEY_BYTES];
        let mut filled = 0;
        while filled < KEY_BYTES {
            let rest = &mut key[filled..];
            // SAFETY: the kernel writes at most rest.len() bytes into rest.
            let got = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if got < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("getrandom", "a pool key", err));
            }
            filled += got as usize;
        }
        Ok(Key(key))
    }

    /// A fixed key, for tests.
    #[cfg(test)]
    pub fn fixed(byte: u8) -> Key {
        Key([byte; KEY_BYTES])
    }

    /// The key as dm-crypt's table takes it.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a valid, aligned byte of self; volatile so the
            // compiler keeps the write.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(secret)")
    }
}

/// The keys of one boot: metadata and data apart, so equal blocks at the
/// same offset of each do not encrypt alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub meta: Key,
    pub data: Key,
}

impl SessionKeys {
    pub fn random() -> Result<SessionKeys> {
        Ok(SessionKeys { meta: Key::random()?, data: Key::random()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_hex_and_never_shown() {
        let (a, b) = (Key::random().unwrap(), Key::random().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.hex().len(), 128);
        assert!(a.hex().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(format!("{a:?}"), "Key(secret)");
        assert_eq!(Key::fixed(0xab).hex(), "ab".repeat(64));
    }
}
