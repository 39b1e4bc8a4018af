//! Container logs (↔ the kubelet's pkg/kubelet/kuberuntime/logs): reading
//! the CRI log files containerd writes (`<RFC3339Nano> stdout|stderr F|P
//! <text>` per line) with tail, since, timestamps and a byte limit, and
//! following a file until its container exits, across log rotation (a
//! new file at the path: the old one is read to its end, then the new
//! one from its start, as the kubelet's follow reopens on rotation).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// How often a followed log file is checked for growth.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The timestamp as written.
    pub timestamp: &'a str,
    pub stream: Stream,
    /// A partial line (`P`): the text continues in the next line.
    pub partial: bool,
    pub content: &'a [u8],
}

impl LogLine<'_> {
    pub fn time(&self) -> Option<jiff::Timestamp> {
        self.timestamp.parse().ok()
    }
}

/// Parse one CRI log line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    // The tag is `F` or `P`, possibly followed by `:`-separated extra tags.
    let partial = tag.split(|b| *b == b':').next()? == b"P";
    let content = parts.next().unwrap_or_default();
    Some(LogLine {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// What to read (↔ v1.PodLogOptions as the kubelet receives them).
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Only the last N lines (of the file).
    pub tail_lines: Option<u64>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Only lines at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Keep reading until the container exits.
    pub follow: bool,
}

/// Turns CRI log lines into what the client sees.
#[derive(Debug)]
pub struct Formatter {
    opts: LogOptions,
    written: u64,
}

impl Formatter {
    pub fn new(opts: LogOptions) -> Formatter {
        Formatter { opts, written: 0 }
    }

    /// Whether the byte limit has been reached.
    pub fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Append the client's view of `line` (a raw file line without its
    /// newline) to `out`. Lines that do not parse are skipped.
    pub fn push(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let Some(l) = parse_line(line) else { return };
        if let Some(since) = self.opts.since
            && l.time().is_some_and(|t| t < since)
        {
            return;
        }
        let start = out.len();
        if self.opts.timestamps {
            out.extend_from_slice(l.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.content);
        if !l.partial {
            out.push(b'\n');
        }
        let mut n = (out.len() - start) as u64;
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written);
            if n > room {
                out.truncate(start + room as usize);
                n = room;
            }
        }
        self.written += n;
    }
}

/// The offset in `file` at which its last `n` lines start (a trailing
/// newline ends the last line; it does not start an empty one).
pub fn tail_offset<F: Read + Seek>(file: &mut F, n: u64) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    const BLOCK: u64 = 8192;
    let mut pos = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut first = true;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let size = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..size])?;
        for i in (0..size).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            if first && start + i as u64 == len - 1 {
                // The newline ending the last line.
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(start + i as u64 + 1);
            }
        }
        first = false;
        pos = start;
    }
    Ok(0)
}

/// The attempts whose log files exist for `container` under a pod's log
/// directory (`<dir>/<container>/<attempt>.log`), ascending.
pub fn attempts(pod_log_dir: &Path, container: &str) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(pod_log_dir.join(container))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

pub fn log_file(pod_log_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{attempt}.log"))
}

/// Whether the file at `path` is no longer `file` (log rotation renamed
/// it and the runtime reopened a new one). A missing path is not: the
/// runtime has not reopened it yet and still writes to `file`.
async fn replaced(file: &tokio::fs::File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().await?;
    match tokio::fs::metadata(path).await {
        Ok(now) => Ok((now.dev(), now.ino()) != (open.dev(), open.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Send the log at `path` to `tx` as `opts` asks. When following, keeps
/// reading as the file grows until `running` says the container stopped
/// (then reads what is left) or the receiver goes away; when the file is
/// rotated meanwhile, what is left of it is read and then the new file.
pub async fn stream_log(
    path: &Path,
    opts: LogOptions,
    tx: mpsc::Sender<Bytes>,
    mut running: impl FnMut() -> BoxFuture<'static, bool>,
) -> std::io::Result<()> {
    let start = match opts.tail_lines {
        Some(n) => {
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
                let mut f = std::fs::File::open(&p)?;
                tail_offset(&mut f, n)
            })
            .await
            .map_err(std::io::Error::other)??
        }
        None => 0,
    };
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(start)).await?;
    let follow = opts.follow;
    let mut fmt = Formatter::new(opts);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let mut last_round = false;
    // The file was rotated away: read to its end, then open the new one.
    let mut rotated = false;
    loop {
        let n = file.read(&mut chunk).await?;
        if n > 0 {
            pending.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut consumed = 0;
            while let Some(i) = pending[consumed..].iter().position(|b| *b == b'\n') {
                fmt.push(&pending[consumed..consumed + i], &mut out);
                consumed += i + 1;
            }
            pending.drain(..consumed);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return Ok(());
            }
            if fmt.done() {
                return Ok(());
            }
            continue;
        }
        // End of file.
        if !follow || last_round || tx.is_closed() {
            return Ok(());
        }
        if rotated {
            file = tokio::fs::File::open(path).await?;
            rotated = false;
            continue;
        }
        if replaced(&file, path).await? {
            // One more read of the old file for what was written to it
            // before the runtime reopened the log.
            rotated = true;
            continue;
        }
        if !running().await {
            // Read what the container wrote before it stopped, then end.
            last_round = true;
            continue;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const LOG: &str = "2024-01-01T00:00:01.000000001Z stdout F one\n\
2024-01-01T00:00:02Z stderr F two\n\
2024-01-01T00:00:03.5+00:00 stdout P thr\n\
2024-01-01T00:00:03.6Z stdout F ee\n\
2024-01-01T00:00:04Z stdout F \n";

    fn format_all(text: &str, opts: LogOptions) -> String {
        let mut f = Formatter::new(opts);
        let mut out = Vec::new();
        for l in text.lines() {
            f.push(l.as_bytes(), &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_cri_lines() {
        let l = parse_line(b"2024-01-01T00:00:01.000000001Z stderr F hello world").unwrap();
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert_eq!(l.content, b"hello world");
        assert_eq!(l.time().unwrap().subsec_nanosecond(), 1);
        let p = parse_line(b"2024-01-01T00:00:01Z stdout P part").unwrap();
        assert!(p.partial);
        assert_eq!(
            parse_line(b"2024-01-01T00:00:01Z stdout F")
                .unwrap()
                .content,
            b""
        );
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024-01-01T00:00:01Z stdin F x").is_none());
    }

    #[test]
    fn formats_lines_partials_and_timestamps() {
        assert_eq!(
            format_all(LOG, LogOptions::default()),
            "one\ntwo\nthree\n\n"
        );
        let ts = format_all(
            LOG,
            LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        assert!(
            ts.starts_with("2024-01-01T00:00:01.000000001Z one\n2024-01-01T00:00:02Z two\n"),
            "{ts}"
        );
    }

    #[test]
    fn since_and_limit() {
        let since = "2024-01-01T00:00:02Z".parse().unwrap();
        assert_eq!(
            format_all(
                LOG,
                LogOptions {
                    since: Some(since),
                    ..Default::default()
                }
            ),
            "two\nthree\n\n"
        );
        assert_eq!(
            format_all(
                LOG,
                LogOptions {
                    limit_bytes: Some(6),
                    ..Default::default()
                }
            ),
            "one\ntw"
        );
        assert_eq!(
            format_all(
                LOG,
                LogOptions {
                    limit_bytes: Some(4),
                    ..Default::default()
                }
            ),
            "one\n"
        );
    }

    #[test]
    fn tail_offsets() {
        let text = b"a\nbb\nccc\n";
        let mut c = Cursor::new(text.to_vec());
        assert_eq!(tail_offset(&mut c, 1).unwrap(), 5);
        assert_eq!(tail_offset(&mut c, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut c, 3).unwrap(), 0);
        assert_eq!(tail_offset(&mut c, 10).unwrap(), 0);
        assert_eq!(tail_offset(&mut c, 0).unwrap(), 9);
        // Without a final newline the unfinished line counts.
        let mut c = Cursor::new(b"a\nbb".to_vec());
        assert_eq!(tail_offset(&mut c, 1).unwrap(), 2);
        // Across blocks.
        let big: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut c = Cursor::new(big.clone());
        let off = tail_offset(&mut c, 3000).unwrap() as usize;
        assert!(big[off..].starts_with(b"line 2000\n"));
    }

    #[test]
    fn lists_attempts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        for a in [2, 0, 10] {
            std::fs::write(log_file(dir.path(), "app", a), "").unwrap();
        }
        std::fs::write(dir.path().join("app/other.txt"), "").unwrap();
        assert_eq!(attempts(dir.path(), "app"), vec![0, 2, 10]);
        assert!(attempts(dir.path(), "missing").is_empty());
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut s = Vec::new();
        while let Some(b) = rx.recv().await {
            s.extend_from_slice(&b);
        }
        String::from_utf8(s).unwrap()
    }

    #[tokio::test]
    async fn reads_with_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let opts = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let task =
            tokio::spawn(
                async move { stream_log(&path, opts, tx, || Box::pin(async { true })).await },
            );
        assert_eq!(collect(rx).await, "ee\n\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn follows_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-01-01T00:00:01Z stdout F first\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let r = running.clone();
        let p = path.clone();
        let task = tokio::spawn(async move {
            stream_log(&p, opts, tx, move || {
                let r = r.clone();
                Box::pin(async move { r.load(Ordering::SeqCst) })
            })
            .await
        });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("first\n"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2024-01-01T00:00:02Z stdout F second\n")
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("second\n"));
        // Written just before the container stopped: still delivered.
        f.write_all(b"2024-01-01T00:00:03Z stdout F last\n")
            .unwrap();
        running.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "last\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn follows_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-01-01T00:00:01Z stdout F first\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let r = running.clone();
        let p = path.clone();
        let task = tokio::spawn(async move {
            stream_log(&p, opts, tx, move || {
                let r = r.clone();
                Box::pin(async move { r.load(Ordering::SeqCst) })
            })
            .await
        });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("first\n"));
        // Rotated: renamed; the runtime still writes to it until it reopens.
        let rotated = dir.path().join("0.log.20240101-000002");
        std::fs::rename(&path, &rotated).unwrap();
        tokio::time::sleep(FOLLOW_POLL * 3).await;
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&rotated)
            .unwrap();
        old.write_all(b"2024-01-01T00:00:02Z stdout F second\n")
            .unwrap();
        // Reopened: a new file at the path.
        std::fs::write(&path, "2024-01-01T00:00:03Z stdout F third\n").unwrap();
        let mut got = String::new();
        while !got.ends_with("third\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the new file is followed")
                .unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert_eq!(got, "second\nthird\n");
        let mut new = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        new.write_all(b"2024-01-01T00:00:04Z stdout F fourth\n")
            .unwrap();
        running.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "fourth\n");
        task.await.unwrap().unwrap();
    }
}
