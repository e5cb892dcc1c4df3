//! CryptoNote varints: 7 bits per byte, least significant group first, high bit = more follows.
//!
//! Decoding follows the daemon's `read_varint`: it rejects overflow past 64 bits and
//! non-canonical encodings (a trailing zero group), so parse → serialize is the identity.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended before the last byte of the varint.
    #[error("varint truncated")]
    Truncated,
    /// The value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    Overflow,
    /// A redundant trailing zero group (the daemon's `EVARINT_REPRESENT`).
    #[error("varint is not canonically encoded")]
    NonCanonical,
}

/// Appends the varint encoding of `value`.
pub fn write(out: &mut Vec<u8>, value: u64) {
    let mut bytes = [0u8; 10];
    let n = write_slice(&mut bytes, value);
    out.extend_from_slice(&bytes[..n]);
}

/// Writes the varint encoding of `value` at the start of `out` and returns its length (the
/// caller makes room for [`len`]`(value)` bytes; panics otherwise).
pub fn write_slice(out: &mut [u8], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// The encoded length of `value` in bytes (1..=10).
pub fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// Reads a varint at `*pos`, advancing `*pos` past it.
pub fn read(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        let group = u64::from(byte & 0x7f);
        if shift == 63 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && shift != 0 {
                return Err(VarintError::NonCanonical);
            }
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            return Err(VarintError::Overflow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, v);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(1010), [0xf2, 0x07]);
        assert_eq!(enc(1_772_132_400), hex::decode("b0b082cd06").unwrap());
        assert_eq!(enc(400_000_000), hex::decode("8088debe01").unwrap());
        assert_eq!(enc(80_000_000_000_000), hex::decode("8080d49ca79812").unwrap());
        assert_eq!(enc(0x198004), hex::decode("848066").unwrap());
        assert_eq!(enc(u64::MAX).len(), 10);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(read(&[0x80], &mut 0), Err(VarintError::Truncated));
        assert_eq!(read(&[], &mut 0), Err(VarintError::Truncated));
        assert_eq!(read(&[0x80, 0x00], &mut 0), Err(VarintError::NonCanonical));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read(&too_big, &mut 0), Err(VarintError::Overflow));
        assert_eq!(read(&[0xff; 11], &mut 0), Err(VarintError::Overflow));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let bytes = enc(v);
            prop_assert_eq!(bytes.len(), len(v));
            let mut pos = 0;
            prop_assert_eq!(read(&bytes, &mut pos), Ok(v));
            prop_assert_eq!(pos, bytes.len());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut pos = 0;
            if let Ok(v) = read(&bytes, &mut pos) {
                // Whatever decodes re-encodes to exactly the bytes consumed.
                prop_assert_eq!(enc(v), bytes[..pos].to_vec());
            }
        }
    }
}
