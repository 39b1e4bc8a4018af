//! kubectl 1.31+'s `v5.channel.k8s.io` exec/attach WebSocket translated to
//! the SPDY/3.1 `v4.channel.k8s.io` streams the kubelet (containerd's
//! streaming server) speaks (↔ kube-apiserver 1.30+'s StreamTranslator and
//! client-go's remotecommand streamProtocolV4). v5 differs from v4 by the
//! client's close signal (`[255, channel]`), which here becomes the FIN of
//! the SPDY stdin stream, so `kubectl exec -i` sees EOF.
//!
//! Only the client side of SPDY that remotecommand uses: SYN_STREAM with
//! the `streamtype` header, data frames with FIN, PING answered,
//! WINDOW_UPDATE sent for what was read. Header blocks are sent as zlib
//! stored blocks, each followed by an empty one as a sync flush ends
//! (valid deflate without the SPDY dictionary, which a zlib reader only
//! needs when the stream asks for it); the server's header blocks are not
//! needed and are skipped.

use std::collections::HashMap;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ws::{Message, OP_BINARY, OP_PONG, Reader, Writer};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// The largest data frame sent (SPDY's length field has 24 bits).
const MAX_DATA: usize = 64 * 1024;

/// The channels of the remote command protocol.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]`.
pub const CLOSE: u8 = 255;

/// Which streams a request opens (↔ remotecommand's stream options; with
/// a tty there is no stderr and there is a resize stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Streams {
    /// (channel, streamtype) in the order client-go creates them.
    pub fn plan(&self) -> Vec<(u8, &'static str)> {
        let mut v = vec![(ERROR, "error")];
        if self.stdin {
            v.push((STDIN, "stdin"));
        }
        if self.stdout {
            v.push((STDOUT, "stdout"));
        }
        if self.stderr && !self.tty {
            v.push((STDERR, "stderr"));
        }
        if self.tty {
            v.push((RESIZE, "resize"));
        }
        v
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    let len = (payload.len() as u32) & 0x00FF_FFFF;
    f.push(flags);
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// A data frame.
pub fn data(stream: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    let len = (payload.len() as u32) & 0x00FF_FFFF;
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// The compressed header blocks of one connection: one zlib stream, each
/// block a stored (uncompressed) deflate block.
#[derive(Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 7);
        if !self.started {
            // CMF/FLG: deflate, 32K window, no preset dictionary.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        // A non-final stored block (BFINAL=0, BTYPE=00), then LEN and NLEN.
        let len = raw.len().min(0xFFFF) as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(&raw[..usize::from(len)]);
        // An empty stored block, as a sync flush ends: Go's inflater hands
        // out a block's bytes only when it reaches the next block.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xFF, 0xFF]);
        out
    }
}

/// A SYN_STREAM opening `stream` with `headers`.
pub fn syn_stream(hw: &mut HeaderWriter, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // associated stream
    p.extend_from_slice(&[0, 0]); // priority, slot
    p.extend_from_slice(&hw.block(headers));
    control(SYN_STREAM, 0, &p)
}

/// A frame read from the kubelet.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
    GoAway,
    /// Another control frame (SYN_REPLY, SETTINGS, RST_STREAM, ...).
    Other {
        kind: u16,
        payload: Vec<u8>,
    },
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7FFF_FFFF;
        return Ok(Some(Frame::Data {
            stream,
            fin: head[4] & FLAG_FIN != 0,
            payload,
        }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    Ok(Some(match kind {
        PING => Frame::Ping(payload),
        GOAWAY => Frame::GoAway,
        _ => Frame::Other { kind, payload },
    }))
}

/// Relay a v5 WebSocket client (after its 101) to the kubelet's SPDY
/// connection (after its 101), until either side ends.
pub fn translate(
    client: hyper::upgrade::OnUpgrade,
    kubelet: hyper::upgrade::OnUpgrade,
    streams: Streams,
) {
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client, kubelet) {
            (Ok(c), Ok(k)) => (TokioIo::new(c), TokioIo::new(k)),
            (a, b) => {
                tracing::debug!(client = ?a.err(), kubelet = ?b.err(), "stream translation upgrade failed");
                return;
            }
        };
        let (crd, cwr) = tokio::io::split(client);
        let (mut krd, kwr) = tokio::io::split(kubelet);
        let ws = Writer::new(cwr);
        let spdy = Writer::new(kwr);
        // Open the streams, odd ids in client-go's order.
        let mut hw = HeaderWriter::default();
        let mut by_channel: HashMap<u8, u32> = HashMap::new();
        let mut by_stream: HashMap<u32, u8> = HashMap::new();
        let mut opening = Vec::new();
        for (i, (channel, kind)) in streams.plan().into_iter().enumerate() {
            let id = 1 + 2 * i as u32;
            by_channel.insert(channel, id);
            by_stream.insert(id, channel);
            opening.extend(syn_stream(&mut hw, id, &[("streamtype", kind)]));
        }
        if spdy.write(&opening).await.is_err() {
            ws.close().await;
            return;
        }
        let up_spdy = spdy.clone();
        let pinger = ws.clone();
        let mut crd = Reader::new(crd);
        let up = async move {
            loop {
                match crd.next().await {
                    Ok(Message::Data { payload, .. }) => {
                        let Some((&channel, rest)) = payload.split_first() else {
                            continue;
                        };
                        if channel == CLOSE {
                            // v5: the client closed one of its streams (stdin).
                            if let Some(&id) = rest.first().and_then(|c| by_channel.get(c))
                                && up_spdy.write(&data(id, true, &[])).await.is_err()
                            {
                                break;
                            }
                            continue;
                        }
                        let Some(&id) = by_channel.get(&channel) else {
                            continue;
                        };
                        for chunk in rest.chunks(MAX_DATA) {
                            if up_spdy.write(&data(id, false, chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Message::Ping(p)) => {
                        if pinger.send(OP_PONG, &p).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Close) | Err(_) => break,
                }
            }
        };
        let down_ws = ws.clone();
        let down_spdy = spdy.clone();
        let down = async move {
            loop {
                match read_frame(&mut krd).await {
                    Ok(Some(Frame::Data {
                        stream, payload, ..
                    })) => {
                        if !payload.is_empty() {
                            let Some(&channel) = by_stream.get(&stream) else {
                                continue;
                            };
                            let mut msg = Vec::with_capacity(payload.len() + 1);
                            msg.push(channel);
                            msg.extend_from_slice(&payload);
                            if down_ws.send(OP_BINARY, &msg).await.is_err() {
                                break;
                            }
                            // Give the window back (SPDY/3.1 flow control).
                            let mut wu = Vec::with_capacity(8);
                            wu.extend_from_slice(&stream.to_be_bytes());
                            wu.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                            let _ = down_spdy.write(&control(WINDOW_UPDATE, 0, &wu)).await;
                        }
                    }
                    Ok(Some(Frame::Ping(p))) => {
                        let _ = down_spdy.write(&control(PING, 0, &p)).await;
                    }
                    Ok(Some(Frame::Other { .. })) => {}
                    Ok(Some(Frame::GoAway)) | Ok(None) | Err(_) => break,
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
        ws.close().await;
        spdy.shutdown().await;
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plans_streams_as_client_go() {
        let s = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(
            s.plan(),
            vec![
                (ERROR, "error"),
                (STDIN, "stdin"),
                (STDOUT, "stdout"),
                (STDERR, "stderr")
            ]
        );
        let t = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        assert_eq!(
            t.plan(),
            vec![
                (ERROR, "error"),
                (STDIN, "stdin"),
                (STDOUT, "stdout"),
                (RESIZE, "resize")
            ]
        );
    }

    #[test]
    fn writes_header_blocks_as_stored_zlib() {
        let mut hw = HeaderWriter::default();
        let first = hw.block(&[("streamtype", "error")]);
        // zlib header, then a stored block of the 4+4+10+4+5 bytes.
        assert_eq!(&first[..2], &[0x78, 0x01]);
        assert_eq!(first[2], 0x00);
        assert_eq!(u16::from_le_bytes([first[3], first[4]]), 27);
        assert_eq!(u16::from_le_bytes([first[5], first[6]]), !27u16);
        assert_eq!(&first[7..11], &1u32.to_be_bytes());
        assert_eq!(&first[15..25], b"streamtype");
        assert_eq!(&first[34..], &[0x00, 0x00, 0x00, 0xFF, 0xFF]);
        // Later blocks continue the same stream: no second zlib header.
        let second = hw.block(&[("streamtype", "stdin")]);
        assert_eq!(second[0], 0x00);
        assert_eq!(second.len(), 5 + 27 + 5);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut hw = HeaderWriter::default();
        let syn = syn_stream(&mut hw, 3, &[("streamtype", "stdout")]);
        assert_eq!(&syn[..4], &[0x80, 0x03, 0x00, 0x01]);
        let mut wire = syn.clone();
        wire.extend(data(3, true, b"hello"));
        wire.extend(control(PING, 0, &7u32.to_be_bytes()));
        let mut r = &wire[..];
        assert!(matches!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Other { kind: 1, .. })
        ));
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                payload: b"hello".to_vec()
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Ping(7u32.to_be_bytes().to_vec()))
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }
}
