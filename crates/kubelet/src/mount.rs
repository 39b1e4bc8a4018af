//! OS mounts the volume code needs (↔ k8s.io/mount-utils): tmpfs for
//! memory-backed volumes, unmounting, and mount-point checks. Behind a
//! trait so that the volume logic is tested without root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount failed: {command}: {message}")]
    Command { command: String, message: String },
}

/// Mounts and unmounts.
pub trait Mounter: Send + Sync + std::fmt::Debug {
    /// Mount a tmpfs on `target` (an existing directory); `size` in bytes when limited.
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), MountError>;
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    /// Bind-mount `source` on `target` (an existing file or directory)
    /// without resolving `source` first: a subPath is bound through
    /// `/proc/<pid>/fd/<n>` of a safely opened descriptor.
    fn bind_mount(&self, source: &Path, target: &Path) -> Result<(), MountError>;
    /// Whether something is mounted on `path`.
    fn is_mount_point(&self, path: &Path) -> bool;
    /// The mount points at or under `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
}

/// Runs mount(8) and umount(8), and reads /proc/self/mountinfo.
#[derive(Debug, Default)]
pub struct SystemMounter;

fn run(program: &str, args: &[&str]) -> Result<(), MountError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| MountError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MountError::Command {
            command,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Mount points from /proc/self/mountinfo (field 5, with octal escapes).
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SystemMounter {
    fn mount_points() -> Vec<PathBuf> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default()
    }
}

impl Mounter for SystemMounter {
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), MountError> {
        let target = target.display().to_string();
        match size {
            Some(s) => run(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={s}"), "tmpfs", &target],
            ),
            None => run("mount", &["-t", "tmpfs", "tmpfs", &target]),
        }
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        run("umount", &[&target.display().to_string()])
    }

    fn bind_mount(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        run(
            "mount",
            &[
                "--no-canonicalize",
                "--bind",
                &source.display().to_string(),
                &target.display().to_string(),
            ],
        )
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Self::mount_points().contains(&path)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&dir))
            .collect()
    }
}

/// Records mounts without mounting (tests).
#[derive(Debug, Default)]
pub struct FakeMounter {
    pub mounted: Mutex<BTreeSet<PathBuf>>,
    /// Every call, in order ("tmpfs <path>", "umount <path>", "bind <source> <target>").
    pub calls: Mutex<Vec<String>>,
    /// Bind mounts: target → what the source named when it was bound
    /// (a `/proc/<pid>/fd/<n>` link resolved).
    pub binds: Mutex<std::collections::BTreeMap<PathBuf, PathBuf>>,
}

impl FakeMounter {
    pub fn is_mounted(&self, path: &Path) -> bool {
        Self::lock(&self.mounted).contains(path)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, _size: Option<u64>) -> Result<(), MountError> {
        Self::lock(&self.calls).push(format!("tmpfs {}", target.display()));
        // A fresh tmpfs' root is 1777, as mount(8) leaves it without mode=.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o1777));
        Self::lock(&self.mounted).insert(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        Self::lock(&self.calls).push(format!("umount {}", target.display()));
        Self::lock(&self.mounted).remove(target);
        Self::lock(&self.binds).remove(target);
        Ok(())
    }

    fn bind_mount(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        let resolved = std::fs::read_link(source).unwrap_or_else(|_| source.to_path_buf());
        Self::lock(&self.calls).push(format!("bind {} {}", resolved.display(), target.display()));
        Self::lock(&self.mounted).insert(target.to_path_buf());
        Self::lock(&self.binds).insert(target.to_path_buf(), resolved);
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        Self::lock(&self.mounted).contains(path)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        Self::lock(&self.mounted)
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /var/lib/skiff/pods/u/volumes/kubernetes.io~empty-dir/a\\040b rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/var/lib/skiff/pods/u/volumes/kubernetes.io~empty-dir/a b")
            ]
        );
    }

    #[test]
    fn fake_mounter_records() {
        let f = FakeMounter::default();
        f.mount_tmpfs(Path::new("/x/y"), None).unwrap();
        assert!(f.is_mount_point(Path::new("/x/y")));
        assert_eq!(f.mounts_under(Path::new("/x")), vec![PathBuf::from("/x/y")]);
        f.unmount(Path::new("/x/y")).unwrap();
        assert!(!f.is_mount_point(Path::new("/x/y")));
    }
}
