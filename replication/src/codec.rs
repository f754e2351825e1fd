//! The one binary encoding the engine uses for payloads (log records on disk, messages on the
//! wire, snapshots): bincode with fixed-width integers, a hard byte limit, and no trailing bytes.
//!
//! Fixed-width integers make the encoding canonical: every byte string that decodes re-encodes to
//! exactly the same bytes (bincode rejects non-0/1 booleans, unknown enum tags and invalid UTF-8),
//! which the fuzz targets check. The limit is enforced while decoding, before any allocation, so
//! a hostile length prefix cannot make us allocate past it.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct DecodeError(String);

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes a value. Encoding our own types cannot fail (no maps with non-string keys, no
/// sequences of unknown length), so a failure here is a bug and panics.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    options(u64::MAX)
        .serialize(value)
        .expect("encoding an engine type never fails")
}

/// Size in bytes of a value's encoding.
pub fn encoded_len<T: Serialize>(value: &T) -> u64 {
    options(u64::MAX)
        .serialized_size(value)
        .expect("sizing an engine type never fails")
}

/// Decodes a value from exactly `bytes`, allocating at most about `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, DecodeError> {
    options(limit)
        .deserialize(bytes)
        .map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let v: (u64, String, Vec<u8>) = (7, "abc".into(), vec![1, 2, 3]);
        let bytes = encode(&v);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes, 1024).unwrap(), v);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(u64, String, Vec<u8>)>(&longer, 1024).is_err());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_not_allocated() {
        // A Vec<u8> claiming u64::MAX / 2 elements.
        let mut bytes = (u64::MAX / 2).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        assert!(decode::<Vec<u8>>(&bytes, 1 << 20).is_err());
    }
}
