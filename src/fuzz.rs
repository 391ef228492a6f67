//! Property tests over every parser that reads outside input: the command
//! line, the config (with the configuration file and dracut's cmdline.d), the pool header, pool classification, filesystem and
//! partition probes, signatures, dm table and status lines, sizes. Each
//! runs `COWROOT_FUZZ_CASES` inputs (a fixed count in `./test.sh`; a million
//! with `./test.sh --fuzz`), random and mutated from valid ones; none may
//! panic (overflow checks are on in these builds) or hang, and the
//! properties below must hold.

use crate::blkid::{self, FS_PROBE_BYTES};
use crate::cmdline;
use crate::config::Config;
use crate::header::{self, Copies, PoolHeader, SLOT_BYTES};
use crate::pool::{self, PoolState};
use crate::settings::Settings;
use crate::signature;
use crate::table::{DevNum, Linear, PoolStatus, Thin, ThinPool};
use crate::units;
use std::time::Instant;

/// xorshift64*: fast, deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// Changes 1 to 8 bytes of `buf` (random values, or copies of magic-ish
    /// bytes), within `window` bytes from `at`.
    fn mutate(&mut self, buf: &mut [u8], at: usize, window: usize) {
        for _ in 0..1 + self.below(8) {
            let i = at + self.below(window.min(buf.len().saturating_sub(at)));
            if i < buf.len() {
                buf[i] = match self.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => self.byte(),
                };
            }
        }
    }
}

fn cases() -> u64 {
    std::env::var("COWROOT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// Runs `case` for every input and reports the count and time.
fn run(name: &str, mut case: impl FnMut(&mut Rng)) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64 ^ name.bytes().map(u64::from).sum::<u64>());
    let started = Instant::now();
    let n = cases();
    for _ in 0..n {
        case(&mut rng);
    }
    eprintln!("fuzz {name}: {n} inputs in {:.1} s", started.elapsed().as_secs_f64());
}

const WORDS: &[&str] = &[
    "cowroot=",
    "cowroot.dev=",
    "cowpool=",
    "cowroot.reset=",
    "cowroot.name=",
    "cowroot.timeout=",
    "cowroot.onfail=",
    "cowroot.debug",
    "cowroot.fstype=",
    "root=",
    "/dev/vdb",
    "LABEL=",
    "UUID=",
    "PARTLABEL=",
    "ram:",
    "vg/lv",
    "/images/root.img",
    "\"",
    "=",
    " ",
    "\t",
    "\n",
    "--",
    "..",
    "\u{a0}",
    "ro",
    "1",
    "99999999999999999999",
    "halt",
];

fn random_cmdline(rng: &mut Rng) -> Vec<u8> {
    let mut line = Vec::new();
    for _ in 0..rng.below(24) {
        match rng.below(5) {
            0 => line.push(rng.byte()),
            _ => line.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes()),
        }
    }
    line
}

#[test]
fn fuzz_cmdline_and_config() {
    run("cmdline+config", |rng| {
        let line = random_cmdline(rng);
        let params = cmdline::split_bytes(&line);
        // Every word ends up as at most one parameter.
        assert!(params.len() <= line.len());
        let config = Config::from_params(&params);
        // Without `cowroot=`, nothing to do or an error; never a config.
        if !params.iter().any(|p| p.key == "cowroot") {
            assert!(!matches!(config, Ok(Some(_))));
        }
        if let Ok(Some(cfg)) = &config {
            assert!(cfg.timeout_secs <= 86_400);
        }
        let _ = crate::config::root_device_name(&params);
        let _ = crate::config::onfail_policy(&params);
    });
}

#[test]
fn fuzz_config_file_and_cmdline_d() {
    run("config file+cmdline.d", |rng| {
        let mut file = random_cmdline(rng);
        // Comments and more lines than a command line has.
        for _ in 0..rng.below(4) {
            let at = rng.below(file.len() + 1);
            file.insert(at, if rng.below(2) == 0 { b'#' } else { b'\n' });
        }
        let dracut = vec![("/etc/cmdline.d/a.conf".to_string(), random_cmdline(rng))];
        let lines = |bytes: &[u8]| bytes.split(|&b| b == b'\n').count();
        let lines = [lines(&file), lines(&dracut[0].1)];
        let cmdline = random_cmdline(rng);
        let settings = Settings::merge(Some(("/etc/cowroot.conf", &file)), &dracut, &cmdline);
        let config = settings.config();
        // An error from a file names a line it has.
        if let Err(err @ crate::error::Error::InFile { file, line, .. }) = &config {
            let has = lines[usize::from(file != "/etc/cowroot.conf")];
            assert!(*line >= 1 && *line <= has, "{err}");
        }
        // Turned on only by a `cowroot` word somewhere.
        if matches!(config, Ok(Some(_))) {
            assert!(settings.params().iter().any(|p| p.key == "cowroot"));
        }
        let _ = crate::config::root_device_name(&settings.params());
        let _ = crate::config::onfail_policy(&settings.params());
        let _ = settings.describe();
    });
}

#[test]
fn fuzz_header_decode() {
    let valid = header::sample().encode();
    run("header", |rng| {
        let mut slot = valid;
        if rng.below(8) == 0 {
            for b in slot.iter_mut().take(header::ENCODED_LEN) {
                *b = rng.byte();
            }
        } else {
            rng.mutate(&mut slot, 0, header::ENCODED_LEN);
            // Half the time, make the checksum right so validation is
            // what stands between the bytes and the planner.
            if rng.below(2) == 0 {
                header::seal(&mut slot);
            }
        }
        if let Ok(h) = PoolHeader::decode(&slot) {
            // Whatever decodes re-encodes to itself and can be advanced or
            // says why not.
            assert_eq!(PoolHeader::decode(&h.encode()), Ok(h.clone()));
            assert!(h.active_thin <= header::MAX_THIN_ID && h.active_thin < h.next_thin);
            assert!(h.active_thin == 0 || h.origin.is_some());
            let _ = h.next();
        }
    });
}

#[test]
fn fuzz_pool_classification() {
    // Enough of the start to hold both copies.
    const LEN: usize = 64 * 1024 + SLOT_BYTES + 1024;
    let mut base = vec![0u8; LEN];
    let mut h = header::sample();
    base[..SLOT_BYTES].copy_from_slice(&h.encode());
    h.seq += 1;
    base[64 * 1024..64 * 1024 + SLOT_BYTES].copy_from_slice(&h.encode());
    let end = vec![0u8; 4096];
    run("pool", |rng| {
        let mut start = base.clone();
        let at = [0, 64 * 1024, rng.below(LEN)][rng.below(3)];
        rng.mutate(&mut start, at, 512);
        let state = pool::classify_pool(&start, &end, 1 << 30);
        let copies = Copies::read([&start[..SLOT_BYTES], &start[64 * 1024..64 * 1024 + SLOT_BYTES]]);
        // Ours only with a valid copy, and then the newest one.
        if let PoolState::Ours { header, .. } = &state {
            assert_eq!(copies.newest().map(|(_, h)| h), Some(header));
        }
        // One copy intact and nothing outside the slots touched: never refused.
        let used = header::ENCODED_LEN;
        let in_slot = |i: usize| i < used || (64 * 1024..64 * 1024 + used).contains(&i);
        let outside = start.iter().zip(&base).enumerate().any(|(i, (a, b))| a != b && !in_slot(i));
        if !outside
            && copies.0.iter().any(|c| c.is_ok())
            && signature::detect(&start).is_none_or(|f| f == "a cowroot pool")
        {
            assert!(matches!(state, PoolState::Ours { .. } | PoolState::NewerVersion(_)), "{state:?}");
        }
    });
}

#[test]
fn fuzz_filesystem_and_partition_probes() {
    let mut bases: Vec<Vec<u8>> = Vec::new();
    let mut ext = vec![0u8; FS_PROBE_BYTES];
    ext[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    bases.push(ext);
    let mut xfs = vec![0u8; FS_PROBE_BYTES];
    xfs[..4].copy_from_slice(b"XFSB");
    bases.push(xfs);
    let mut btrfs = vec![0u8; FS_PROBE_BYTES];
    btrfs[65600..65608].copy_from_slice(b"_BHRfS_M");
    bases.push(btrfs);
    let mut gpt = vec![0u8; FS_PROBE_BYTES];
    gpt[512..520].copy_from_slice(b"EFI PART");
    gpt[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
    gpt[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
    gpt[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
    bases.push(gpt);
    let mut mbr = vec![0u8; FS_PROBE_BYTES];
    mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
    bases.push(mbr);
    run("blkid+signatures", |rng| {
        let base = &bases[rng.below(bases.len())];
        let mut buf = base.clone();
        let at = [0, 512, 1024, 65536, rng.below(FS_PROBE_BYTES)][rng.below(5)];
        rng.mutate(&mut buf, at, 128);
        let cut = if rng.below(8) == 0 { rng.below(buf.len()) } else { buf.len() };
        let buf = &buf[..cut];
        let _ = blkid::probe_fs(buf);
        for sector in [512, 4096, rng.below(1 << 20)] {
            let _ = blkid::partition_ids(buf, sector, rng.next() as u32);
        }
        let _ = signature::detect(buf);
        let _ = signature::detect_end(buf, rng.next() >> rng.below(64));
    });
}

#[test]
fn fuzz_table_and_status_lines() {
    const TOKENS: &[&str] = &[
        "0",
        "1",
        "254:3",
        "7:0",
        "128",
        "-",
        "rw",
        "ro",
        "Fail",
        "Error",
        "needs_check",
        "30/512",
        "1/0",
        "error_if_no_space",
        "18446744073709551616",
        "4294967296:1",
        "x",
        "/",
        ":",
        " ",
        "  ",
        "out_of_data_space",
    ];
    run("tables+sizes", |rng| {
        let mut line = String::new();
        for _ in 0..rng.below(12) {
            line.push_str(TOKENS[rng.below(TOKENS.len())]);
            line.push(if rng.below(3) == 0 { ' ' } else { char::from(rng.byte() % 96 + 32) });
        }
        if let Ok(status) = line.parse::<PoolStatus>() {
            let (d, m) = (status.data_percent(), status.meta_percent());
            assert!(status.data_used > status.data_total || d.0 <= 1000);
            assert!(status.meta_used > status.meta_total || m.0 <= 1000);
            let _ = status.metadata_full();
        }
        if let Ok(t) = line.parse::<Thin>() {
            assert_eq!(t.to_string().parse::<Thin>(), Ok(t));
        }
        if let Ok(t) = line.parse::<ThinPool>() {
            let _ = t.to_string();
        }
        if let Ok(t) = line.parse::<Linear>() {
            assert_eq!(t.to_string().parse::<Linear>(), Ok(t));
        }
        let _ = line.parse::<DevNum>();
        let _ = units::parse_size(&line);
    });
}
