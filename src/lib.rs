//! cowroot: copy-on-write root filesystems at the block layer.
//!
//! Data flows one way: [`cmdline`] (and [`settings`]: the configuration
//! file, dracut's cmdline.d) → [`config`] → probe → [`plan`] →
//! execute → report. Everything up to the plan is pure and unit-tested; the
//! effects live behind the [`exec::System`] trait.

pub mod attach;
pub mod blkid;
pub mod boot;
pub mod checkpoint;
pub mod checkpoint_plan;
pub mod cmdline;
pub mod commit;
pub mod config;
pub mod crypt;
pub mod error;
pub mod exec;
pub mod fingerprint;
pub mod format;
#[cfg(test)]
mod fuzz;
pub mod grow;
pub mod grub;
pub mod header;
pub mod hydrate;
pub mod inspect;
pub mod klog;
pub mod layout;
pub mod lvm;
pub mod names;
pub mod nbd;
pub mod plan;
pub mod pool;
pub mod probe;
pub mod render;
pub mod resume;
pub mod rootarg;
pub mod settings;
pub mod shutdown;
pub mod signature;
pub mod status;
pub mod sys;
pub mod table;
pub mod udev;
pub mod units;
pub mod volume;
pub mod volume_setup;
