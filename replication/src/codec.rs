//! The one binary encoding the engine uses for payloads (log records on disk, messages on the
//! wire, snapshots): bincode with fixed-width integers, a hard byte limit, and no trailing bytes.
//!
//! Fixed-width integers make the encoding canonical: every byte string that decodes re-encodes to
//! exactly the same bytes (bincode rejects non-0/1 booleans, unknown enum tags and invalid UTF-8,
//! and maps decode through [`canonical_map`], which rejects keys out of order), which the fuzz
//! targets check. The limit is enforced while decoding, before any allocation, so
//! a hostile length prefix cannot make us allocate past it.

use bincode::Options;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

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
        assert_eq!(decode::<Holder>(&bytes, 1024).unwrap(), sorted);
        // The same entries swapped: length (8 bytes), then (u32 key, u8 value) twice.
        let mut swapped = bytes[..8].to_vec();
        swapped.extend_from_slice(&bytes[13..18]);
        swapped.extend_from_slice(&bytes[8..13]);
        assert!(decode::<Holder>(&swapped, 1024).is_err(), "out of order");
        let mut twice = bytes[..8].to_vec();
        twice.extend_from_slice(&bytes[8..13]);
        twice.extend_from_slice(&bytes[8..13]);
        assert!(decode::<Holder>(&twice, 1024).is_err(), "a repeated key");
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
