//! The client half of each Workload API connection, with every request's
//! `:authority` set to `localhost`.
//!
//! gRPC C-core (py-spiffe, grpc-java and others built on it) names a Unix
//! socket's percent-encoded path as `:authority`; the HTTP/2 server under
//! tonic refuses that as a malformed authority and resets the stream. A
//! socket has no authority to check, so each header block is decoded with
//! the client's HPACK state, its `:authority` replaced, and re-encoded with
//! an encoder whose state the server's decoder mirrors. Every other frame
//! passes through unchanged.

use loona_hpack::{Decoder, Encoder};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The server's SETTINGS_MAX_FRAME_SIZE (HTTP/2's default, tonic's too).
const MAX_FRAME: usize = 16_384;
/// The server's SETTINGS_HEADER_TABLE_SIZE (HTTP/2's default).
const TABLE_SIZE: usize = 4_096;
/// The longest header block accepted.
const MAX_BLOCK: usize = 64 * 1024;
/// What every request's `:authority` becomes.
const AUTHORITY: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why a client's byte stream cannot be carried on (the connection closes).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Not an HTTP/2 client.
    #[error("not an HTTP/2 connection preface")]
    Preface,
    /// A frame beyond the server's maximum frame size.
    #[error("frame of {0} bytes exceeds {MAX_FRAME}")]
    FrameTooLarge(usize),
    /// A header block beyond [`MAX_BLOCK`].
    #[error("header block exceeds {MAX_BLOCK} bytes")]
    BlockTooLarge,
    /// Padding or priority fields longer than the frame.
    #[error("malformed HEADERS frame")]
    MalformedHeaders,
    /// Another frame inside a header block.
    #[error("frame type {0} inside a header block")]
    Interleaved(u8),
    /// The header block does not decode.
    #[error("header block: {0}")]
    Hpack(String),
}

/// A header block spread over HEADERS and CONTINUATION frames.
struct Open {
    stream: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Rewrites one client-to-server byte stream; feed it bytes as they come.
pub struct AuthorityRewriter {
    preface_seen: usize,
    pending: Vec<u8>,
    open: Option<Open>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            preface_seen: 0,
            pending: Vec::new(),
            open: None,
            decoder,
            encoder: Encoder::new(),
        }
    }
}

impl AuthorityRewriter {
    /// Takes `input` and appends what to send to the server to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.preface_seen < PREFACE.len() {
            let take = input.len().min(PREFACE.len() - self.preface_seen);
            if input[..take] != PREFACE[self.preface_seen..self.preface_seen + take] {
                return Err(RewriteError::Preface);
            }
            out.extend_from_slice(&input[..take]);
            self.preface_seen += take;
            input = &input[take..];
        }
        self.pending.extend_from_slice(input);
        let mut used = 0;
        while let Some(header) = self.pending.get(used..used + 9) {
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if length > MAX_FRAME {
                return Err(RewriteError::FrameTooLarge(length));
            }
            let Some(frame) = self.pending.get(used..used + 9 + length) else {
                break;
            };
            let frame = frame.to_vec();
            used += 9 + length;
            self.frame(&frame, out)?;
        }
        self.pending.drain(..used);
        Ok(())
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let (kind, flags, payload) = (frame[3], frame[4], &frame[9..]);
        let stream: [u8; 4] = [frame[5], frame[6], frame[7], frame[8]];
        match (kind, self.open.as_mut()) {
            (CONTINUATION, Some(open)) if open.stream == stream => {
                if open.block.len() + payload.len() > MAX_BLOCK {
                    return Err(RewriteError::BlockTooLarge);
                }
                open.block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.close_block(out)?;
                }
            }
            (kind, Some(_)) => return Err(RewriteError::Interleaved(kind)),
            (HEADERS, None) => {
                let mut body = payload;
                if flags & PADDED != 0 {
                    let (&pad, rest) = body.split_first().ok_or(RewriteError::MalformedHeaders)?;
                    let keep = rest.len().checked_sub(usize::from(pad));
                    body = rest
                        .get(..keep.ok_or(RewriteError::MalformedHeaders)?)
                        .unwrap_or_default();
                }
                let priority = if flags & PRIORITY != 0 {
                    let (fields, rest) = body
                        .split_at_checked(5)
                        .ok_or(RewriteError::MalformedHeaders)?;
                    body = rest;
                    <[u8; 5]>::try_from(fields).ok()
                } else {
                    None
                };
                self.open = Some(Open {
                    stream,
                    flags: flags & !PADDED,
                    priority,
                    block: body.to_vec(),
                });
                if flags & END_HEADERS != 0 {
                    self.close_block(out)?;
                }
            }
            (_, None) => out.extend_from_slice(frame),
        }
        Ok(())
    }

    /// Re-encodes a complete header block and sends it as HEADERS and, if
    /// it grew past one frame, CONTINUATION frames.
    fn close_block(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let mut fields = self
            .decoder
            .decode(&open.block)
            .map_err(|e| RewriteError::Hpack(e.to_string()))?;
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" {
                *value = AUTHORITY.to_vec();
            }
        }
        let block = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first = Vec::with_capacity(block.len().min(MAX_FRAME));
        if let Some(priority) = open.priority {
            first.extend_from_slice(&priority);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let flags = (open.flags & !END_HEADERS) | if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(out, HEADERS, flags, open.stream, &first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            write_frame(out, CONTINUATION, flags, open.stream, chunk);
        }
        Ok(())
    }
}

/// Carries one accepted connection to the gRPC server's end of `server`,
/// rewriting the client's requests on the way; returns when either side
/// closes or the client's stream cannot be rewritten.
pub async fn carry(client: tokio::net::UnixStream, server: tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let requests = async {
        let mut rewriter = AuthorityRewriter::default();
        let (mut buf, mut out) = (vec![0; MAX_FRAME], Vec::new());
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            out.clear();
            rewriter
                .feed(&buf[..n], &mut out)
                .map_err(std::io::Error::other)?;
            server_write.write_all(&out).await?;
        }
    };
    let responses = tokio::io::copy(&mut server_read, &mut client_write);
    if let Err(e) = tokio::try_join!(requests, responses) {
        tracing::debug!("workload API connection closed: {e}");
    }
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(
        encoder: &mut Encoder<'static>,
        flags: u8,
        fields: &[(&[u8], &[u8])],
    ) -> Vec<u8> {
        let block = encoder.encode(fields.iter().copied());
        let mut frame = Vec::new();
        write_frame(
            &mut frame,
            HEADERS,
            flags | END_HEADERS,
            [0, 0, 0, 1],
            &block,
        );
        frame
    }

    /// Decodes the header blocks of every HEADERS frame in `bytes` (after
    /// the preface) as the server would.
    fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            if rest[3] == HEADERS {
                blocks.push(decoder.decode(&rest[9..9 + len]).unwrap());
            }
            rest = &rest[9 + len..];
        }
        blocks
    }

    const REQUEST: &[(&[u8], &[u8])] = &[
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
        (b":authority", b"tmp%2Fspire%2Fapi.sock"),
        (b"workload.spiffe.io", b"true"),
    ];

    #[test]
    fn the_authority_of_every_request_becomes_localhost_and_nothing_else_changes() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes through as it is.
        write_frame(&mut input, 0x4, 0, [0; 4], &[0, 4, 0, 0, 0xff, 0xff]);
        input.extend(headers_frame(&mut client, 0, REQUEST));
        // The second request refers to the first one's table entries.
        input.extend(headers_frame(&mut client, 0, REQUEST));
        let mut out = Vec::new();
        let mut rewriter = AuthorityRewriter::default();
        // Byte by byte: frames split anywhere are reassembled.
        for byte in &input {
            rewriter.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        assert_eq!(
            &out[PREFACE.len()..PREFACE.len() + 15],
            &input[PREFACE.len()..PREFACE.len() + 15]
        );
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            let expected: Vec<_> = REQUEST
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_vec(),
                        if *n == b":authority" {
                            AUTHORITY.to_vec()
                        } else {
                            v.to_vec()
                        },
                    )
                })
                .collect();
            assert_eq!(block, expected);
        }
    }

    #[test]
    fn padding_and_continuations_are_understood() {
        let mut client = Encoder::new();
        let block = client.encode(REQUEST.iter().copied());
        let (a, b) = block.split_at(7);
        let mut payload = vec![3];
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        write_frame(&mut input, HEADERS, PADDED, [0, 0, 0, 3], &payload);
        write_frame(&mut input, CONTINUATION, END_HEADERS, [0, 0, 0, 3], b);
        let mut out = Vec::new();
        AuthorityRewriter::default().feed(&input, &mut out).unwrap();
        let blocks = server_view(&out);
        assert_eq!(blocks[0][3], (b":authority".to_vec(), AUTHORITY.to_vec()));
    }

    #[test]
    fn malformed_streams_are_refused_not_passed_on() {
        let mut out = Vec::new();
        assert_eq!(
            AuthorityRewriter::default().feed(b"GET / HTTP/1.1\r\n", &mut out),
            Err(RewriteError::Preface)
        );
        let mut big = PREFACE.to_vec();
        big.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            AuthorityRewriter::default().feed(&big, &mut out),
            Err(RewriteError::FrameTooLarge(65_536))
        );
        let mut bad_padding = PREFACE.to_vec();
        write_frame(
            &mut bad_padding,
            HEADERS,
            PADDED | END_HEADERS,
            [0, 0, 0, 1],
            &[9, 1],
        );
        assert_eq!(
            AuthorityRewriter::default().feed(&bad_padding, &mut out),
            Err(RewriteError::MalformedHeaders)
        );
        let mut interleaved = PREFACE.to_vec();
        write_frame(&mut interleaved, HEADERS, 0, [0, 0, 0, 1], &[0x82]);
        write_frame(&mut interleaved, 0x0, 0, [0, 0, 0, 1], b"data");
        assert_eq!(
            AuthorityRewriter::default().feed(&interleaved, &mut out),
            Err(RewriteError::Interleaved(0))
        );
        let mut garbage = PREFACE.to_vec();
        write_frame(
            &mut garbage,
            HEADERS,
            END_HEADERS,
            [0, 0, 0, 1],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        );
        assert!(matches!(
            AuthorityRewriter::default().feed(&garbage, &mut out),
            Err(RewriteError::Hpack(_))
        ));
    }
}
