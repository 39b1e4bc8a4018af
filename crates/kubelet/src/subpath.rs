//! Making a subPath's directory inside its volume without following a
//! symlink out of it (↔ pkg/volume/util/subpath's doSafeMakeDir): the
//! part that exists is resolved and checked to lie inside the volume
//! before anything is created, then walked from the volume's root one
//! component at a time with openat(O_NOFOLLOW), and the missing
//! components are made with mkdirat under the directory just opened, so
//! that a component swapped for a symlink meanwhile fails the walk
//! instead of redirecting it. Then the subPath is opened the same way
//! and bind-mounted through its descriptor (↔ PrepareSafeSubpath), so a
//! sibling container swapping a component for a symlink between the
//! check and the runtime's mount changes nothing.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_child(parent: &OwnedFd, name: &Path, shown: &Path) -> Result<OwnedFd, String> {
    rustix::fs::openat(parent, name, dir_flags(), Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => {
            format!("{} is a symlink or not a directory", shown.display())
        }
        e => format!("opening {}: {e}", shown.display()),
    })
}

/// Make directory `sub` (relative, without `..`) under `root` with
/// `mode`, creating what is missing; refuses, before creating anything,
/// when the existing part of the path resolves outside `root`.
pub fn safe_make_dir(root: &Path, sub: &Path, mode: u32) -> Result<(), String> {
    let parts: Vec<&Path> = sub
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(Path::new(p)),
            _ => None,
        })
        .collect();
    if sub.is_absolute() || sub.components().any(|c| c == Component::ParentDir) || parts.is_empty()
    {
        return Err(format!("invalid subpath {}", sub.display()));
    }
    let real_root =
        std::fs::canonicalize(root).map_err(|e| format!("resolving {}: {e}", root.display()))?;
    // The longest prefix that exists (as anything, a symlink included).
    let mut existing = parts.len();
    for i in 0..parts.len() {
        let p: PathBuf = parts[..=i]
            .iter()
            .fold(root.to_path_buf(), |acc, c| acc.join(c));
        if std::fs::symlink_metadata(&p).is_err() {
            existing = i;
            break;
        }
    }
    let prefix: PathBuf = parts[..existing]
        .iter()
        .fold(root.to_path_buf(), |acc, c| acc.join(c));
    let real_prefix = std::fs::canonicalize(&prefix)
        .map_err(|e| format!("resolving {}: {e}", prefix.display()))?;
    let Ok(inside) = real_prefix.strip_prefix(&real_root) else {
        return Err(format!(
            "{} resolves to {}, outside the volume {}",
            prefix.display(),
            real_prefix.display(),
            real_root.display()
        ));
    };
    let mut fd = rustix::fs::open(&real_root, dir_flags(), Mode::empty())
        .map_err(|e| format!("opening {}: {e}", real_root.display()))?;
    let mut shown = real_root.clone();
    for c in inside.components() {
        shown.push(c);
        fd = open_child(&fd, Path::new(c.as_os_str()), &shown)?;
    }
    let mode = Mode::from_raw_mode(mode & 0o7777);
    for c in &parts[existing..] {
        shown.push(c);
        let created = match rustix::fs::mkdirat(&fd, *c, mode) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(format!("creating {}: {e}", shown.display())),
        };
        let child = open_child(&fd, c, &shown)?;
        if created {
            // Not the umask's: the volume's own mode, as the kubelet sets it.
            rustix::fs::fchmod(&child, mode)
                .map_err(|e| format!("setting the mode of {}: {e}", shown.display()))?;
        }
        fd = child;
    }
    Ok(())
}

/// Open `sub` (relative, without `..`) under `root` without following a
/// symlink out of it (↔ doSafeOpen): the path is resolved, checked to lie
/// inside the volume, and walked from the volume's root with
/// openat(O_PATH|O_NOFOLLOW), so the descriptor is what was checked even
/// if a component is swapped afterwards. Also says whether it is a
/// directory.
pub fn safe_open(root: &Path, sub: &Path) -> Result<(OwnedFd, bool), String> {
    let real_root =
        std::fs::canonicalize(root).map_err(|e| format!("resolving {}: {e}", root.display()))?;
    let path = root.join(sub);
    let real =
        std::fs::canonicalize(&path).map_err(|e| format!("resolving {}: {e}", path.display()))?;
    let Ok(inside) = real.strip_prefix(&real_root) else {
        return Err(format!(
            "{} resolves to {}, outside the volume {}",
            path.display(),
            real.display(),
            real_root.display()
        ));
    };
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(&real_root, flags | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| format!("opening {}: {e}", real_root.display()))?;
    let mut shown = real_root.clone();
    for c in inside.components() {
        shown.push(c);
        fd = rustix::fs::openat(&fd, c.as_os_str(), flags, Mode::empty())
            .map_err(|e| format!("opening {}: {e}", shown.display()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", shown.display()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            return Err(format!("{} became a symlink", shown.display()));
        }
    }
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", shown.display()))?;
    let dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    Ok((fd, dir))
}

/// Bind what `sub` of the volume at `root` is now onto `target` (↔
/// PrepareSafeSubpath): opened with [`safe_open`] and mounted through
/// `/proc/<pid>/fd/<n>`, so the container gets what was checked, not
/// whatever the path names when the runtime mounts it. A target already
/// mounted (a restarted container) is reused.
pub fn prepare(
    mounter: &dyn crate::mount::Mounter,
    root: &Path,
    sub: &Path,
    target: &Path,
) -> Result<PathBuf, String> {
    if mounter.is_mount_point(target) {
        return Ok(target.to_path_buf());
    }
    let (fd, dir) = safe_open(root, sub)?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let made = if dir {
        std::fs::create_dir(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map(|_| ())
    };
    if let Err(e) = made
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("creating {}: {e}", target.display()));
    }
    use std::os::fd::AsRawFd;
    let source = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ));
    mounter
        .bind_mount(&source, target)
        .map_err(|e| e.to_string())?;
    drop(fd);
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn makes_nested_directories_with_the_volumes_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        safe_make_dir(&root, Path::new("a/b/c"), 0o777).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            let m = std::fs::metadata(root.join(p)).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o7777, 0o777, "{p}");
        }
        // Existing directories are left as they are.
        safe_make_dir(&root, Path::new("a/b/d"), 0o750).unwrap();
        assert_eq!(
            std::fs::metadata(root.join("a/b/d"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o750
        );
    }

    #[test]
    fn never_creates_through_a_symlink_out_of_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        let outside = dir.path().join("etc");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        let err = safe_make_dir(&root, Path::new("a/x.service.d"), 0o777).unwrap_err();
        assert!(err.contains("outside the volume"), "{err}");
        assert!(!outside.join("x.service.d").exists());
        // Deeper: a directory inside, then the link.
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/l")).unwrap();
        assert!(safe_make_dir(&root, Path::new("d/l/y/z"), 0o777).is_err());
        assert!(!outside.join("y").exists());
        // A relative link that climbs out.
        std::os::unix::fs::symlink("../etc", root.join("up")).unwrap();
        assert!(safe_make_dir(&root, Path::new("up/w"), 0o777).is_err());
        assert!(!outside.join("w").exists());
    }

    #[test]
    fn symlinks_that_stay_inside_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        safe_make_dir(&root, Path::new("link/new"), 0o755).unwrap();
        assert!(root.join("real/new").is_dir());
    }

    #[test]
    fn subpaths_are_bound_from_what_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("data/logs")).unwrap();
        std::fs::write(root.join("data/f"), "x").unwrap();
        std::os::unix::fs::symlink("data/f", root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        let m = crate::mount::FakeMounter::default();
        let targets = dir.path().join("pod/volume-subpaths/vol/app");
        let t0 = prepare(&m, &root, Path::new("data/logs"), &targets.join("0")).unwrap();
        let t1 = prepare(&m, &root, Path::new("link"), &targets.join("1")).unwrap();
        assert!(t0.is_dir() && t1.is_file());
        let real = |p: &str| std::fs::canonicalize(root.join(p)).unwrap();
        let binds = m.binds.lock().unwrap().clone();
        assert_eq!(binds.get(&t0), Some(&real("data/logs")));
        assert_eq!(binds.get(&t1), Some(&real("data/f")));
        // A restarted container reuses the mount.
        prepare(&m, &root, Path::new("data/logs"), &t0).unwrap();
        assert_eq!(
            m.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.starts_with("bind"))
                .count(),
            2
        );
        // Out of the volume: nothing is bound.
        assert!(prepare(&m, &root, Path::new("out"), &targets.join("2")).is_err());
        assert!(!m.is_mounted(&targets.join("2")));
    }

    #[test]
    fn a_file_on_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("f"), "x").unwrap();
        assert!(safe_make_dir(&root, Path::new("f/g"), 0o777).is_err());
        assert!(safe_make_dir(&root, Path::new("../g"), 0o777).is_err());
        assert!(safe_make_dir(&root, Path::new("/g"), 0o777).is_err());
    }
}
