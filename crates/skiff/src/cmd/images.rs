//! `skiff images import|ls|rm`: the images of the local node's runtime
//! (the agent's containerd, found through `--data-dir` as for the server,
//! or `--container-runtime-endpoint`), as `k3s ctr images` / `crictl images`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use skiff_kubelet::runtime::{Image, Runtime};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Args)]
struct Where {
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// CRI socket to use instead of the agent's own containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum What {
    /// Import image tarballs (docker-archive or OCI) into the node's runtime.
    Import {
        files: Vec<PathBuf>,
        #[command(flatten)]
        at: Where,
    },
    /// List the node's images.
    #[command(alias = "list")]
    Ls {
        /// Only print image references.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Remove images by reference or ID.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        at: Where,
    },
}

fn agent_config(at: Where) -> skiff_kubelet::Config {
    let data_dir = at.data_dir.unwrap_or_else(super::default_data_dir);
    super::agent::config(data_dir, None, at.container_runtime_endpoint)
}

fn connect(config: &skiff_kubelet::Config) -> anyhow::Result<Arc<dyn Runtime>> {
    let socket = config.runtime_socket();
    if !socket.exists() {
        anyhow::bail!(
            "no container runtime at {}: is the skiff agent running with this --data-dir?",
            socket.display()
        );
    }
    Ok(Arc::new(skiff_kubelet::cri::CriRuntime::new(&socket)?))
}

/// `crictl images`-style rows: one per tag (or one `<none>` row).
pub fn image_rows(images: &[Image]) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for i in images {
        let id =
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(13)
                .collect::<String>();
        let size = human_size(i.size);
        if i.repo_tags.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split('@').next())
                .unwrap_or("<none>")
                .to_string();
            rows.push([repo, "<none>".into(), id, size]);
            continue;
        }
        for t in &i.repo_tags {
            let (repo, tag) = split_tag(t);
            rows.push([repo.to_string(), tag.to_string(), id.clone(), size.clone()]);
        }
    }
    rows.sort();
    rows
}

/// `registry:5000/a/b:tag` → (`registry:5000/a/b`, `tag`).
fn split_tag(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.what {
            What::Import { files, at } => {
                let config = agent_config(at);
                for f in &files {
                    skiff_kubelet::import_image(&config, f)
                        .await
                        .with_context(|| format!("importing {}", f.display()))?;
                    println!("imported {}", f.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            What::Ls { quiet, at } => {
                let rt = connect(&agent_config(at))?;
                let images = rt.list_images().await.context("listing images")?;
                let rows = image_rows(&images);
                if quiet {
                    for r in rows {
                        println!("{}:{}", r[0], r[1]);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let width = |i: usize, head: &str| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([head.len()])
                        .max()
                        .unwrap_or(0)
                };
                let (w0, w1, w2) = (width(0, "IMAGE"), width(1, "TAG"), width(2, "IMAGE ID"));
                println!(
                    "{:w0$}   {:w1$}   {:w2$}   SIZE",
                    "IMAGE", "TAG", "IMAGE ID"
                );
                for r in rows {
                    println!("{:w0$}   {:w1$}   {:w2$}   {}", r[0], r[1], r[2], r[3]);
                }
                Ok(ExitCode::SUCCESS)
            }
            What::Rm { images, at } => {
                let rt = connect(&agent_config(at))?;
                let mut failed = false;
                for image in &images {
                    match rt
                        .image_status(image)
                        .await
                        .context("looking up the image")?
                    {
                        None => {
                            eprintln!("error: no such image: {image}");
                            failed = true;
                        }
                        Some(found) => {
                            rt.remove_image(&found.id)
                                .await
                                .with_context(|| format!("removing {image}"))?;
                            println!("Deleted: {image}");
                        }
                    }
                }
                Ok(if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_tag("registry:5000/a/b:v1"),
            ("registry:5000/a/b", "v1")
        );
        assert_eq!(
            split_tag("registry:5000/a/b"),
            ("registry:5000/a/b", "latest")
        );
    }

    #[test]
    fn rows_one_per_tag_and_sizes_like_crictl() {
        let images = vec![
            Image {
                id: "sha256:0123456789abcdef".into(),
                repo_tags: vec!["b:1".into(), "a:2".into()],
                repo_digests: vec![],
                size: 1_234_567,
                ..Default::default()
            },
            Image {
                id: "sha256:fedcba".into(),
                repo_tags: vec![],
                repo_digests: vec!["c@sha256:x".into()],
                size: 999,
                ..Default::default()
            },
        ];
        let rows = image_rows(&images);
        assert_eq!(
            rows[0],
            [
                "a".to_string(),
                "2".into(),
                "0123456789abc".into(),
                "1.235MB".into()
            ]
        );
        assert_eq!(rows[1][0], "b");
        assert_eq!(
            rows[2],
            [
                "c".to_string(),
                "<none>".into(),
                "fedcba".into(),
                "999B".into()
            ]
        );
    }
}
