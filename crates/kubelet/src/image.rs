//! Docker-archive image tarballs (as `docker save` writes them), built
//! here because no registry is reachable: the pause image is busybox
//! sleeping forever.

use std::io;

use serde_json::json;
use sha2::{Digest, Sha256};

/// One file of an image's single layer.
pub struct File<'a> {
    /// Relative path inside the image ("bin/busybox").
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// Fixed mtime so that the same input gives the same digests.
const MTIME: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    Ok(h)
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A docker-archive tarball of one layer holding `dirs` and `files`,
/// tagged `tag`, whose process is `entrypoint` + `cmd`.
pub fn docker_archive(
    tag: &str,
    dirs: &[&str],
    files: &[File<'_>],
    entrypoint: &[&str],
    cmd: &[&str],
) -> io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for d in dirs {
        let mode = if *d == "tmp" { 0o1777 } else { 0o755 };
        layer.append(
            &header(&format!("{d}/"), tar::EntryType::Directory, mode, 0)?,
            io::empty(),
        )?;
    }
    for f in files {
        layer.append(
            &header(f.path, tar::EntryType::Regular, f.mode, f.data.len() as u64)?,
            f.data,
        )?;
    }
    let layer = layer.into_inner()?;
    let layer_sha = sha256_hex(&layer);
    let config = json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "skiff"}],
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_sha = sha256_hex(&config);
    let manifest = json!([{"Config": format!("{config_sha}.json"), "RepoTags": [tag], "Layers": [format!("{layer_sha}/layer.tar")]}]);
    let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;

    let mut out = tar::Builder::new(Vec::new());
    out.append(
        &header(
            &format!("{layer_sha}/"),
            tar::EntryType::Directory,
            0o755,
            0,
        )?,
        io::empty(),
    )?;
    out.append(
        &header(
            &format!("{layer_sha}/layer.tar"),
            tar::EntryType::Regular,
            0o644,
            layer.len() as u64,
        )?,
        layer.as_slice(),
    )?;
    out.append(
        &header(
            &format!("{config_sha}.json"),
            tar::EntryType::Regular,
            0o644,
            config.len() as u64,
        )?,
        config.as_slice(),
    )?;
    out.append(
        &header(
            "manifest.json",
            tar::EntryType::Regular,
            0o644,
            manifest.len() as u64,
        )?,
        manifest.as_slice(),
    )?;
    out.into_inner()
}

/// GOARCH of this machine, as image configs name it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The pause image: a static busybox whose `sleep` never returns.
pub fn pause_image(tag: &str, busybox: &[u8]) -> io::Result<Vec<u8>> {
    docker_archive(
        tag,
        &["bin", "dev", "etc", "proc", "sys", "tmp"],
        &[File {
            path: "bin/busybox",
            mode: 0o755,
            data: busybox,
        }],
        &["/bin/busybox", "sleep"],
        &["infinity"],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_layout() {
        let tar = pause_image("localhost/skiff/pause:1", b"\x7fELF-not-really").unwrap();
        let again = pause_image("localhost/skiff/pause:1", b"\x7fELF-not-really").unwrap();
        assert_eq!(tar, again, "reproducible");
        let mut a = tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        let mut manifest = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "manifest.json" {
                e.read_to_end(&mut manifest).unwrap();
            }
            names.push(name);
        }
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m[0]["RepoTags"][0], "localhost/skiff/pause:1");
        let layer = m[0]["Layers"][0].as_str().unwrap();
        assert!(names.iter().any(|n| n == layer), "{names:?}");
        assert!(names.iter().any(|n| n == m[0]["Config"].as_str().unwrap()));
    }
}
