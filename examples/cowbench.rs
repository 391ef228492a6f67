//! The benchmark's guest helper (`qemu-tests/bench.sh`): a clock for
//! commands, the floor program, and O_DIRECT throughput probes. Busybox has
//! no sub-second clock and no O_DIRECT random I/O, so this does both.
//!
//!   cowbench time CMD [ARG...]        run CMD (its output discarded); print "µs rc"
//!   cowbench floor DEV FSTYPE FILE TABLES
//!                                     only cowroot's mount, loop and dm ioctls:
//!                                     mount DEV read-only, attach FILE (under the
//!                                     mount) as cowroot does, create the dm devices
//!                                     listed in TABLES as cowroot does
//!   cowbench seqread DEV MIB          O_DIRECT 1 MiB reads of the first MIB MiB; print "µs bytes"
//!   cowbench seqwrite DEV MIB         O_DIRECT 1 MiB writes, then fdatasync; print "µs bytes"
//!   cowbench flush DEV COUNT          COUNT times: an O_DIRECT 4 KiB write of zeros at
//!                                     4 MiB, then fdatasync; print "µs bytes"
//!   cowbench randwrite DEV COUNT FROM_MIB SPAN_MIB
//!                                     COUNT O_DIRECT 4 KiB writes at distinct random
//!                                     4 KiB offsets in SPAN_MIB MiB from FROM_MIB,
//!                                     then fdatasync; print "µs bytes"

use cowroot::exec::{DmSpec, System};
use cowroot::sys::RealSystem;
use cowroot::units::Sectors;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{exit, Command};
use std::time::{Duration, Instant};

fn die(message: String) -> ! {
    eprintln!("cowbench: {message}");
    exit(1)
}

/// A buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let layout = Layout::from_size_align(len, 4096).unwrap_or_else(|e| die(format!("buffer: {e}")));
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            die("out of memory".into());
        }
        let mut buf = Aligned { ptr, layout };
        buf.as_mut().fill(fill);
        buf
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to layout.size() bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn open_direct(path: &str, write: bool) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| die(format!("open {path}: {e}")))
}

fn number(text: &str) -> u64 {
    text.parse().unwrap_or_else(|_| die(format!("not a number: {text}")))
}

fn report(took: Duration, bytes: u64) {
    println!("{} {bytes}", took.as_micros());
}

fn seq(path: &str, mib: u64, write: bool) {
    let file = open_direct(path, write);
    let mut buf = Aligned::new(1 << 20, if write { 0x5a } else { 0 });
    let started = Instant::now();
    for i in 0..mib {
        let offset = i << 20;
        let done =
            if write { file.write_all_at(buf.as_mut(), offset) } else { file.read_exact_at(buf.as_mut(), offset) };
        done.unwrap_or_else(|e| die(format!("{path} at {offset}: {e}")));
    }
    if write {
        file.sync_data().unwrap_or_else(|e| die(format!("fdatasync {path}: {e}")));
    }
    report(started.elapsed(), mib << 20);
}

/// Distinct random 4 KiB slots, from a fixed seed so every configuration
/// writes the same places.
fn random_slots(count: u64, span_mib: u64) -> Vec<u64> {
    let slots = span_mib * 256;
    if count > slots {
        die(format!("{count} writes do not fit in {span_mib} MiB"));
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut taken = std::collections::HashSet::new();
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let slot = state.wrapping_mul(0x2545_f491_4f6c_dd1d) % slots;
        if taken.insert(slot) {
            out.push(slot * 4096);
        }
    }
    out
}

fn randwrite(path: &str, count: u64, from_mib: u64, span_mib: u64) {
    let file = open_direct(path, true);
    let mut buf = Aligned::new(4096, 0xa5);
    let slots = random_slots(count, span_mib);
    let started = Instant::now();
    for offset in slots {
        let offset = (from_mib << 20) + offset;
        file.write_all_at(buf.as_mut(), offset).unwrap_or_else(|e| die(format!("{path} at {offset}: {e}")));
    }
    file.sync_data().unwrap_or_else(|e| die(format!("fdatasync {path}: {e}")));
    report(started.elapsed(), count * 4096);
}

fn flush(path: &str, count: u64) {
    let file = open_direct(path, true);
    let mut buf = Aligned::new(4096, 0);
    let started = Instant::now();
    for _ in 0..count {
        file.write_all_at(buf.as_mut(), 4 << 20).unwrap_or_else(|e| die(format!("{path}: {e}")));
        file.sync_data().unwrap_or_else(|e| die(format!("fdatasync {path}: {e}")));
    }
    report(started.elapsed(), count * 4096);
}

/// TABLES: one device per line, in creation order:
/// `NAME UUID PRIVATE(0|1) LEN TARGET PARAMS...`.
fn floor(device: &str, fstype: &str, file: &str, tables: &str) {
    let specs: Vec<DmSpec> = std::fs::read_to_string(tables)
        .unwrap_or_else(|e| die(format!("read {tables}: {e}")))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 6 {
                die(format!("bad table line: {line}"));
            }
            let target: &'static str = match words[4] {
                "linear" => "linear",
                "thin-pool" => "thin-pool",
                "thin" => "thin",
                other => die(format!("unknown target {other}")),
            };
            DmSpec {
                name: words[0].into(),
                uuid: words[1].into(),
                private: words[2] == "1",
                len: Sectors(number(words[3])),
                target,
                params: words[5..].join(" "),
                read_only: false,
            }
        })
        .collect();
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    let dir = cowroot::plan::HOST_MOUNT;
    std::fs::create_dir_all(dir).unwrap_or_else(|e| die(format!("mkdir {dir}: {e}")));
    nix::mount::mount(Some(device), dir, Some(fstype), flags, None::<&str>)
        .unwrap_or_else(|e| die(format!("mount {device}: {e}")));
    let mut sys = RealSystem::new(Duration::from_secs(10));
    let path = sys.attach_loop(&format!("{dir}{file}"), false).unwrap_or_else(|e| die(e.to_string()));
    if path != "/dev/loop0" {
        die(format!("the tables name loop0, but {path} was attached"));
    }
    for spec in &specs {
        let dev = sys.dm_create(spec).unwrap_or_else(|e| die(e.to_string()));
        if !spec.private {
            sys.make_node(&spec.name, dev).unwrap_or_else(|e| die(e.to_string()));
        }
    }
    // The loop device is set to clear itself on last close: keep it until
    // the thin device holds it.
    drop(sys);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["time", command, rest @ ..] => {
            let started = Instant::now();
            // The command's own output would mix with ours.
            let status = Command::new(command)
                .args(rest)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap_or_else(|e| die(format!("{command}: {e}")));
            println!("{} {}", started.elapsed().as_micros(), status.code().unwrap_or(-1));
        }
        ["floor", device, fstype, file, tables] => floor(device, fstype, file, tables),
        ["seqread", path, mib] => seq(path, number(mib), false),
        ["seqwrite", path, mib] => seq(path, number(mib), true),
        ["flush", path, count] => flush(path, number(count)),
        ["randwrite", path, count, from, span] => randwrite(path, number(count), number(from), number(span)),
        _ => die("usage: see the top of examples/cowbench.rs".into()),
    }
}
