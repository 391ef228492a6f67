//! Reader and replayer for dm-log-writes logs.
//!
//! On-disk format (drivers/md/dm-log-writes.c, all integers little-endian):
//!
//! - The log device starts with the super block, alone in its first
//!   `sectorsize` bytes: `magic: u64`, `version: u64`, `nr_entries: u64`,
//!   `sectorsize: u32`. `sectorsize` is the logical block size of the
//!   logged device; every size and position below is in that unit.
//! - The entries follow from byte `sectorsize` on, one after the other.
//!   Each starts with a header block of `sectorsize` bytes: `sector: u64`,
//!   `nr_sectors: u64`, `flags: u64`, `data_len: u64`; for a mark,
//!   `data_len` bytes of the mark's name follow the header in that block.
//! - A write's data (`nr_sectors` blocks) follows its header block. A
//!   discard has `nr_sectors` but no data on the log; a flush without data
//!   and a mark have none.
//!
//! Entries are logged in the order their writes completed, and the writes
//! that completed before a flush are logged before that flush. Replaying
//! entries `[0, N)` therefore gives the logged device as a power cut could
//! have left it: a prefix of what reached the disk.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const VERSION: u64 = 1;

pub const FLAG_FLUSH: u64 = 1 << 0;
pub const FLAG_FUA: u64 = 1 << 1;
pub const FLAG_DISCARD: u64 = 1 << 2;
pub const FLAG_MARK: u64 = 1 << 3;
pub const FLAG_METADATA: u64 = 1 << 4;

const ENTRY_HEADER_BYTES: u64 = 32;
const SUPER_BYTES: usize = 28;
/// Copy and zero buffers.
const CHUNK: u64 = 1 << 20;

#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

fn io_err(what: &str, e: io::Error) -> Error {
    Error(format!("{what}: {e}"))
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with a message that
/// says what was being read when the source ends early.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset.checked_add(done as u64).ok_or_else(|| Error(format!("{what}: offset overflows")))?;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => return err(format!("{what}: the log ends at byte {at}, {} bytes short", buf.len() - done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&format!("{what}: read at byte {at}"), e)),
        }
    }
    Ok(())
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The log's super block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Super {
    pub nr_entries: u64,
    pub sectorsize: u32,
}

impl Super {
    pub fn parse(b: &[u8]) -> Result<Super> {
        if b.len() < SUPER_BYTES {
            return err("super block: too short");
        }
        let magic = le64(b, 0);
        if magic != MAGIC {
            return err(format!("not a dm-log-writes log: magic is {magic:#x}, expected {MAGIC:#x}"));
        }
        let version = le64(b, 8);
        if version != VERSION {
            return err(format!("dm-log-writes log version {version} is not supported (only {VERSION})"));
        }
        let sectorsize = le32(b, 24);
        if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
            return err(format!("super block: sector size {sectorsize} is not a power of two between 512 and 65536"));
        }
        Ok(Super { nr_entries: le64(b, 16), sectorsize })
    }
}

/// One logged entry, with where its data lives on the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    /// First sector written, in the log's sector size.
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// The mark's name, for a mark.
    pub mark: Option<Vec<u8>>,
    /// Byte offset of the data on the log (meaningful when `has_data`).
    pub data_offset: u64,
}

impl Entry {
    pub fn is_discard(&self) -> bool {
        self.flags & FLAG_DISCARD != 0
    }

    /// Whether replaying this entry changes the target.
    pub fn changes_target(&self) -> bool {
        self.nr_sectors > 0 && self.flags & FLAG_MARK == 0
    }

    pub fn flag_names(&self) -> String {
        let mut names = Vec::new();
        for (bit, name) in [
            (FLAG_FLUSH, "FLUSH"),
            (FLAG_FUA, "FUA"),
            (FLAG_DISCARD, "DISCARD"),
            (FLAG_MARK, "MARK"),
            (FLAG_METADATA, "METADATA"),
        ] {
            if self.flags & bit != 0 {
                names.push(name.to_string());
            }
        }
        let known = FLAG_FLUSH | FLAG_FUA | FLAG_DISCARD | FLAG_MARK | FLAG_METADATA;
        if self.flags & !known != 0 {
            names.push(format!("{:#x}", self.flags & !known));
        }
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    }

    /// The mark's name with spaces, backslashes and non-printable bytes
    /// escaped as `\xNN`, so a listing line always splits into fields.
    pub fn mark_text(&self) -> Option<String> {
        self.mark.as_ref().map(|m| {
            let mut s = String::new();
            for &c in m {
                if c.is_ascii_graphic() && c != b'\\' {
                    s.push(c as char);
                } else {
                    s.push_str(&format!("\\x{c:02x}"));
                }
            }
            s
        })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.index, self.sector, self.nr_sectors, self.flag_names())?;
        if let Some(m) = self.mark_text() {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

/// An open log: its super block and a cursor over the entries.
pub struct Log {
    file: File,
    pub sup: Super,
}

impl Log {
    pub fn open(path: &str) -> Result<Log> {
        let file = File::open(path).map_err(|e| io_err(&format!("open {path}"), e))?;
        let mut b = [0u8; SUPER_BYTES];
        read_exact_at(&file, &mut b, 0, "super block")?;
        let sup = Super::parse(&b)?;
        Ok(Log { file, sup })
    }

    /// Iterates over the entries in order; each step reads one header block.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            log: self,
            index: 0,
            offset: u64::from(self.sup.sectorsize),
            block: vec![0u8; self.sup.sectorsize as usize],
            failed: false,
        }
    }

    fn read_data(&self, buf: &mut [u8], offset: u64, index: u64) -> Result<()> {
        read_exact_at(&self.file, buf, offset, &format!("data of entry {index}"))
    }
}

pub struct Entries<'a> {
    log: &'a Log,
    index: u64,
    offset: u64,
    block: Vec<u8>,
    failed: bool,
}

impl Entries<'_> {
    fn next_entry(&mut self) -> Result<Entry> {
        let ss = u64::from(self.log.sup.sectorsize);
        let index = self.index;
        let what = format!("header of entry {index}");
        read_exact_at(&self.log.file, &mut self.block, self.offset, &what)?;
        let b = &self.block;
        let (sector, nr_sectors, flags, data_len) = (le64(b, 0), le64(b, 8), le64(b, 16), le64(b, 24));
        let mut mark = None;
        if flags & FLAG_MARK != 0 {
            if data_len > ss - ENTRY_HEADER_BYTES {
                return err(format!("entry {index}: mark of {data_len} bytes does not fit its {ss}-byte block"));
            }
            let start = ENTRY_HEADER_BYTES as usize;
            mark = Some(b[start..start + data_len as usize].to_vec());
        } else if data_len != 0 {
            return err(format!(
                "entry {index}: {data_len} bytes of inline data outside a mark (not written by dm-log-writes)"
            ));
        }
        let data_offset = self.offset + ss;
        let data_bytes = if flags & (FLAG_DISCARD | FLAG_MARK) != 0 {
            0
        } else {
            nr_sectors.checked_mul(ss).ok_or_else(|| Error(format!("entry {index}: {nr_sectors} sectors overflow")))?
        };
        // The entry must end within addressable bytes, as must its range on
        // the logged device.
        let next = data_offset
            .checked_add(data_bytes)
            .ok_or_else(|| Error(format!("entry {index}: its data overflows the log offsets")))?;
        let end_sector = sector.checked_add(nr_sectors);
        if end_sector.and_then(|e| e.checked_mul(ss)).is_none() {
            return err(format!("entry {index}: sectors {sector}+{nr_sectors} overflow"));
        }
        self.offset = next;
        self.index += 1;
        Ok(Entry { index, sector, nr_sectors, flags, mark, data_offset })
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.failed || self.index >= self.log.sup.nr_entries {
            return None;
        }
        let r = self.next_entry();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub writes: u64,
    pub discards: u64,
    pub bytes: u64,
}

fn write_all_at(target: &File, buf: &[u8], offset: u64, name: &str) -> Result<()> {
    target.write_all_at(buf, offset).map_err(|e| io_err(&format!("write {name} at byte {offset}"), e))
}

/// Applies entries `[from, to)` of the log to `target` (a file or block
/// device, not extended: every write must fit within its current size),
/// writing discarded ranges as zeros, then flushes it.
pub fn replay(log: &Log, target_path: &str, from: u64, to: u64) -> Result<Replayed> {
    if from > to {
        return err(format!("--from {from} is after --to {to}"));
    }
    if to > log.sup.nr_entries {
        return err(format!("--to {to} is beyond the log's {} entries", log.sup.nr_entries));
    }
    let target = std::fs::OpenOptions::new()
        .write(true)
        .open(target_path)
        .map_err(|e| io_err(&format!("open {target_path} for writing"), e))?;
    let size = {
        use std::io::Seek;
        let mut t = &target;
        t.seek(io::SeekFrom::End(0)).map_err(|e| io_err(&format!("size of {target_path}"), e))?
    };
    let ss = u64::from(log.sup.sectorsize);
    let mut done = Replayed::default();
    let mut buf = vec![0u8; CHUNK as usize];
    for entry in log.entries() {
        let entry = entry?;
        if entry.index >= to {
            break;
        }
        if entry.index < from || !entry.changes_target() {
            continue;
        }
        // Overflow was ruled out when the entry was read.
        let start = entry.sector * ss;
        let len = entry.nr_sectors * ss;
        if start + len > size {
            return err(format!(
                "entry {}: sectors {}+{} end at byte {}, beyond the end of {target_path} ({size} bytes)",
                entry.index,
                entry.sector,
                entry.nr_sectors,
                start + len
            ));
        }
        let mut off = 0;
        if entry.is_discard() {
            buf.fill(0);
            while off < len {
                let n = (len - off).min(CHUNK);
                write_all_at(&target, &buf[..n as usize], start + off, target_path)?;
                off += n;
            }
            done.discards += 1;
        } else {
            while off < len {
                let n = (len - off).min(CHUNK);
                let chunk = &mut buf[..n as usize];
                log.read_data(chunk, entry.data_offset + off, entry.index)?;
                write_all_at(&target, chunk, start + off, target_path)?;
                off += n;
            }
            done.writes += 1;
        }
        done.bytes += len;
    }
    target.sync_all().map_err(|e| io_err(&format!("flush {target_path}"), e))?;
    Ok(done)
}

extern "C" {
    // From the C library std already links; no crate needed for one call.
    fn ioctl(fd: std::os::raw::c_int, request: std::os::raw::c_ulong, ...) -> std::os::raw::c_int;
}

/// `_IO(0x12, 127)`: zero a byte range of a block device (`u64[2]`: start,
/// length), without moving the zeros through the page cache.
const BLKZEROOUT: std::os::raw::c_ulong = 0x127f;

/// How a target was zeroed.
#[derive(Debug, PartialEq, Eq)]
pub enum Zeroed {
    /// A block device, with BLKZEROOUT.
    Ioctl,
    /// A block device whose BLKZEROOUT failed, by writing zeros.
    Written,
    /// A regular file, by truncating it to nothing and back.
    Truncated,
}

/// Fills all of `target_path` (a file or block device) with zeros, keeping
/// its size, and flushes it.
pub fn zero(target_path: &str) -> Result<(u64, Zeroed)> {
    use std::io::Seek;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::io::AsRawFd;
    let target = std::fs::OpenOptions::new()
        .write(true)
        .open(target_path)
        .map_err(|e| io_err(&format!("open {target_path} for writing"), e))?;
    let meta = target.metadata().map_err(|e| io_err(&format!("stat {target_path}"), e))?;
    let size = (&target).seek(io::SeekFrom::End(0)).map_err(|e| io_err(&format!("size of {target_path}"), e))?;
    let how = if meta.file_type().is_block_device() {
        let range: [u64; 2] = [0, size];
        // SAFETY: the descriptor is open for the call; the kernel reads two
        // u64s from a live array.
        let rc = unsafe { ioctl(target.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
        if rc == 0 {
            Zeroed::Ioctl
        } else {
            let buf = vec![0u8; CHUNK as usize];
            let mut off = 0;
            while off < size {
                let n = (size - off).min(CHUNK);
                write_all_at(&target, &buf[..n as usize], off, target_path)?;
                off += n;
            }
            Zeroed::Written
        }
    } else if meta.is_file() {
        target.set_len(0).map_err(|e| io_err(&format!("truncate {target_path}"), e))?;
        target.set_len(size).map_err(|e| io_err(&format!("extend {target_path}"), e))?;
        Zeroed::Truncated
    } else {
        return err(format!("{target_path} is neither a block device nor a regular file"));
    };
    target.sync_all().map_err(|e| io_err(&format!("flush {target_path}"), e))?;
    Ok((size, how))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Builds a log the way dm-log-writes lays it out.
    struct Builder {
        ss: usize,
        bytes: Vec<u8>,
        entries: u64,
    }

    impl Builder {
        fn new(ss: usize) -> Builder {
            Builder { ss, bytes: vec![0u8; ss], entries: 0 }
        }

        fn header(&mut self, sector: u64, nr: u64, flags: u64, mark: &[u8]) {
            let mut block = vec![0u8; self.ss];
            block[0..8].copy_from_slice(&sector.to_le_bytes());
            block[8..16].copy_from_slice(&nr.to_le_bytes());
            block[16..24].copy_from_slice(&flags.to_le_bytes());
            block[24..32].copy_from_slice(&(mark.len() as u64).to_le_bytes());
            block[32..32 + mark.len()].copy_from_slice(mark);
            self.bytes.extend_from_slice(&block);
            self.entries += 1;
        }

        fn write(mut self, sector: u64, flags: u64, data: &[u8]) -> Self {
            assert_eq!(data.len() % self.ss, 0);
            self.header(sector, (data.len() / self.ss) as u64, flags, b"");
            self.bytes.extend_from_slice(data);
            self
        }

        fn flush(mut self) -> Self {
            self.header(0, 0, FLAG_FLUSH, b"");
            self
        }

        fn discard(mut self, sector: u64, nr: u64) -> Self {
            self.header(sector, nr, FLAG_DISCARD, b"");
            self
        }

        fn mark(mut self, name: &str) -> Self {
            self.header(0, 0, FLAG_MARK, name.as_bytes());
            self
        }

        fn finish(mut self) -> Vec<u8> {
            let n = self.entries;
            self.bytes[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            self.bytes[8..16].copy_from_slice(&VERSION.to_le_bytes());
            self.bytes[16..24].copy_from_slice(&n.to_le_bytes());
            self.bytes[24..28].copy_from_slice(&(self.ss as u32).to_le_bytes());
            self.bytes
        }
    }

    fn temp(name: &str, bytes: &[u8]) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "logreplay-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn fill(byte: u8, n: usize) -> Vec<u8> {
        vec![byte; n]
    }

    fn sample(ss: usize) -> Vec<u8> {
        Builder::new(ss)
            .write(0, 0, &fill(b'a', 2 * ss)) // 0: sectors 0-1
            .write(4, 0, &fill(b'b', ss)) // 1: sector 4
            .flush() // 2
            .mark("first synced") // 3
            .write(1, FLAG_FUA, &fill(b'c', ss)) // 4: sector 1
            .discard(0, 1) // 5: sector 0
            .write(6, FLAG_FLUSH | FLAG_FUA, &fill(b'd', 2 * ss)) // 6: sectors 6-7
            .mark("end") // 7
            .finish()
    }

    fn replayed(log: &str, ss: usize, from: u64, to: u64) -> (Replayed, Vec<u8>) {
        let target = temp("target", &fill(b'.', 8 * ss));
        let log = Log::open(log).unwrap();
        let r = replay(&log, &target, from, to).unwrap();
        let out = std::fs::read(&target).unwrap();
        std::fs::remove_file(&target).unwrap();
        (r, out)
    }

    fn sectors(out: &[u8], ss: usize) -> String {
        out.chunks(ss).map(|c| c[0] as char).collect()
    }

    #[test]
    fn lists_every_entry_with_flags_and_marks() {
        for ss in [512, 4096] {
            let path = temp("log", &sample(ss));
            let log = Log::open(&path).unwrap();
            assert_eq!(log.sup, Super { nr_entries: 8, sectorsize: ss as u32 });
            let lines: Vec<String> = log.entries().map(|e| e.unwrap().to_string()).collect();
            assert_eq!(
                lines,
                [
                    "0 0 2 -",
                    "1 4 1 -",
                    "2 0 0 FLUSH",
                    "3 0 0 MARK first\\x20synced",
                    "4 1 1 FUA",
                    "5 0 1 DISCARD",
                    "6 6 2 FLUSH,FUA",
                    "7 0 0 MARK end",
                ]
            );
            // Data follows its header; a discard carries none.
            let e: Vec<Entry> = log.entries().map(|e| e.unwrap()).collect();
            let ss = ss as u64;
            assert_eq!(e[0].data_offset, 2 * ss);
            assert_eq!(e[1].data_offset, 5 * ss);
            assert_eq!(e[4].data_offset, 9 * ss);
            assert_eq!(e[6].data_offset, 12 * ss);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn replays_prefixes_and_ranges() {
        for ss in [512, 4096] {
            let path = temp("log", &sample(ss));
            let (r, out) = replayed(&path, ss, 0, 0);
            assert_eq!(r, Replayed::default());
            assert_eq!(sectors(&out, ss), "........");
            let (_, out) = replayed(&path, ss, 0, 1);
            assert_eq!(sectors(&out, ss), "aa......");
            let (_, out) = replayed(&path, ss, 0, 4);
            assert_eq!(sectors(&out, ss), "aa..b...");
            let (_, out) = replayed(&path, ss, 0, 5);
            assert_eq!(sectors(&out, ss), "ac..b...");
            // The discard is written as zeros.
            let (r, out) = replayed(&path, ss, 0, 8);
            assert_eq!(sectors(&out, ss), "\0c..b.dd");
            assert_eq!(r, Replayed { writes: 4, discards: 1, bytes: 7 * ss as u64 });
            // A range applies only its own entries.
            let (_, out) = replayed(&path, ss, 4, 6);
            assert_eq!(sectors(&out, ss), "\0c......");
            // Whole contents, not just first bytes.
            assert!(out[ss..2 * ss].iter().all(|&b| b == b'c'));
            assert!(out[..ss].iter().all(|&b| b == 0));
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn big_writes_cross_the_copy_buffer() {
        let ss = 512;
        let data: Vec<u8> = (0..(CHUNK as usize * 2 + 3 * ss)).map(|i| (i % 251) as u8).collect();
        let log = Builder::new(ss).write(2, 0, &data).discard(3, (CHUNK / 512) * 2).finish();
        let path = temp("log", &log);
        let size = data.len() + 4 * ss;
        let target = temp("target", &vec![0xffu8; size]);
        let l = Log::open(&path).unwrap();
        replay(&l, &target, 0, 1).unwrap();
        let out = std::fs::read(&target).unwrap();
        assert_eq!(&out[2 * ss..2 * ss + data.len()], &data[..]);
        replay(&l, &target, 1, 2).unwrap();
        let out = std::fs::read(&target).unwrap();
        assert_eq!(&out[2 * ss..3 * ss], &data[..ss]);
        assert!(out[3 * ss..3 * ss + 2 * CHUNK as usize].iter().all(|&b| b == 0));
        assert_eq!(&out[3 * ss + 2 * CHUNK as usize..2 * ss + data.len()], &data[ss + 2 * CHUNK as usize..]);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&target).unwrap();
    }

    fn open_err(bytes: &[u8]) -> String {
        let path = temp("bad", bytes);
        let r = Log::open(&path).err().map(|e| e.0);
        std::fs::remove_file(&path).unwrap();
        r.expect("opening must fail")
    }

    fn list_err(bytes: &[u8]) -> String {
        let path = temp("bad", bytes);
        let log = Log::open(&path).unwrap();
        let r = log.entries().find_map(|e| e.err()).map(|e| e.0);
        std::fs::remove_file(&path).unwrap();
        r.expect("listing must fail")
    }

    #[test]
    fn bad_super_blocks_are_errors() {
        assert!(open_err(b"").contains("super block: the log ends at byte 0"));
        assert!(open_err(&[0u8; 512]).contains("not a dm-log-writes log"));
        let mut b = sample(512);
        b[8] = 2;
        assert!(open_err(&b).contains("version 2 is not supported"));
        let mut b = sample(512);
        b[24..28].copy_from_slice(&1000u32.to_le_bytes());
        assert!(open_err(&b).contains("sector size 1000"));
        let mut b = sample(512);
        b[24..28].copy_from_slice(&0u32.to_le_bytes());
        assert!(open_err(&b).contains("sector size 0"));
    }

    #[test]
    fn bad_entries_are_errors() {
        // More entries announced than present.
        let mut b = sample(512);
        b[16..24].copy_from_slice(&9u64.to_le_bytes());
        assert!(list_err(&b).contains("header of entry 8: the log ends"));
        // Truncated data of the last write.
        let mut b = sample(512);
        b.truncate(b.len() - 512 - 100);
        let path = temp("trunc", &b);
        let log = Log::open(&path).unwrap();
        let target = temp("target", &[0u8; 4096]);
        let e = replay(&log, &target, 0, 7).unwrap_err().0;
        assert!(e.contains("data of entry 6: the log ends"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&target).unwrap();
        // A mark longer than its block.
        let mut b = sample(512);
        let mark_header = 512 * 7;
        b[mark_header + 24..mark_header + 32].copy_from_slice(&600u64.to_le_bytes());
        assert!(list_err(&b).contains("entry 3: mark of 600 bytes"));
        // Inline data outside a mark.
        let mut b = sample(512);
        b[512 + 24] = 1;
        assert!(list_err(&b).contains("entry 0: 1 bytes of inline data"));
        // Sizes that overflow.
        let mut b = sample(512);
        b[512 + 8..512 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(list_err(&b).contains("overflow"));
        let mut b = sample(512);
        b[512..512 + 8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert!(list_err(&b).contains("overflow"));
    }

    /// Damaged logs give errors or nonsense entries, never a panic.
    #[test]
    fn garbage_never_panics() {
        let good = sample(512);
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let target = temp("target", &[0u8; 8 * 512]);
        for round in 0..400 {
            let mut b = good.clone();
            for _ in 0..1 + round % 8 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            if round % 5 == 0 {
                let len = (next() % b.len() as u64) as usize;
                b.truncate(len);
            }
            // Keep the super block valid half of the time, to reach entries.
            if round % 2 == 0 && b.len() >= 28 {
                b[..28].copy_from_slice(&good[..28]);
            }
            let path = temp("garbage", &b);
            if let Ok(log) = Log::open(&path) {
                let listed = log.entries().filter(|e| e.is_ok()).count() as u64;
                let _ = replay(&log, &target, 0, listed.min(log.sup.nr_entries));
                let _ = replay(&log, &target, 0, log.sup.nr_entries);
            }
            std::fs::remove_file(&path).unwrap();
        }
        std::fs::remove_file(&target).unwrap();
    }

    #[test]
    fn zero_keeps_the_size() {
        let target = temp("zero", &fill(b'x', 10_000));
        assert_eq!(zero(&target).unwrap(), (10_000, Zeroed::Truncated));
        assert_eq!(std::fs::read(&target).unwrap(), vec![0u8; 10_000]);
        std::fs::remove_file(&target).unwrap();
        assert!(zero("/nonexistent/x").unwrap_err().0.contains("open /nonexistent/x"));
    }

    #[test]
    fn bad_ranges_and_targets_are_errors() {
        let path = temp("log", &sample(512));
        let log = Log::open(&path).unwrap();
        let target = temp("target", &[0u8; 8 * 512]);
        assert!(replay(&log, &target, 0, 9).unwrap_err().0.contains("beyond the log's 8 entries"));
        assert!(replay(&log, &target, 3, 2).unwrap_err().0.contains("--from 3 is after --to 2"));
        assert!(replay(&log, "/nonexistent/x", 0, 1).unwrap_err().0.contains("open /nonexistent/x"));
        let small = temp("small", &[0u8; 7 * 512]);
        let e = replay(&log, &small, 0, 8).unwrap_err().0;
        assert!(e.contains("entry 6: sectors 6+2 end at byte 4096, beyond the end"), "{e}");
        for p in [path, target, small] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
