//! A 32-byte hash (block id, seed, tx hash, public key) with lower-case hex text form.

use std::fmt;
use std::str::FromStr;

/// 32 raw bytes, displayed and (de)serialized as 64 lower-case hex characters, byte order as stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// A hex string that is not exactly 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters, got {0:?}")]
pub struct HexError(pub String);

impl Hash {
    /// All zero bytes.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Hash, HexError> {
        let mut out = [0u8; 32];
        if text.len() != 64 || hex::decode_to_slice(text, &mut out).is_err() {
            let shown: String = text.chars().take(80).collect();
            return Err(HexError(shown));
        }
        Ok(Hash(out))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for Hash {
    fn from(bytes: [u8; 32]) -> Self {
        Hash(bytes)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input length.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::from_hex(s)
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let text = "c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c7";
        let h = Hash::from_hex(text).unwrap();
        assert_eq!(h.to_hex(), text);
        assert_eq!(h.to_string(), text);
        assert_eq!(Hash::from_hex(&text.to_uppercase()).unwrap(), h);
        assert!(Hash::from_hex(&text[..63]).is_err());
        assert!(Hash::from_hex(&format!("{}zz", &text[..62])).is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
    }
}
