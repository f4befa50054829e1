//! Just enough HTTP/2 (RFC 9113 §4.1) to follow frame boundaries in a byte stream: gRPC over
//! cleartext HTTP/2 is a client preface followed by 9-byte frame headers and their payloads, so
//! the proxy can count requests and find where a response starts without decoding anything.

/// Frame type of HEADERS.
pub(crate) const HEADERS: u8 = 0x1;
/// Frame type of RST_STREAM.
pub(crate) const RST_STREAM: u8 = 0x3;
/// END_STREAM flag of HEADERS and DATA frames.
pub(crate) const END_STREAM: u8 = 0x1;

/// The client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const CLIENT_PREFACE_LEN: usize = 24;

/// A frame header as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload length.
    pub length: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (0 for the connection).
    pub stream_id: u32,
}

/// Follows frame boundaries across arbitrarily split chunks.
#[derive(Debug)]
pub(crate) struct FrameScanner {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    /// A scanner for the client → server direction (skips the connection preface).
    pub(super) fn client_to_server() -> Self {
        Self {
            preface_left: CLIENT_PREFACE_LEN,
            ..Self::server_to_client()
        }
    }

    /// A scanner for the server → client direction (frames from the first byte).
    pub(super) fn server_to_client() -> Self {
        Self {
            preface_left: 0,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Feeds the next chunk; calls `on_frame` for every frame header completed in it. When
    /// `on_frame` returns true, scanning stops and the offset in `chunk` where that frame starts
    /// is returned (0 when its header began in an earlier chunk).
    pub(super) fn scan(
        &mut self,
        chunk: &[u8],
        mut on_frame: impl FnMut(FrameHeader) -> bool,
    ) -> Option<usize> {
        let mut at = 0;
        while at < chunk.len() {
            let left = chunk.len() - at;
            if self.preface_left > 0 {
                let step = self.preface_left.min(left);
                self.preface_left -= step;
                at += step;
            } else if self.payload_left > 0 {
                let step = self.payload_left.min(left);
                self.payload_left -= step;
                at += step;
            } else {
                let start = at.saturating_sub(self.header_len);
                let step = (9 - self.header_len).min(left);
                self.header[self.header_len..self.header_len + step]
                    .copy_from_slice(&chunk[at..at + step]);
                self.header_len += step;
                at += step;
                if self.header_len == 9 {
                    self.header_len = 0;
                    let h = self.header;
                    let frame = FrameHeader {
                        length: usize::from(h[0]) << 16
                            | usize::from(h[1]) << 8
                            | usize::from(h[2]),
                        kind: h[3],
                        flags: h[4],
                        stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    self.payload_left = frame.length;
                    if on_frame(frame) {
                        return Some(start);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        bytes.extend_from_slice(&stream_id.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(0x4, 0, 0, &[0; 6]));
        stream.extend(frame(HEADERS, 0x4, 1, &[7; 20]));
        stream.extend(frame(0x0, END_STREAM, 1, &[1; 300]));
        stream.extend(frame(HEADERS, 0x4, 3, &[7; 5]));
        for split in 1..stream.len() {
            let mut scanner = FrameScanner::client_to_server();
            let mut seen = Vec::new();
            for chunk in stream.chunks(split) {
                scanner.scan(chunk, |f| {
                    seen.push((f.kind, f.stream_id, f.length));
                    false
                });
            }
            assert_eq!(
                seen,
                [
                    (0x4, 0, 6),
                    (HEADERS, 1, 20),
                    (0x0, 1, 300),
                    (HEADERS, 3, 5)
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn reports_where_the_chosen_frame_starts() {
        let mut stream = frame(0x4, 0, 0, &[0; 6]);
        let headers_at = stream.len();
        stream.extend(frame(HEADERS, 0x4, 1, &[7; 20]));
        let mut scanner = FrameScanner::server_to_client();
        assert_eq!(
            scanner.scan(&stream, |f| f.kind == HEADERS),
            Some(headers_at)
        );

        // A header split across chunks: the cut falls at the start of the second chunk.
        let mut scanner = FrameScanner::server_to_client();
        let (first, second) = stream.split_at(headers_at + 4);
        assert_eq!(scanner.scan(first, |f| f.kind == HEADERS), None);
        assert_eq!(scanner.scan(second, |f| f.kind == HEADERS), Some(0));
    }
}
