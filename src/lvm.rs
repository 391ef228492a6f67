//! `cowpool=VG/LV`: activating one logical volume with the lvm tool when
//! the initramfs has it (the distribution's hooks activate only the root
//! LV). The tool is run directly, never through a shell.

use crate::error::{Error, Result};
use std::process::Command;

const LVM_PATHS: [&str; 3] = ["/usr/sbin/lvm", "/sbin/lvm", "/usr/bin/lvm"];

/// The device-mapper name LVM gives VG/LV: dashes doubled, joined by one.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

pub fn mapper_path(vg: &str, lv: &str) -> String {
    format!("/dev/mapper/{}", dm_name(vg, lv))
}

/// Activates VG/LV (a no-op when it is active already). Without the lvm
/// tool this does nothing: the caller then waits for someone else to.
pub fn activate(vg: &str, lv: &str) -> Result<()> {
    let Some(lvm) = crate::probe::installed(&LVM_PATHS) else {
        log::debug!("no lvm tool in this initramfs; waiting for {vg}/{lv} to appear");
        return Ok(());
    };
    let target = format!("{vg}/{lv}");
    let output = Command::new(lvm)
        .args(["lvchange", "--activate", "y", "--sysinit", &target])
        .output()
        .map_err(|e| Error::io("run", lvm, e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
        return Err(Error::config("cowpool", format!("activating the LVM volume {target} failed: {first}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_dm_names_double_dashes() {
        assert_eq!(dm_name("vg0", "thin"), "vg0-thin");
        assert_eq!(dm_name("my-vg", "cow-pool"), "my--vg-cow--pool");
        assert_eq!(mapper_path("vg", "lv"), "/dev/mapper/vg-lv");
    }
}
