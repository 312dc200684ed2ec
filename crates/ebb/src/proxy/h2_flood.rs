//! Flood detection for HTTP/2 client connections, on the raw bytes.
//!
//! hyper's HTTP/2 layer (the `h2` crate) already bounds some floods itself:
//! streams past `max_concurrent_streams` are refused and too many refusals
//! end the connection (`max_local_error_reset_streams`), resets of streams
//! not yet taken up are capped (`max_pending_accept_reset_streams`), and so
//! are header lists (`max_header_list_size`, CONTINUATION frames) and empty
//! DATA frames. It answers every PING and SETTINGS and takes every
//! WINDOW_UPDATE and PRIORITY for ever, though, with one reply in flight at
//! a time: memory stays flat, but a client can keep a core busy on one
//! connection without asking for anything; and a client that resets each
//! stream just after it was taken up (and its request sent to a replica) is
//! never stopped.
//!
//! So, as nginx and HAProxy do, the client's frame headers are read as they
//! arrive and two things are counted per connection:
//!
//! - **Resets**: more than [`RESET_FLOOR`] RST_STREAM frames from the
//!   client, and more than half of the streams it opened, is a rapid-reset
//!   attack (CVE-2023-44487; Envoy's rule). A browser cancels some streams,
//!   never most of them.
//! - **Control frames** that do no work for a request (PING, SETTINGS,
//!   WINDOW_UPDATE, PRIORITY, empty DATA and CONTINUATION): more than
//!   [`CONTROL_FLOOR`], plus [`CONTROL_PER_STREAM`] per stream opened, plus
//!   one per KiB of payload moved either way (a long download is answered by
//!   WINDOW_UPDATEs and, from gRPC clients, PINGs).
//!
//! Past either, the connection is told to go away (GOAWAY) and closed.

/// Resets tolerated whatever the ratio.
pub(crate) const RESET_FLOOR: u64 = 100;
/// Control frames tolerated on a connection that did nothing else.
pub(crate) const CONTROL_FLOOR: u64 = 1000;
/// Control frames earned by each stream opened.
pub(crate) const CONTROL_PER_STREAM: u64 = 8;

const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;

/// Why a connection was found abusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flood {
    Resets,
    ControlFrames,
}

impl Flood {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Flood::Resets => "rapid reset (most streams reset by the client)",
            Flood::ControlFrames => "control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY or empty frames)",
        }
    }
}

/// Reads an HTTP/2 client's frame headers (skipping payloads) and counts.
#[derive(Debug)]
pub(crate) struct FloodGuard {
    /// Preface bytes still to skip.
    preface_left: usize,
    head: [u8; FRAME_HEAD],
    head_len: usize,
    payload_left: u64,
    last_stream: u32,
    pub(crate) streams: u64,
    pub(crate) resets: u64,
    pub(crate) control: u64,
    /// DATA, HEADERS and CONTINUATION payload received, and bytes sent.
    moved: u64,
    flood: Option<Flood>,
}

impl FloodGuard {
    /// `already` bytes of the connection went by before the guard started.
    pub(crate) fn new(already: u64) -> Self {
        FloodGuard {
            preface_left: PREFACE_LEN.saturating_sub(usize::try_from(already).unwrap_or(usize::MAX)),
            head: [0; FRAME_HEAD],
            head_len: 0,
            payload_left: 0,
            last_stream: 0,
            streams: 0,
            resets: 0,
            control: 0,
            moved: 0,
            flood: None,
        }
    }

    /// Bytes written to the client (they earn control frames).
    pub(crate) fn sent(&mut self, n: usize) {
        self.moved = self.moved.saturating_add(n as u64);
    }

    /// Feeds bytes read from the client. `Some((at, why))` the first time
    /// the connection turns abusive: `at` is where the frame that did it
    /// starts in `bytes` (0 when it began in an earlier read).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<(usize, Flood)> {
        if self.flood.is_some() {
            return None;
        }
        let total = bytes.len();
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEAD - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len < FRAME_HEAD {
                break;
            }
            self.head_len = 0;
            if let Some(why) = self.frame() {
                self.flood = Some(why);
                let start = (total - bytes.len()).saturating_sub(FRAME_HEAD);
                return Some((start, why));
            }
        }
        None
    }

    /// Counts the frame whose header is in `self.head`.
    fn frame(&mut self) -> Option<Flood> {
        let h = &self.head;
        let len = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        self.payload_left = len;
        let control = match kind {
            DATA => len == 0 && flags & FLAG_END_STREAM == 0,
            HEADERS => {
                if stream > self.last_stream {
                    self.last_stream = stream;
                    self.streams += 1;
                }
                false
            }
            CONTINUATION => len == 0,
            PRIORITY | WINDOW_UPDATE => true,
            SETTINGS | PING => flags & FLAG_ACK == 0,
            RST_STREAM => {
                self.resets += 1;
                if self.resets > RESET_FLOOR && self.resets * 2 > self.streams {
                    return Some(Flood::Resets);
                }
                false
            }
            _ => false,
        };
        if matches!(kind, DATA | HEADERS | CONTINUATION) {
            self.moved = self.moved.saturating_add(len);
        }
        if control {
            self.control += 1;
            let allowed = CONTROL_FLOOR + CONTROL_PER_STREAM.saturating_mul(self.streams) + self.moved / 1024;
            if self.control > allowed {
                return Some(Flood::ControlFrames);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn pings_past_the_floor_are_a_flood_and_acks_are_not_counted() {
        let mut g = FloodGuard::new(0);
        assert_eq!(g.feed(PREFACE), None);
        for _ in 0..5000 {
            assert_eq!(g.feed(&frame(PING, FLAG_ACK, 0, &[0; 8])), None);
        }
        for _ in 0..CONTROL_FLOOR {
            assert_eq!(g.feed(&frame(PING, 0, 0, &[0; 8])), None);
        }
        assert_eq!(g.feed(&frame(PING, 0, 0, &[0; 8])), Some((0, Flood::ControlFrames)));
        assert_eq!(g.feed(&frame(PING, 0, 0, &[0; 8])), None, "reported once");
    }

    #[test]
    fn the_offending_frame_is_located_across_split_reads() {
        let mut g = FloodGuard::new(16); // the preface's first line went by
        assert_eq!(g.feed(&PREFACE[16..]), None);
        let mut bytes = Vec::new();
        for i in 0..=RESET_FLOOR as u32 {
            bytes.extend(frame(HEADERS, 0x5, 1 + 2 * i, &[0x82]));
            bytes.extend(frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes()));
        }
        let last = bytes.len() - 13;
        let (first, second) = bytes.split_at(last + 4);
        assert_eq!(g.feed(first), None);
        assert_eq!(g.feed(second), Some((0, Flood::Resets)));
        let mut g = FloodGuard::new(0);
        g.feed(PREFACE);
        assert_eq!(g.feed(&bytes), Some((last, Flood::Resets)));
    }

    #[test]
    fn streams_that_are_mostly_finished_may_reset_some() {
        let mut g = FloodGuard::new(0);
        g.feed(PREFACE);
        for i in 0..10_000u32 {
            assert_eq!(g.feed(&frame(HEADERS, 0x5, 1 + 2 * i, &[0x82])), None);
            if i % 3 == 0 {
                assert_eq!(g.feed(&frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes())), None);
            }
        }
    }

    #[test]
    fn payload_earns_window_updates() {
        let mut g = FloodGuard::new(0);
        g.feed(PREFACE);
        g.feed(&frame(HEADERS, 0x4, 1, &[0x83]));
        let data = vec![0u8; 16 * 1024];
        for _ in 0..2000 {
            assert_eq!(g.feed(&frame(DATA, 0, 1, &data)), None);
            assert_eq!(g.feed(&frame(WINDOW_UPDATE, 0, 0, &[0, 0, 64, 0])), None);
        }
        let mut g = FloodGuard::new(0);
        g.feed(PREFACE);
        g.sent(1 << 30);
        for _ in 0..100_000 {
            assert_eq!(g.feed(&frame(WINDOW_UPDATE, 0, 0, &[0, 0, 64, 0])), None);
        }
    }

    #[test]
    fn empty_data_counts_but_a_final_empty_data_does_not() {
        let mut g = FloodGuard::new(0);
        g.feed(PREFACE);
        for i in 0..5000u32 {
            assert_eq!(g.feed(&frame(DATA, FLAG_END_STREAM, 1 + 2 * i, &[])), None);
        }
        assert_eq!(g.control, 0);
        g.feed(&frame(DATA, 0, 1, &[]));
        assert_eq!(g.control, 1);
    }
}
