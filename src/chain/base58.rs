//! CryptoNote block Base58: the input is cut into 8-byte blocks, each encoded as 11 characters
//! (a shorter last block uses the length table), so the text length is fixed by the byte length.

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const FULL_BLOCK: usize = 8;
const FULL_ENCODED_BLOCK: usize = 11;
/// Encoded length of a block of `i` bytes.
const ENCODED_BLOCK_SIZES: [usize; 9] = [0, 2, 3, 5, 6, 7, 9, 10, 11];

/// Why a text is not block Base58.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base58Error {
    /// A character outside the Base58 alphabet.
    #[error("character {0:?} is not in the Base58 alphabet")]
    InvalidCharacter(char),
    /// The last block has a length that no byte count encodes to.
    #[error("invalid Base58 length")]
    InvalidLength,
    /// A block decodes to a number too large for its byte size.
    #[error("Base58 block overflows")]
    Overflow,
}

fn digit(c: u8) -> Option<u64> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u64)
}

fn encode_block(block: &[u8], out: &mut Vec<u8>) {
    let mut num = block.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let size = ENCODED_BLOCK_SIZES[block.len()];
    let start = out.len();
    out.resize(start + size, ALPHABET[0]);
    let mut i = size;
    while num > 0 {
        i -= 1;
        out[start + i] = ALPHABET[(num % 58) as usize];
        num /= 58;
    }
}

/// Encodes bytes as block Base58.
pub fn encode(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(data.len().div_ceil(FULL_BLOCK) * FULL_ENCODED_BLOCK);
    for block in data.chunks(FULL_BLOCK) {
        encode_block(block, &mut out);
    }
    // Only alphabet characters were written.
    String::from_utf8(out).unwrap_or_default()
}

fn decode_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), Base58Error> {
    let size = ENCODED_BLOCK_SIZES.iter().position(|&s| s == block.len()).ok_or(Base58Error::InvalidLength)?;
    let mut num: u128 = 0;
    for &c in block {
        let d = digit(c).ok_or(Base58Error::InvalidCharacter(c as char))?;
        num = num * 58 + u128::from(d);
    }
    if num >> (8 * size) != 0 {
        return Err(Base58Error::Overflow);
    }
    let bytes = (num as u64).to_be_bytes();
    out.extend_from_slice(&bytes[FULL_BLOCK - size..]);
    Ok(())
}

/// Decodes block Base58.
pub fn decode(text: &str) -> Result<Vec<u8>, Base58Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / FULL_ENCODED_BLOCK * FULL_BLOCK + FULL_BLOCK);
    for block in bytes.chunks(FULL_ENCODED_BLOCK) {
        decode_block(block, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_text() {
        assert_eq!(decode("0"), Err(Base58Error::InvalidLength));
        assert_eq!(decode("1l"), Err(Base58Error::InvalidCharacter('l')));
        assert_eq!(decode("1111"), Err(Base58Error::InvalidLength));
        // 58^2 - 1 does not fit in one byte.
        assert_eq!(decode("zz"), Err(Base58Error::Overflow));
        assert_eq!(decode("zzzzzzzzzzz"), Err(Base58Error::Overflow));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = encode(&data);
            prop_assert_eq!(decode(&text).unwrap(), data);
        }

        #[test]
        fn random_text_never_panics(text in "[1-9A-Za-z]{0,70}") {
            let _ = decode(&text);
        }
    }
}
