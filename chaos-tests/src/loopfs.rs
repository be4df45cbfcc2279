//! A small ext4 file system on a loop device, for power-loss and disk-full
//! scenarios. Needs root: [`LoopFs::create`] fails with a clear message
//! otherwise (the tests then fail rather than pass silently). The guard
//! unmounts and detaches the device on drop, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted ext4 image on a loop device.
#[derive(Debug)]
pub struct LoopFs {
    dir: tempfile::TempDir,
    image: PathBuf,
    mount: PathBuf,
    device: Option<String>,
    mounted: bool,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("run {program}: {e} (is it installed?)"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl LoopFs {
    /// Creates a `size_mib` MiB ext4 image, attaches it to a free loop device
    /// and mounts it. Errors name what is missing (root, loop devices, tools).
    pub fn create(size_mib: u64) -> Result<LoopFs, String> {
        if !crate::sys::is_root() {
            return Err("this scenario needs root (loop devices and mount); \
                        CI runs as root: run the chaos tests as root"
                .into());
        }
        let dir = tempfile::Builder::new()
            .prefix("chaos-loopfs")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mount point: {e}"))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("image: {e}"))?;
        file.set_len(size_mib << 20)
            .map_err(|e| format!("size the image: {e}"))?;
        drop(file);
        let image_text = image.to_string_lossy().into_owned();
        // No lazy initialisation: the kernel thread that zeroes inode tables
        // would write behind the test's back.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                "-m",
                "0",
                &image_text,
            ],
        )?;
        let mut fs = LoopFs {
            dir,
            image,
            mount,
            device: None,
            mounted: false,
        };
        let device = run("losetup", &["--find", "--show", &image_text])
            .map_err(|e| format!("no loop device available: {e}"))?;
        fs.device = Some(device);
        fs.mount()?;
        Ok(fs)
    }

    /// Like [`LoopFs::create`], but panics with the reason: the scenario
    /// cannot run, and a test that cannot run must not pass.
    pub fn require(size_mib: u64) -> LoopFs {
        LoopFs::create(size_mib)
            .unwrap_or_else(|reason| panic!("cannot run this chaos scenario: {reason}"))
    }

    fn mount(&mut self) -> Result<(), String> {
        let device = self.device.clone().ok_or("no loop device")?;
        run(
            "mount",
            &["-t", "ext4", &device, &self.mount.to_string_lossy()],
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The backing image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Cuts the power: the ext4 shutdown ioctl without flushing the journal
    /// or dirty data. Everything not yet on the device is lost; later I/O fails.
    pub fn power_cut(&self) -> std::io::Result<()> {
        crate::sys::ext4_shutdown(&self.mount)
    }

    /// Unmounts and mounts again (the journal is replayed), as after a reboot.
    pub fn remount(&mut self) -> Result<(), String> {
        self.unmount()?;
        self.mount()
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            run("umount", &[&self.mount.to_string_lossy()])?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.unmount().is_err() {
            // Something still holds it (a server that is being killed):
            // detach lazily rather than leak the mount.
            let _ = run("umount", &["-l", &self.mount.to_string_lossy()]);
        }
        if let Some(device) = self.device.take() {
            let _ = run("losetup", &["-d", &device]);
        }
        let _ = &self.dir;
    }
}
