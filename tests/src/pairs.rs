//! The ABI's serialisation of maps (HTTP fields, gRPC metadata, and map-valued properties):
//! a little-endian `u32` count, then `u32` key and value lengths for each pair, then each key
//! and value followed by a NUL byte.

/// Largest serialised map accepted from the module (proxy-wasm-cpp-host bounds it too), so a
/// bogus count cannot make the host allocate without limit.
pub const MAX_SERIALIZED_PAIRS_BYTES: usize = 1 << 20;

/// Serialises pairs as the ABI lays them out. An empty list gives 4 zero bytes (a count of 0);
/// host calls that return an empty map send a zero-length value instead (see `hostcalls`).
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.as_ref().len() + v.as_ref().len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses a serialised map. Like proxy-wasm-cpp-host's `PairsUtil::toPairs`, malformed input
/// (short, a count that does not fit, a missing NUL terminator, or over the size bound) yields
/// `None`; callers treat that as an empty map, as the C++ host does.
pub fn decode(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.len() > MAX_SERIALIZED_PAIRS_BYTES {
        return None;
    }
    let count = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let sizes_end = 4usize.checked_add(count.checked_mul(8)?)?;
    let sizes = bytes.get(4..sizes_end)?;
    let mut pos = sizes_end;
    let mut pairs = Vec::with_capacity(count);
    for size in sizes.chunks_exact(8) {
        let key_len = u32::from_le_bytes(size[0..4].try_into().ok()?) as usize;
        let value_len = u32::from_le_bytes(size[4..8].try_into().ok()?) as usize;
        let key = take_terminated(bytes, &mut pos, key_len)?;
        let value = take_terminated(bytes, &mut pos, value_len)?;
        pairs.push((key.to_vec(), value.to_vec()));
    }
    Some(pairs)
}

fn take_terminated<'a>(bytes: &'a [u8], pos: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(len)?;
    let value = bytes.get(*pos..end)?;
    if *bytes.get(end)? != 0 {
        return None;
    }
    *pos = end + 1;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips() {
        // The spec's example map {"a": "1", "b": "22"}.
        let bytes = encode(&[("a", "1"), ("b", "22")]);
        assert_eq!(
            decode(&bytes).unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"22".to_vec())
            ]
        );
    }

    #[test]
    fn malformed_maps_are_rejected() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[1, 0, 0]), None);
        // count 1 but no sizes
        assert_eq!(decode(&[1, 0, 0, 0]), None);
        // key "a" without its NUL terminator
        let mut bytes = encode(&[("a", "")]);
        bytes[13] = b'x';
        assert_eq!(decode(&bytes), None);
        // a count so large that count * 8 overflows on 32-bit hosts must not panic
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(decode(&[0, 0, 0, 0]), Some(vec![]));
    }
}
