//! Carrying out a plan through a small `System` trait, undoing everything on
//! failure in reverse order. The real `System` lives in `sys`; tests use a
//! recording fake to check the order of actions and of rollback. Every
//! effect cowroot has on devices goes through `System`.

use crate::error::{Error, Result};
use crate::header::PoolHeader;
use crate::names::{DeviceName, Role};
use crate::plan::{DevRef, Step, HOST_MOUNT, RAM_POOL_DIR, RAM_POOL_FILE};
use crate::render::render_step;
use crate::table::{DevNum, PoolStatus};
use crate::units::{Bytes, Sectors};

/// One device-mapper device to create and activate.
#[derive(Clone, PartialEq, Eq)]
pub struct DmSpec {
    pub name: String,
    pub uuid: String,
    pub target: &'static str,
    pub len: Sectors,
    pub params: String,
    /// Hidden from udev's disk rules (no by-uuid links, no blkid).
    pub private: bool,
    /// A read-only table: the kernel refuses every write.
    pub read_only: bool,
}

impl std::fmt::Debug for DmSpec {
    /// Without the parameters of a crypt table: they hold its key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params = if self.target == "crypt" { "(hidden)" } else { self.params.as_str() };
        f.debug_struct("DmSpec")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("len", &self.len)
            .field("params", &params)
            .finish()
    }
}

/// What a header write first does to make a pool new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// Nothing: an existing pool's header changes.
    No,
    /// Zeroes the first thin-pool metadata block (the kernel then formats
    /// fresh metadata): for a device already proven blank, whose first
    /// and last MiB are zero.
    MetadataBlock,
    /// Also zeroes the header region and the last MiB, wiping old
    /// signatures (`cowroot format` over a used device).
    Wipe,
}

/// A live dm device's first table (or status) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmLine {
    pub len: Sectors,
    pub target: String,
    pub params: String,
}

/// What the kernel says of a dm device that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmInfo {
    pub uuid: String,
    /// A table is loaded and live.
    pub active: bool,
}

/// The effects of cowroot.
pub trait System {
    fn mount_ro(&mut self, device: &str, dir: &str, fstype: Option<&str>) -> Result<()>;
    fn unmount(&mut self, dir: &str) -> Result<()>;
    /// Attaches `file` to a free loop device, read-only unless `writable`
    /// (only a RAM pool's file, which cowroot made); returns its path.
    fn attach_loop(&mut self, file: &str, writable: bool) -> Result<String>;
    /// Mounts a tmpfs of `bytes` on `dir` and makes `file` in it a sparse
    /// file of that size: a RAM pool, using memory only for what is written.
    fn mount_ram(&mut self, dir: &str, file: &str, bytes: Bytes) -> Result<()>;
    /// Zeroes the first `bytes` of a block device, durably.
    fn zero_start(&mut self, dev: DevNum, bytes: usize) -> Result<()>;
    /// Detaches a mount lazily: it goes once nothing holds it.
    fn unmount_lazy(&mut self, dir: &str) -> Result<()>;
    fn detach_loop(&mut self, path: &str) -> Result<()>;
    /// Connects a free NBD device to `server`'s export, read-only, trying
    /// until `seconds` have passed (0: once); returns its path.
    fn nbd_connect(&mut self, server: &crate::nbd::NbdServer, seconds: u64) -> Result<String>;
    fn nbd_disconnect(&mut self, device: &str) -> Result<()>;
    fn dev_num(&mut self, path: &str) -> Result<DevNum>;
    /// Sets a block device read-only (or back); returns whether it was
    /// read-only before.
    fn set_read_only(&mut self, device: &str, read_only: bool) -> Result<bool>;
    /// The device's logical block size in bytes.
    fn logical_block_size(&mut self, device: &str) -> Result<u32>;
    /// Writes one header copy, durably; `fresh` first makes the pool new.
    fn write_header(&mut self, device: &str, slot: usize, header: &PoolHeader, fresh: Fresh) -> Result<()>;
    fn dm_create(&mut self, spec: &DmSpec) -> Result<DevNum>;
    fn dm_remove(&mut self, name: &str) -> Result<()>;
    /// Replaces the table of the active device `spec.name` (suspending it
    /// around the swap, its filesystem frozen).
    fn dm_reload(&mut self, spec: &DmSpec) -> Result<()>;
    /// `None` when no dm device has that name.
    fn dm_info(&mut self, name: &str) -> Result<Option<DmInfo>>;
    /// The live table (`status` false) or status (`status` true) line.
    fn dm_line(&mut self, name: &str, status: bool) -> Result<DmLine>;
    /// Sends a message to a thin-pool; `missing_ok` tolerates "no such thin".
    fn dm_message(&mut self, name: &str, message: &str, missing_ok: bool) -> Result<()>;
    /// Sends `message` to `pool` while the active device `device` is
    /// suspended (its filesystem frozen), as a snapshot of an active thin
    /// needs; resumes it whatever happened.
    fn message_suspended(&mut self, device: &str, pool: &str, message: &str) -> Result<()>;
    /// Makes `/dev/mapper/NAME` exist (or waits for udev to make it);
    /// returns whether cowroot created the node itself.
    fn make_node(&mut self, name: &str, dev: DevNum) -> Result<bool>;
    fn remove_node(&mut self, name: &str) -> Result<()>;
    /// Asks the kernel to resume the hibernation image on `device`: returns
    /// only if it did not (see `resume`).
    fn resume_hibernation(&mut self, device: DevNum, offset_pages: u64) -> Result<()>;

    /// Time spent so far in the kernel's mount, loop and dm calls: the
    /// rest of a boot is cowroot's own work (reported with debug on).
    fn kernel_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// How long waits may take (`cowroot.timeout`).
    fn set_timeout(&mut self, _timeout: std::time::Duration) {}

    /// The kernel's status line of a thin-pool, parsed.
    fn pool_status(&mut self, name: &str) -> Result<PoolStatus> {
        let line = self.dm_line(name, true)?;
        line.params.parse().map_err(|e: crate::table::ParseError| Error::Inconsistent(format!("{name}: {}", e.0)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Unmount(String),
    DetachLoop(String),
    DisconnectNbd(String),
    RemoveDm(String),
    RemoveNode(String),
    SetWritable(String),
}

pub struct Executor<'a, S: System> {
    sys: &'a mut S,
    name: &'a DeviceName,
    undo: Vec<Undo>,
    loop_path: Option<String>,
    nbd_path: Option<String>,
    /// The loop device of a RAM pool.
    ram_pool: Option<String>,
    devs: Vec<(Role, DevNum)>,
}

impl<'a, S: System> Executor<'a, S> {
    pub fn new(sys: &'a mut S, name: &'a DeviceName) -> Self {
        Executor { sys, name, undo: Vec::new(), loop_path: None, nbd_path: None, ram_pool: None, devs: Vec::new() }
    }

    pub fn loop_path(&self) -> Option<&str> {
        self.loop_path.as_deref()
    }

    pub fn nbd_path(&self) -> Option<&str> {
        self.nbd_path.as_deref()
    }

    /// Disconnects the NBD device this plan connected (the boot found it
    /// needs it no more).
    pub fn disconnect_nbd(&mut self) -> Result<()> {
        let Some(path) = self.nbd_path.take() else { return Ok(()) };
        self.sys.nbd_disconnect(&path)?;
        self.undo.retain(|u| *u != Undo::DisconnectNbd(path.clone()));
        Ok(())
    }

    /// The device number of one of the dm devices this plan created.
    pub fn dev(&self, role: Role) -> Option<DevNum> {
        self.devs.iter().find(|(r, _)| *r == role).map(|(_, d)| *d)
    }

    pub fn ram_pool(&self) -> Option<&str> {
        self.ram_pool.as_deref()
    }

    pub fn system(&mut self) -> &mut S {
        self.sys
    }

    fn resolve(&mut self, dev: &DevRef) -> Result<DevNum> {
        match dev {
            DevRef::Path(path) => self.sys.dev_num(path),
            DevRef::Loop => {
                let path =
                    self.loop_path.clone().ok_or_else(|| Error::Inconsistent("no loop device attached".into()))?;
                self.sys.dev_num(&path)
            }
            DevRef::Nbd => {
                let path =
                    self.nbd_path.clone().ok_or_else(|| Error::Inconsistent("no NBD device connected".into()))?;
                self.sys.dev_num(&path)
            }
            DevRef::RamPool => {
                let path = self.ram_pool.clone().ok_or_else(|| Error::Inconsistent("no RAM pool made".into()))?;
                self.sys.dev_num(&path)
            }
            DevRef::Dm(role) => self
                .devs
                .iter()
                .find(|(r, _)| r == role)
                .map(|(_, d)| *d)
                .ok_or_else(|| Error::Inconsistent(format!("{} not created", self.name.dm_name(*role)))),
        }
    }

    fn create(&mut self, role: Role, target: &'static str, len: Sectors, params: String) -> Result<()> {
        let spec = DmSpec {
            name: self.name.dm_name(role),
            uuid: self.name.dm_uuid(role),
            target,
            len,
            params,
            private: role.is_private(),
            read_only: matches!(role, Role::ReadOnly | Role::Copy),
        };
        let dev = self.sys.dm_create(&spec)?;
        self.undo.push(Undo::RemoveDm(spec.name.clone()));
        self.devs.push((role, dev));
        if !role.is_private() && self.sys.make_node(&spec.name, dev)? {
            self.undo.push(Undo::RemoveNode(spec.name));
        }
        Ok(())
    }

    /// A pool in read-only or failed mode, or flagged needs_check, refuses
    /// the messages that follow: stop with what it means.
    fn check_pool(&mut self, device: &str) -> Result<()> {
        let status = self.sys.pool_status(&self.name.dm_name(Role::Pool))?;
        if status.mode == "ro" && status.metadata_full() {
            return Err(Error::MetadataFull { device: device.to_string() });
        }
        if status.needs_check || !matches!(status.mode.as_str(), "rw" | "out_of_data_space") {
            let state =
                if status.needs_check { "flagged needs_check".to_string() } else { format!("in {} mode", status.mode) };
            return Err(Error::PoolDegraded { device: device.to_string(), state });
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        if let Some(table) = step.dm_table(|d| self.resolve(d)) {
            let table = table?;
            self.create(table.role, table.target.kind(), table.len, table.target.to_string())?;
            if let Step::CreatePool { device, .. } = step {
                self.check_pool(device)?;
            }
            return Ok(());
        }
        if let Some(message) = step.pool_message() {
            let missing_ok = matches!(step, Step::DeleteThinId { missing_ok: true, .. });
            return self.sys.dm_message(&self.name.dm_name(Role::Pool), &message, missing_ok);
        }
        match step {
            Step::SnapshotLive { id, of } => {
                let (root, pool) = (self.name.dm_name(Role::Thin), self.name.dm_name(Role::Pool));
                self.sys.message_suspended(&root, &pool, &format!("create_snap {id} {of}"))?;
            }
            Step::MountHost { device, fstype } => {
                self.sys.mount_ro(device, HOST_MOUNT, fstype.as_deref())?;
                self.undo.push(Undo::Unmount(HOST_MOUNT.to_string()));
            }
            Step::SetReadOnly { device } => {
                if !self.sys.set_read_only(device, true)? {
                    self.undo.push(Undo::SetWritable(device.clone()));
                }
            }
            Step::AttachLoop { file } => {
                let path = self.sys.attach_loop(file, false)?;
                self.undo.push(Undo::DetachLoop(path.clone()));
                self.loop_path = Some(path);
            }
            Step::ConnectNbd { server, seconds } => {
                let path = self.sys.nbd_connect(server, *seconds)?;
                self.undo.push(Undo::DisconnectNbd(path.clone()));
                self.nbd_path = Some(path);
            }
            Step::CreateRamPool { bytes } => {
                self.sys.mount_ram(RAM_POOL_DIR, RAM_POOL_FILE, *bytes)?;
                let unmount = Undo::Unmount(RAM_POOL_DIR.to_string());
                self.undo.push(unmount.clone());
                let path = self.sys.attach_loop(RAM_POOL_FILE, true)?;
                // The loop device holds the file: the tmpfs leaves every
                // mount table now and its memory goes with the loop device,
                // so nothing at shutdown waits on it.
                self.sys.unmount_lazy(RAM_POOL_DIR)?;
                self.undo.retain(|u| *u != unmount);
                self.undo.push(Undo::DetachLoop(path.clone()));
                self.ram_pool = Some(path);
            }
            Step::ZeroStart { role } => {
                let dev = self.resolve(&DevRef::Dm(*role))?;
                self.sys.zero_start(dev, 4096)?;
            }
            Step::WriteHeader { device, slot, header, zero_meta, .. } => {
                let fresh = if *zero_meta { Fresh::MetadataBlock } else { Fresh::No };
                self.sys.write_header(device, *slot, header, fresh)?;
            }
            other => return Err(Error::Inconsistent(format!("no effect for {other:?}"))),
        }
        Ok(())
    }

    /// Runs steps in order; stops at the first failure (without undoing:
    /// call `rollback` with the error, possibly after more phases).
    pub fn run(&mut self, steps: &[Step]) -> Result<()> {
        // A header the next boot would read as damaged is never written:
        // checked for the whole batch before any step runs.
        for step in steps {
            if let Step::WriteHeader { device, header, why, .. } = step {
                header.validate().map_err(|what| {
                    Error::Inconsistent(format!("{device}: the planned header ({why}) has {what}; nothing was written"))
                })?;
            }
        }
        for step in steps {
            let started = std::time::Instant::now();
            self.step(step)?;
            log::debug!("{} ms: {}", started.elapsed().as_millis(), render_step(self.name, step));
        }
        Ok(())
    }

    /// Undoes everything done so far, newest first, and returns the error to
    /// report: the cause, plus any undo that failed.
    pub fn rollback(&mut self, cause: Error) -> Error {
        let mut failures = Vec::new();
        while let Some(undo) = self.undo.pop() {
            let result = match &undo {
                Undo::Unmount(dir) => self.sys.unmount(dir),
                Undo::DetachLoop(path) => self.sys.detach_loop(path),
                Undo::DisconnectNbd(path) => self.sys.nbd_disconnect(path),
                Undo::RemoveDm(name) => self.sys.dm_remove(name),
                Undo::RemoveNode(name) => self.sys.remove_node(name),
                Undo::SetWritable(device) => self.sys.set_read_only(device, false).map(|_| ()),
            };
            if let Err(e) = result {
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            cause
        } else {
            Error::Rollback { cause: Box::new(cause), failures }
        }
    }

    /// Keeps everything: the setup succeeded.
    pub fn commit(mut self) {
        self.undo.clear();
    }
}

#[cfg(test)]
pub mod fake {
    use super::*;

    /// Records every call; fails the call whose record starts with `fail_on`.
    pub struct Recorder {
        pub calls: Vec<String>,
        pub fail_on: Vec<String>,
        pub next_minor: u32,
        /// What `pool_status` reports.
        pub pool_status_line: String,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Recorder {
                calls: Vec::new(),
                fail_on: Vec::new(),
                next_minor: 0,
                pool_status_line: "0 10/512 0/4000 - rw discard_passdown error_if_no_space - 1024".into(),
            }
        }
    }

    impl Recorder {
        fn record(&mut self, call: String) -> Result<()> {
            let fail = self.fail_on.iter().any(|f| call.starts_with(f.as_str()));
            self.calls.push(call.clone());
            if fail {
                return Err(Error::io("fake", call, "injected failure"));
            }
            Ok(())
        }
    }

    impl System for Recorder {
        fn mount_ro(&mut self, device: &str, dir: &str, fstype: Option<&str>) -> Result<()> {
            self.record(format!("mount {device} {dir} {fstype:?}"))
        }
        fn unmount(&mut self, dir: &str) -> Result<()> {
            self.record(format!("umount {dir}"))
        }
        fn attach_loop(&mut self, file: &str, writable: bool) -> Result<String> {
            if writable {
                self.record(format!("losetup rw {file}"))?;
                return Ok("/dev/loop1".into());
            }
            self.record(format!("losetup {file}"))?;
            Ok("/dev/loop0".into())
        }
        fn mount_ram(&mut self, dir: &str, file: &str, bytes: Bytes) -> Result<()> {
            self.record(format!("tmpfs {dir} {file} {}", bytes.0))
        }
        fn unmount_lazy(&mut self, dir: &str) -> Result<()> {
            self.record(format!("umount -l {dir}"))
        }
        fn zero_start(&mut self, dev: DevNum, bytes: usize) -> Result<()> {
            self.record(format!("zero {dev} {bytes}"))
        }
        fn detach_loop(&mut self, path: &str) -> Result<()> {
            self.record(format!("detach {path}"))
        }
        fn nbd_connect(&mut self, server: &crate::nbd::NbdServer, seconds: u64) -> Result<String> {
            self.record(format!("nbd-connect {server} {seconds}"))?;
            Ok("/dev/nbd0".into())
        }
        fn nbd_disconnect(&mut self, device: &str) -> Result<()> {
            self.record(format!("nbd-disconnect {device}"))
        }
        fn dm_reload(&mut self, spec: &DmSpec) -> Result<()> {
            self.record(format!("reload {} 0 {} {} {}", spec.name, spec.len, spec.target, spec.params))
        }
        fn dev_num(&mut self, path: &str) -> Result<DevNum> {
            Ok(match path {
                "/dev/loop0" => DevNum { major: 7, minor: 0 },
                "/dev/loop1" => DevNum { major: 7, minor: 1 },
                _ => DevNum { major: 252, minor: 32 },
            })
        }
        fn set_read_only(&mut self, device: &str, read_only: bool) -> Result<bool> {
            self.record(format!("setro {device} {read_only}"))?;
            Ok(false)
        }
        fn logical_block_size(&mut self, _device: &str) -> Result<u32> {
            Ok(512)
        }
        fn dm_info(&mut self, name: &str) -> Result<Option<DmInfo>> {
            self.record(format!("info {name}"))?;
            Ok(None)
        }
        fn dm_line(&mut self, name: &str, status: bool) -> Result<DmLine> {
            self.record(format!("{} {name}", if status { "status" } else { "table" }))?;
            Ok(DmLine { len: Sectors(1024), target: "thin-pool".into(), params: self.pool_status_line.clone() })
        }
        fn write_header(&mut self, device: &str, slot: usize, header: &PoolHeader, fresh: Fresh) -> Result<()> {
            self.record(format!("header {device} slot{slot} seq{} {fresh:?}", header.seq))
        }
        fn dm_create(&mut self, spec: &DmSpec) -> Result<DevNum> {
            self.record(format!(
                "create {} {} 0 {} {} {} private={}",
                spec.name, spec.uuid, spec.len, spec.target, spec.params, spec.private
            ))?;
            self.next_minor += 1;
            Ok(DevNum { major: 254, minor: self.next_minor - 1 })
        }
        fn dm_remove(&mut self, name: &str) -> Result<()> {
            self.record(format!("remove {name}"))
        }
        fn dm_message(&mut self, name: &str, message: &str, missing_ok: bool) -> Result<()> {
            self.record(format!("message {name} {message} missing_ok={missing_ok}"))
        }
        fn message_suspended(&mut self, device: &str, pool: &str, message: &str) -> Result<()> {
            self.record(format!("suspend {device}"))?;
            let sent = self.record(format!("message {pool} {message} missing_ok=false"));
            self.calls.push(format!("resume {device}"));
            sent
        }
        fn make_node(&mut self, name: &str, dev: DevNum) -> Result<bool> {
            self.record(format!("mknod {name} {dev}"))?;
            Ok(true)
        }
        fn resume_hibernation(&mut self, device: DevNum, offset_pages: u64) -> Result<()> {
            self.record(format!("resume {device} {offset_pages}"))
        }
        fn remove_node(&mut self, name: &str) -> Result<()> {
            self.record(format!("rmnode {name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Recorder;
    use super::*;
    use crate::cmdline::split;
    use crate::config::Config;
    use crate::header::OriginId;
    use crate::layout::BlockSize;
    use crate::plan::{plan_activation, plan_origin, plan_thins, OriginFacts};
    use crate::pool::{PoolFacts, PoolState};
    use crate::units::Bytes;

    fn steps() -> (Config, Vec<Step>) {
        let cfg = Config::from_params(&split("cowroot=/img/root.img cowroot.dev=/dev/vdb cowpool=/dev/vdc"))
            .unwrap()
            .unwrap();
        let mut steps = plan_origin(&cfg, Some("/dev/vdb"), None);
        let pool = PoolFacts {
            device: "/dev/vdc".into(),
            size: Bytes(256 << 20),
            state: PoolState::Blank,
            metadata_blank: false,
        };
        let origin = OriginFacts {
            device: DevRef::Loop,
            size: Some(Bytes(1 << 26)),
            id: Some(OriginId { size_bytes: 1 << 26, digest: [1; 32] }),
            logical_block: 512,
            file: None,
        };
        let activation = plan_activation(&pool, BlockSize::Exact(65536), [1; 16]).unwrap();
        steps.extend(activation.steps.clone());
        steps.extend(plan_thins(&cfg, &activation, 0, 512, &origin).unwrap().steps);
        (cfg, steps)
    }

    #[test]
    fn runs_steps_in_order_with_real_device_numbers() {
        let (cfg, steps) = steps();
        let mut rec = Recorder::default();
        let mut exec = Executor::new(&mut rec, &cfg.name);
        exec.run(&steps).unwrap();
        assert_eq!(exec.loop_path(), Some("/dev/loop0"));
        exec.commit();
        assert_eq!(
            rec.calls,
            [
                "setro /dev/vdb true",
                "mount /dev/vdb /run/cowroot/host None",
                "losetup /run/cowroot/host/img/root.img",
                "header /dev/vdc slot0 seq1 MetadataBlock",
                "create cowroot-pool_tmeta COWROOT-tmeta-cowroot 0 4096 linear 252:32 2048 private=true",
                &format!("create cowroot-pool_tdata COWROOT-tdata-cowroot 0 {} linear 252:32 6144 private=true", steps_data_len(&steps)),
                &format!(
                    "create cowroot-pool COWROOT-pool-cowroot 0 {} thin-pool 254:0 254:1 128 0 1 error_if_no_space private=true",
                    steps_data_len(&steps)
                ),
                "status cowroot-pool",
                "header /dev/vdc slot1 seq2 No",
                "message cowroot-pool create_thin 1 missing_ok=false",
                &format!("message cowroot-pool set_transaction_id 0 {} missing_ok=false", (0x0101_0101u64 << 16) | 1),
                "header /dev/vdc slot0 seq3 No",
                "header /dev/vdc slot1 seq4 No",
                "create cowroot COWROOT-thin-cowroot 0 131072 thin 254:2 1 7:0 private=false",
                "mknod cowroot 254:3",
            ]
        );
    }

    fn steps_data_len(steps: &[Step]) -> u64 {
        steps
            .iter()
            .find_map(|s| match s {
                Step::CreatePool { len, .. } => Some(len.0),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn failure_at_each_effect_undoes_everything_in_reverse() {
        let (cfg, steps) = steps();
        let mut clean = Recorder::default();
        Executor::new(&mut clean, &cfg.name).run(&steps).unwrap();
        for failing in clean.calls.iter().filter(|c| !c.starts_with("header")) {
            let mut rec = Recorder { fail_on: vec![failing.clone()], ..Default::default() };
            let mut exec = Executor::new(&mut rec, &cfg.name);
            let err = exec.run(&steps).unwrap_err();
            let err = exec.rollback(err);
            assert!(matches!(err, Error::Io { .. }), "{failing}: {err}");
            let at = rec.calls.iter().position(|c| c == failing).unwrap();
            let (done, undone) = rec.calls.split_at(at + 1);
            // Every successful creation is undone exactly once, newest first.
            let mut want: Vec<String> = done[..done.len() - 1]
                .iter()
                .filter_map(|c| {
                    let word = |i: usize| c.split(' ').nth(i).unwrap().to_string();
                    match c.split(' ').next().unwrap() {
                        "mount" => Some("umount /run/cowroot/host".to_string()),
                        "setro" => Some(format!("setro {} false", word(1))),
                        "losetup" => Some("detach /dev/loop0".to_string()),
                        "create" => Some(format!("remove {}", word(1))),
                        "mknod" => Some(format!("rmnode {}", word(1))),
                        _ => None,
                    }
                })
                .collect();
            want.reverse();
            assert_eq!(undone, want.as_slice(), "failing at {failing}");
        }
    }

    #[test]
    fn an_nbd_origin_is_connected_first_and_disconnected_on_failure() {
        let cfg = Config::from_params(&split("cowroot=nbd://10.0.2.2/lab cowpool=/dev/vdc")).unwrap().unwrap();
        let mut steps = plan_origin(&cfg, None, None);
        assert_eq!(steps.len(), 1, "only the connection: nbd-client makes the device read-only");
        steps.push(Step::CreateReadOnly { len: Sectors(131072), origin: crate::plan::origin_ref(&cfg.source, None) });
        let mut rec = Recorder { fail_on: vec!["create cowroot ".into()], ..Default::default() };
        let mut exec = Executor::new(&mut rec, &cfg.name);
        let err = exec.run(&steps).unwrap_err();
        assert_eq!(exec.nbd_path(), Some("/dev/nbd0"));
        let err = exec.rollback(err);
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(rec.calls.first().map(String::as_str), Some("nbd-connect nbd://10.0.2.2:10809/lab 30"));
        assert_eq!(rec.calls.last().map(String::as_str), Some("nbd-disconnect /dev/nbd0"));
    }

    #[test]
    fn a_degraded_pool_stops_before_any_message_and_is_undone() {
        let (cfg, steps) = steps();
        for line in [
            "0 10/512 0/4000 - ro discard_passdown error_if_no_space - 1024",
            "Fail",
            "Error",
            "0 10/512 0/4000 - rw discard_passdown error_if_no_space needs_check 1024",
        ] {
            let mut rec = Recorder { pool_status_line: line.into(), ..Default::default() };
            let mut exec = Executor::new(&mut rec, &cfg.name);
            let err = exec.run(&steps).unwrap_err();
            let err = exec.rollback(err);
            assert!(matches!(err, Error::PoolDegraded { .. }), "{line}: {err}");
            assert!(err.to_string().contains("cowroot format --force /dev/vdc"), "{err}");
            assert!(!rec.calls.iter().any(|c| c.starts_with("message")), "{line}");
            assert_eq!(rec.calls.last().map(String::as_str), Some("setro /dev/vdb false"));
        }
    }

    #[test]
    fn a_device_origin_is_made_read_only_and_restored_on_failure() {
        let cfg = Config::from_params(&split("cowroot=/dev/vda cowpool=/dev/vdc")).unwrap().unwrap();
        let steps = plan_origin(&cfg, None, Some("/dev/vda"));
        let mut rec = Recorder { fail_on: vec!["create".into()], ..Default::default() };
        let mut exec = Executor::new(&mut rec, &cfg.name);
        exec.run(&steps).unwrap();
        let err = exec.run(&[Step::CreateReadOnly { len: Sectors(8), origin: DevRef::Path("/dev/vda".into()) }]);
        let err = exec.rollback(err.unwrap_err());
        assert!(matches!(err, Error::Io { .. }));
        assert_eq!(
            rec.calls,
            [
                "setro /dev/vda true",
                "create cowroot COWROOT-ro-cowroot 0 8 linear 252:32 0 private=false",
                "setro /dev/vda false"
            ]
        );
    }

    #[test]
    fn a_ram_pool_is_a_writable_loop_on_tmpfs_and_undone_on_failure() {
        let cfg = Config::from_params(&split("cowroot=/dev/vda cowpool=ram")).unwrap().unwrap();
        let mut rec = Recorder { fail_on: vec!["create".into()], ..Default::default() };
        let mut exec = Executor::new(&mut rec, &cfg.name);
        exec.run(&[Step::CreateRamPool { bytes: Bytes(64 << 20) }]).unwrap();
        assert_eq!(exec.ram_pool(), Some("/dev/loop1"));
        let linear =
            Step::CreateLinear { role: Role::Meta, dev: DevRef::RamPool, offset: Sectors(2048), len: Sectors(8) };
        let err = exec.run(&[linear]).unwrap_err();
        let _ = exec.rollback(err);
        assert_eq!(
            rec.calls,
            [
                "tmpfs /run/cowroot/ram /run/cowroot/ram/pool 67108864",
                "losetup rw /run/cowroot/ram/pool",
                "umount -l /run/cowroot/ram",
                "create cowroot-pool_tmeta COWROOT-tmeta-cowroot 0 8 linear 7:1 2048 private=true",
                "detach /dev/loop1",
            ]
        );
    }

    #[test]
    fn a_failing_undo_is_reported_with_the_cause() {
        let (cfg, steps) = steps();
        let mut rec =
            Recorder { fail_on: vec!["message".into(), "remove cowroot-pool_tdata".into()], ..Default::default() };
        let mut exec = Executor::new(&mut rec, &cfg.name);
        let err = exec.run(&steps).unwrap_err();
        let err = exec.rollback(err);
        let text = err.to_string();
        assert!(text.contains("message cowroot-pool create_thin 1"), "{text}");
        assert!(text.contains("cleaning up also failed: fake remove cowroot-pool_tdata"), "{text}");
        // The rest was still undone.
        assert!(rec.calls.ends_with(&[
            "remove cowroot-pool".to_string(),
            "remove cowroot-pool_tdata".to_string(),
            "remove cowroot-pool_tmeta".to_string(),
            "detach /dev/loop0".to_string(),
            "umount /run/cowroot/host".to_string(),
            "setro /dev/vdb false".to_string(),
        ]));
    }
}
