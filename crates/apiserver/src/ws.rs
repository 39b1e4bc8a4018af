//! The server side of RFC 6455 WebSockets, as far as the API server's
//! streaming needs it (↔ k8s.io/apimachinery/pkg/util/httpstream/wsstream
//! and apiserver's streamtunnel): the opening handshake, message framing
//! with ping/pong and close, and the two uses of it here:
//!
//! - pods/log over WebSocket (`binary.k8s.io`, `base64.binary.k8s.io`):
//!   each chunk of the log stream is one message, and a close frame
//!   follows the end of the log (↔ wsstream.Reader);
//! - port-forward tunnelled as `SPDY/3.1+portforward.k8s.io` (kubectl
//!   1.31+): the SPDY bytes of the kubelet's upgraded connection travel as
//!   the payloads of binary messages (↔ streamtunnel.go).
//!
//! No WebSocket crate is in the dependency tree (kube's `ws` feature is
//! off); the server side of the framing is small and is unit-tested here.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::server::{Body, full};

/// The largest message accepted from a client.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The log stream's subprotocols (↔ NewDefaultReaderProtocols): binary
/// messages, or base64 in text messages.
pub const BINARY_PROTOCOL: &str = "binary.k8s.io";
pub const BASE64_BINARY_PROTOCOL: &str = "base64.binary.k8s.io";
/// kubectl's port-forward over WebSocket: SPDY inside binary messages.
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Whether the request asks for a WebSocket (↔ wsstream.IsWebSocketRequest).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The subprotocols the client offers, in its order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The 101 answer accepting the client's handshake with `protocol`
/// (empty: none). None when the request has no Sec-WebSocket-Key.
pub fn switching_protocols(headers: &HeaderMap, protocol: &str) -> Option<Response<Body>> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())?;
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key(key)).ok()?,
    );
    if !protocol.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).ok()?,
        );
    }
    Some(resp)
}

/// Encode one unmasked (server) frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A message read from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Data { opcode: u8, payload: Vec<u8> },
    Ping(Vec<u8>),
    Close,
}

/// Read one frame: (fin, opcode, unmasked payload). None at end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(bool, u8, Vec<u8>)>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0F;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_MESSAGE)
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "websocket frame too large")
        })?;
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((fin, opcode, payload)))
}

/// The reading half of a server connection: messages with fragments
/// joined (control frames may come between fragments).
pub struct Reader<R> {
    r: R,
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader { r, partial: None }
    }

    /// The next message. Pings are returned for the caller to answer; a
    /// close frame or the end of the stream is `Close`.
    pub async fn next(&mut self) -> std::io::Result<Message> {
        loop {
            let Some((fin, opcode, payload)) = read_frame(&mut self.r).await? else {
                return Ok(Message::Close);
            };
            match opcode {
                OP_CLOSE => return Ok(Message::Close),
                OP_PING => return Ok(Message::Ping(payload)),
                OP_PONG => continue,
                OP_CONTINUATION => {
                    let Some((_, buf)) = self.partial.as_mut() else {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "websocket continuation without a message",
                        ));
                    };
                    if buf.len().saturating_add(payload.len()) > MAX_MESSAGE {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "websocket message too large",
                        ));
                    }
                    buf.extend_from_slice(&payload);
                }
                op => self.partial = Some((op, payload)),
            }
            if fin && let Some((opcode, payload)) = self.partial.take() {
                return Ok(Message::Data { opcode, payload });
            }
        }
    }
}

/// The writing half of a server connection, shared by the tasks that send.
pub struct Writer<W>(Arc<Mutex<W>>);

impl<W> Clone for Writer<W> {
    fn clone(&self) -> Self {
        Writer(self.0.clone())
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(w: W) -> Self {
        Writer(Arc::new(Mutex::new(w)))
    }

    pub async fn send(&self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut w = self.0.lock().await;
        w.write_all(&frame(opcode, payload)).await?;
        w.flush().await
    }

    /// Write bytes as they are (for a connection that is not a WebSocket).
    pub async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.0.lock().await;
        w.write_all(bytes).await?;
        w.flush().await
    }

    pub async fn shutdown(&self) {
        let _ = self.0.lock().await.shutdown().await;
    }

    /// A normal close (1000), then the end of the stream.
    pub async fn close(&self) {
        let mut w = self.0.lock().await;
        let _ = w.write_all(&frame(OP_CLOSE, &1000u16.to_be_bytes())).await;
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }
}

/// Stream a log body to the client as WebSocket messages (↔
/// wsstream.Reader.Copy), binary or base64 text by `protocol`, and close.
pub fn serve_log(upgrade: hyper::upgrade::OnUpgrade, mut body: Incoming, protocol: String) {
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "log websocket upgrade failed");
                return;
            }
        };
        let (rd, wr) = tokio::io::split(io);
        let mut rd = Reader::new(rd);
        let writer = Writer::new(wr);
        let base64 = protocol == BASE64_BINARY_PROTOCOL;
        // The client's frames: pings answered, a close ends the stream.
        let pinger = writer.clone();
        let mut client = tokio::spawn(async move {
            loop {
                match rd.next().await {
                    Ok(Message::Ping(p)) => {
                        if pinger.send(OP_PONG, &p).await.is_err() {
                            return;
                        }
                    }
                    Ok(Message::Data { .. }) => {}
                    Ok(Message::Close) | Err(_) => return,
                }
            }
        });
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(f)) => {
                        let Ok(data) = f.into_data() else { continue };
                        if data.is_empty() {
                            continue;
                        }
                        let sent = if base64 {
                            let text = base64::engine::general_purpose::STANDARD.encode(&data);
                            writer.send(OP_TEXT, text.as_bytes()).await
                        } else {
                            writer.send(OP_BINARY, &data).await
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "reading the log from the kubelet failed");
                        break;
                    }
                    None => break,
                },
                _ = &mut client => break,
            }
        }
        writer.close().await;
        client.abort();
    });
}

/// Carry the kubelet's upgraded SPDY connection inside the client's
/// WebSocket: binary message payloads to the kubelet, the kubelet's bytes
/// back as binary messages (↔ streamtunnel's tunnelingConnection).
pub fn serve_tunnel(client: hyper::upgrade::OnUpgrade, kubelet: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client, kubelet) {
            (Ok(c), Ok(k)) => (TokioIo::new(c), TokioIo::new(k)),
            (a, b) => {
                tracing::debug!(client = ?a.err(), kubelet = ?b.err(), "tunnel upgrade failed");
                return;
            }
        };
        let (crd, cwr) = tokio::io::split(client);
        let mut crd = Reader::new(crd);
        let (mut krd, mut kwr) = tokio::io::split(kubelet);
        let writer = Writer::new(cwr);
        let pinger = writer.clone();
        let up = async move {
            loop {
                match crd.next().await {
                    Ok(Message::Data { payload, .. }) => {
                        if kwr.write_all(&payload).await.is_err() || kwr.flush().await.is_err() {
                            break;
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
            let _ = kwr.shutdown().await;
        };
        let down_writer = writer.clone();
        let down = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match krd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if down_writer.send(OP_BINARY, &buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        // As the UpgradeAwareHandler: when one direction ends, both do.
        tokio::select! {
            () = up => {}
            () = down => {}
        }
        writer.close().await;
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn computes_the_accept_key() {
        // RFC 6455 section 1.3's example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn recognizes_websocket_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert!(is_websocket(&h));
        assert_eq!(
            offered_protocols(&h),
            vec!["v5.channel.k8s.io", "v4.channel.k8s.io"]
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_websocket(&h));
    }

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[tokio::test]
    async fn reads_masked_fragmented_messages() {
        let long = vec![7u8; 300];
        let mut wire = masked(false, OP_BINARY, b"\x00ab");
        wire.extend(masked(false, OP_PING, b"p"));
        wire.extend(masked(true, OP_CONTINUATION, b"cd"));
        wire.extend(masked(true, OP_BINARY, &long));
        wire.extend(masked(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut r = Reader::new(&wire[..]);
        // A ping between fragments is handed out first.
        assert_eq!(r.next().await.unwrap(), Message::Ping(b"p".to_vec()));
        assert_eq!(
            r.next().await.unwrap(),
            Message::Data {
                opcode: OP_BINARY,
                payload: b"\x00abcd".to_vec()
            }
        );
        assert_eq!(
            r.next().await.unwrap(),
            Message::Data {
                opcode: OP_BINARY,
                payload: long
            }
        );
        assert_eq!(r.next().await.unwrap(), Message::Close);
        assert_eq!(r.next().await.unwrap(), Message::Close);
    }

    #[test]
    fn frames_server_messages() {
        assert_eq!(frame(OP_BINARY, b"\x01hi"), b"\x82\x03\x01hi".to_vec());
        let f = frame(OP_TEXT, &[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        assert_eq!(f.len(), 204);
        let f = frame(OP_BINARY, &vec![0u8; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }
}
