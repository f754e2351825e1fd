//! The one binary encoding the engine uses for payloads (log records on disk, messages on the
//! wire, snapshots): postcard (a compact, well-kept serde format: varint integers, varint enum
//! tags, length-prefixed sequences), with a hard byte limit and no trailing bytes.
//!
//! The encoding is canonical: every byte string that decodes re-encodes to exactly the same
//! bytes, which the fuzz targets check. postcard itself rejects invalid booleans, unknown enum
//! tags and invalid UTF-8, and maps decode through [`canonical_map`], which rejects keys out of
//! order; a varint written longer than it needs to be would still decode, so [`decode`] encodes
//! what it decoded again and refuses any input that is not those very bytes. The limit is
//! enforced on the input before decoding: every element costs at least one input byte, so what
//! decoding allocates follows the input's size (plus serde's capped preallocation).

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct DecodeError(String);

/// Encodes a value. Encoding our own types cannot fail (no maps with non-string keys, no
/// sequences of unknown length), so a failure here is a bug and panics.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Sized first: growing the vector as the bytes come cost more than a sizing pass.
    let mut out = Vec::with_capacity(encoded_len(value) as usize);
    encode_into(value, &mut out);
    out
}

/// Encodes a value at the end of `out` (a frame that holds its header already, say).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    postcard::serialize_with_flavor(value, AppendTo(out))
        .expect("encoding an engine type never fails");
}

/// The CRC32 of `prefix` followed by `value`'s encoding, computed as the encoding is written,
/// without building it: a log record's checksum is computed for every record written and
/// checked for every record received or read.
pub fn crc32_after<T: Serialize + ?Sized>(prefix: &[u8], value: &T) -> u32 {
    let mut crc = CrcOf {
        hasher: crc32fast::Hasher::new(),
        buf: [0; CRC_CHUNK],
        len: 0,
    };
    let _ = postcard::ser_flavors::Flavor::try_extend(&mut crc, prefix);
    postcard::serialize_with_flavor(value, crc).expect("encoding an engine type never fails")
}

/// Bytes [`CrcOf`] gathers before hashing them: the hasher is fastest on whole runs, and most
/// pieces of an encoding are a byte or two.
const CRC_CHUNK: usize = 64;

/// A postcard output that keeps only the CRC32 of what is written.
struct CrcOf {
    hasher: crc32fast::Hasher,
    buf: [u8; CRC_CHUNK],
    len: usize,
}

impl CrcOf {
    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl postcard::ser_flavors::Flavor for CrcOf {
    type Output = u32;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.len + data.len() > CRC_CHUNK {
            self.flush();
        }
        if data.len() >= CRC_CHUNK {
            self.hasher.update(data);
        } else {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        }
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.len == CRC_CHUNK {
            self.flush();
        }
        self.buf[self.len] = byte;
        self.len += 1;
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<u32> {
        self.flush();
        Ok(self.hasher.finalize())
    }
}

/// A postcard output that appends to a vector its caller owns (and may have sized).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A postcard output that keeps nothing: it checks that what is written is `expected`, byte
/// for byte, and all of it (the canonical-form test of [`decode`], with no second copy of the
/// payload made to compare).
struct SameAs<'a> {
    expected: &'a [u8],
}

impl postcard::ser_flavors::Flavor for SameAs<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let Some((head, rest)) = self.expected.split_at_checked(data.len()) else {
            return Err(postcard::Error::SerializeBufferFull);
        };
        // Most pieces are a few bytes: compared in place, not through a call to `memcmp`.
        let same = if data.len() <= 16 {
            head.iter().zip(data).all(|(a, b)| a == b)
        } else {
            head == data
        };
        if !same {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.expected = rest;
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        match self.expected.split_first() {
            Some((&first, rest)) if first == byte => {
                self.expected = rest;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.expected.is_empty() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}

/// Size in bytes of a value's encoding.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("sizing an engine type never fails");
    size as u64
}

/// Decodes a value from exactly `bytes` (at most `limit` of them), refusing any encoding but the
/// canonical one.
pub fn decode<T: DeserializeOwned + Serialize>(bytes: &[u8], limit: u64) -> Result<T, DecodeError> {
    if bytes.len() as u64 > limit {
        return Err(DecodeError(format!(
            "{} bytes, over the {limit}-byte limit",
            bytes.len()
        )));
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes", rest.len())));
    }
    if postcard::serialize_with_flavor(&value, SameAs { expected: bytes }).is_err() {
        return Err(DecodeError(
            "not in canonical form (an integer or length written longer than it needs)".into(),
        ));
    }
    Ok(value)
}

/// Decodes a map whose keys come in strictly increasing order, as encoding a `BTreeMap` writes
/// them (`#[serde(deserialize_with = "crate::codec::canonical_map")]`). A map in another order, or
/// with a key twice, would decode into the same map as the sorted bytes and so re-encode to other
/// bytes than it was read from: refusing it keeps the encoding canonical.
pub fn canonical_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Sorted<K, V>(PhantomData<(K, V)>);

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for Sorted<K, V> {
        type Value = BTreeMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map with its keys in increasing order")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some((key, value)) = access.next_entry::<K, V>()? {
                if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
                    return Err(de::Error::custom("map keys out of order or repeated"));
                }
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(Sorted(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(deserialize_with = "canonical_map")]
        map: BTreeMap<u32, u8>,
    }

    #[test]
    fn a_map_decodes_only_in_the_order_it_encodes() {
        let sorted = Holder {
            map: BTreeMap::from([(1, 10), (2, 20)]),
        };
        let bytes = encode(&sorted);
        // The length, then (varint key, u8 value) twice.
        assert_eq!(bytes, [2, 1, 10, 2, 20]);
        assert_eq!(decode::<Holder>(&bytes, 1024).unwrap(), sorted);
        assert!(
            decode::<Holder>(&[2, 2, 20, 1, 10], 1024).is_err(),
            "out of order"
        );
        assert!(
            decode::<Holder>(&[2, 1, 10, 1, 10], 1024).is_err(),
            "a repeated key"
        );
    }

    #[test]
    fn an_integer_written_longer_than_it_needs_is_refused() {
        assert_eq!(encode(&5u32), [5]);
        assert_eq!(decode::<u32>(&[5], 8).unwrap(), 5);
        let err = decode::<u32>(&[0x85, 0x00], 8).unwrap_err().to_string();
        assert!(err.contains("not in canonical form"), "{err}");
        let err = decode::<u32>(&[5, 5], 1).unwrap_err().to_string();
        assert!(err.contains("over the 1-byte limit"), "{err}");
        // Behind a long piece (compared whole, not byte by byte), and at the very end.
        let text = "twenty bytes of text";
        let mut bytes = encode(&(text, 5u32));
        assert_eq!(
            decode::<(String, u32)>(&bytes, 64).unwrap(),
            (text.into(), 5)
        );
        bytes.pop();
        bytes.extend_from_slice(&[0x85, 0x00]);
        let err = decode::<(String, u32)>(&bytes, 64).unwrap_err().to_string();
        assert!(err.contains("not in canonical form"), "{err}");
    }

    #[test]
    fn the_crc_of_an_encoding_is_the_crc_of_its_bytes() {
        for len in [0, 1, 15, 63, 64, 65, 200] {
            let value: (u64, Vec<u8>, String) = (len as u64, vec![7; len], "k".repeat(len / 2));
            for prefix in [&[][..], &[1, 2, 3][..], &[9; 70][..]] {
                let mut bytes = prefix.to_vec();
                bytes.extend(encode(&value));
                assert_eq!(
                    crc32_after(prefix, &value),
                    crc32fast::hash(&bytes),
                    "{len}"
                );
            }
        }
    }

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
