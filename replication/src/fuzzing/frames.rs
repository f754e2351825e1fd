//! The frame codec against any byte string a peer could send.
//!
//! Properties, checked under several frame limits:
//!
//! 1. [`decode_frame`] never panics, and every error names what the bytes actually hold (the
//!    magic, version and kind it found, a length over the limit, a truncation that really is one).
//! 2. Whatever decodes re-encodes to exactly the bytes it came from (the encoding is canonical),
//!    and its payload is within the limit.
//! 3. A [`FrameDecoder`] fed the same bytes in any chunk sizes yields the same frames and the same
//!    error as decoding the whole stream at once, and after each push it holds less than one
//!    frame (`FRAME_HEADER_LEN + limit` bytes): the length check comes before buffering.
//! 4. After its first error a decoder stays failed: the same error forever, nothing buffered.
//!
//! The fuzz target also measures allocations around [`decode_frame`]; that needs a global
//! allocator, which only a binary can install (see `fuzz/fuzz_targets/frame_decode.rs`).

use crate::wire::{
    decode_frame, encode_frame, Frame, FrameDecoder, FrameError, DEFAULT_FRAME_LIMIT,
    FRAME_HEADER_LEN, PROTOCOL_VERSION,
};

/// The limits every input is checked under: the default, one a real frame may exceed, and one
/// below most frames, so that both sides of every length check are reached.
pub const LIMITS: [u32; 3] = [DEFAULT_FRAME_LIMIT, 4096, 64];

/// Checks every property on `data`, a byte stream from a peer, pushed to decoders in chunks of
/// the sizes in `chunks` (cycled; zero sizes count as one).
pub fn check_stream(data: &[u8], chunks: &[usize]) {
    for limit in LIMITS {
        check_one_frame(data, limit);
        let whole = decode_whole(data, limit);
        let chunked = decode_chunked(data, limit, chunks);
        assert_eq!(
            chunked, whole,
            "the decoder fed in chunks {chunks:?} disagrees with decoding the whole stream \
             (limit {limit})"
        );
        // The frames re-encode to the stream's prefix, back to back.
        let reencoded: Vec<u8> = whole
            .0
            .iter()
            .flat_map(|f| encode_frame(f.version, &f.message))
            .collect();
        assert_eq!(
            &data[..reencoded.len()],
            &reencoded[..],
            "decoded frames do not re-encode to the stream they came from"
        );
    }
}

/// Chunk sizes drawn from the bytes themselves (a small xorshift seeded with their CRC32), for
/// fuzz targets whose input is just the stream: the same bytes always split the same way.
pub fn chunk_plan(data: &[u8]) -> Vec<usize> {
    let mut state = u64::from(crc32fast::hash(data)) | 1 << 32;
    (0..8)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Mostly small pieces (split headers), sometimes large ones.
            match state % 4 {
                0 => 1,
                1 => 1 + (state >> 8) as usize % 12,
                2 => 1 + (state >> 8) as usize % 300,
                _ => 1 + (state >> 8) as usize % 70_000,
            }
        })
        .collect()
}

/// Property 1 and 2 on the frame at the start of `data`.
pub fn check_one_frame(data: &[u8], limit: u32) {
    let result = decode_frame(data, limit);
    match &result {
        Ok((frame, used)) => {
            assert!(
                *used >= FRAME_HEADER_LEN && *used <= data.len(),
                "used {used} bytes of {}",
                data.len()
            );
            assert!(
                *used - FRAME_HEADER_LEN <= limit as usize,
                "a payload of {} bytes passed the limit of {limit}",
                *used - FRAME_HEADER_LEN
            );
            assert_eq!(
                frame.version, PROTOCOL_VERSION,
                "decode_frame accepts one version"
            );
            assert_eq!(
                encode_frame(frame.version, &frame.message),
                &data[..*used],
                "a decoded {} frame does not re-encode to its bytes",
                frame.message.kind()
            );
        }
        Err(FrameError::Truncated { needed, have }) => {
            assert_eq!(
                *have,
                data.len(),
                "truncation misreports the bytes available"
            );
            assert!(
                needed > have,
                "truncated, yet {needed} bytes needed of {have}"
            );
            assert!(
                *needed <= FRAME_HEADER_LEN + limit as usize,
                "waiting for {needed} bytes, more than a frame under the limit {limit}"
            );
        }
        Err(FrameError::TooLarge { len, limit: l }) => {
            assert_eq!(*l, limit);
            assert!(
                *len > u64::from(limit),
                "{len} bytes refused under limit {limit}"
            );
        }
        Err(FrameError::BadMagic { found }) => {
            assert_eq!(&data[..2], found, "BadMagic names other bytes than it saw");
            // `RS` (the old bincode format's magic) is refused too, with a message of its own.
            assert_ne!(found, b"RP", "the right magic refused");
        }
        Err(FrameError::UnsupportedVersion { version }) => {
            assert_eq!(data[2], *version);
            assert_ne!(*version, PROTOCOL_VERSION);
        }
        Err(FrameError::UnknownKind { kind }) => assert_eq!(data[3], *kind),
        Err(FrameError::ChecksumMismatch { expected, found }) => assert_ne!(expected, found),
        Err(FrameError::Malformed(why)) => assert!(!why.is_empty()),
        Err(FrameError::UnknownMessage { tag }) => {
            assert_eq!(
                data.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4),
                Some(&tag.to_le_bytes()[..]),
                "UnknownMessage names another tag than the payload starts with"
            );
        }
        Err(e @ FrameError::NotInVersion { .. }) => {
            panic!("decoding returned a sender's error {e}")
        }
    }
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty(), "{e:?} has no message");
    }
}

/// What decoding a whole stream gives: its frames, then the error that stopped it, if any
/// (`None` when it ended cleanly or in the middle of a frame).
pub type Decoded = (Vec<Frame>, Option<FrameError>);

/// The reference: [`decode_frame`] again and again over the whole stream.
pub fn decode_whole(data: &[u8], limit: u32) -> Decoded {
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        match decode_frame(rest, limit) {
            Ok((frame, used)) => {
                frames.push(frame);
                rest = &rest[used..];
            }
            Err(FrameError::Truncated { .. }) => return (frames, None),
            Err(err) => return (frames, Some(err)),
        }
    }
}

/// Property 3 and 4: a decoder fed `data` in chunks, drained after every push.
pub fn decode_chunked(data: &[u8], limit: u32, chunks: &[usize]) -> Decoded {
    let mut decoder = FrameDecoder::new(limit, PROTOCOL_VERSION..=PROTOCOL_VERSION);
    let bound = FRAME_HEADER_LEN + limit as usize;
    let mut frames = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => {
                    assert!(decoder.is_poisoned(), "an error left the decoder usable");
                    assert_eq!(decoder.buffered(), 0, "a failed decoder kept its bytes");
                    decoder.push(rest);
                    assert_eq!(decoder.buffered(), 0, "a failed decoder took more bytes");
                    assert_eq!(
                        decoder.next_frame(),
                        Err(err.clone()),
                        "a failed decoder changed its error"
                    );
                    return (frames, Some(err));
                }
            }
        }
        assert!(
            decoder.buffered() < bound,
            "the decoder holds {} bytes after draining, a frame under limit {limit} is at most \
             {bound}",
            decoder.buffered()
        );
    }
    (frames, None)
}

/// A generous bound on the heap bytes decoding may take when it can see `visible` bytes: a
/// constant factor of them (a decoded value is larger in memory than on the wire: vectors grow
/// by doubling, records and map entries carry pointers), plus the 1 MiB that serde lets a
/// sequence preallocate from its claimed length, per nesting level (our messages nest at most
/// four sequences deep). What it excludes is allocating by a length the bytes only claim.
pub fn allocation_bound(visible: usize) -> usize {
    32 * visible + 4 * (1 << 20) + 64 * 1024
}
