//! Pastella addresses: `varint(0x198004) ‖ public key (32) ‖ checksum (4)` in block Base58,
//! 54 characters starting with `PAS1`. Validation follows the daemon and wallet
//! (`validateAddresses` + `parseAccountAddressString` + `check_key`) with their error codes and
//! messages, so a miner sees exactly what the wallet would later say about the address.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;

use super::keccak::keccak;
use super::{base58, varint};

/// The address prefix `PASTELLA_PUBLIC_ADDRESS_BASE58_PREFIX`.
pub const ADDRESS_PREFIX: u64 = 0x198004;
/// Text length of every standard address.
pub const ADDRESS_LENGTH: usize = 54;
/// What every address text starts with (the wallet's `addressPrefix`).
pub const ADDRESS_TEXT_PREFIX: &str = "PAS";

/// A valid Pastella address: its single ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    key: [u8; 32],
}

/// Why an address is invalid, with the daemon/wallet error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Code 12.
    #[error("The address should be 54 characters, but it is {0} characters. Integrated addresses are not supported in transparent mode.")]
    WrongLength(usize),
    /// Code 13.
    #[error("The address does not have the correct prefix corresponding to this coin - it appears to be an address for another cryptocurrency.")]
    WrongPrefix,
    /// Code 15 (not Base58, bad checksum, wrong embedded prefix, wrong size, or not a curve
    /// point). The daemon's validator never uses code 14 (`ADDRESS_NOT_BASE58`): characters
    /// outside the Base58 alphabet fail the parse and get 15 too.
    #[error("The address given is not valid. Possibly invalid checksum. Most likely a typo.")]
    NotValid,
}

impl AddressError {
    /// The wallet API / daemon error code (`src/errors/Errors.h`).
    pub fn code(&self) -> i64 {
        match self {
            AddressError::WrongLength(_) => 12,
            AddressError::WrongPrefix => 13,
            AddressError::NotValid => 15,
        }
    }
}

fn payload_prefix() -> Vec<u8> {
    let mut out = Vec::with_capacity(3);
    varint::write(&mut out, ADDRESS_PREFIX);
    out
}

impl Address {
    /// The address for a public key. Does not check that the key is a curve point.
    pub fn from_key(key: [u8; 32]) -> Address {
        Address { key }
    }

    /// The 32-byte public key coinbase outputs pay.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Parses and fully validates an address text, in the daemon's order of checks.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let length = text.chars().count();
        if length != ADDRESS_LENGTH {
            return Err(AddressError::WrongLength(length));
        }
        if !text.starts_with(ADDRESS_TEXT_PREFIX) {
            return Err(AddressError::WrongPrefix);
        }
        let data = base58::decode(text).map_err(|_| AddressError::NotValid)?;
        let prefix = payload_prefix();
        if data.len() != prefix.len() + 32 + 4 || !data.starts_with(&prefix) {
            return Err(AddressError::NotValid);
        }
        let (body, checksum) = data.split_at(data.len() - 4);
        if keccak(body).0[..4] != *checksum {
            return Err(AddressError::NotValid);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&body[prefix.len()..]);
        if CompressedEdwardsY(key).decompress().is_none() {
            return Err(AddressError::NotValid);
        }
        Ok(Address { key })
    }

    /// The 54-character text form.
    pub fn encode(&self) -> String {
        let mut data = payload_prefix();
        data.extend_from_slice(&self.key);
        let checksum = keccak(&data);
        data.extend_from_slice(&checksum.0[..4]);
        base58::encode(&data)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.encode())
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENESIS_ADDR: &str = "PAS18z7m9DGbJFoVv6HiGoiwxNG5mLoniSEFWkguBKt59JSHPHjYaa";
    const GENESIS_KEY: &str = "004a339087cd0d26f4923abe48fac9a50f948b5e4b96d4c05ebfb4d18adb0a23";
    const DOCS_ADDR: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";
    const DOCS_KEY: &str = "69499635a9e294755ad720fcb1cdf1fa4e776ed069bf537886bc48f5467465a0";

    #[test]
    fn spec_addresses_decode_to_their_keys_and_re_encode() {
        for (text, key) in [(GENESIS_ADDR, GENESIS_KEY), (DOCS_ADDR, DOCS_KEY)] {
            let addr = Address::parse(text).unwrap();
            assert_eq!(hex::encode(addr.key()), key);
            assert_eq!(addr.encode(), text);
        }
    }

    #[test]
    fn zero_key_encoding_matches_spec() {
        let zero = Address::from_key([0; 32]);
        assert_eq!(zero.encode(), "PAS18xDkjoM11111111111111111111111111111111111111EVPpi");
        // y = 0 is a (small-order) curve point, which the daemon's check_key accepts too.
        assert_eq!(Address::parse(&zero.encode()), Ok(zero));
    }

    #[test]
    fn key_off_the_curve_is_rejected_despite_a_valid_checksum() {
        let off_curve = (1u8..=255)
            .map(|y| {
                let mut key = [0u8; 32];
                key[0] = y;
                key
            })
            .find(|key| CompressedEdwardsY(*key).decompress().is_none())
            .expect("some small y is not on the curve");
        let text = Address::from_key(off_curve).encode();
        assert_eq!(Address::parse(&text), Err(AddressError::NotValid));
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        for pos in 3..DOCS_ADDR.len() {
            for c in alphabet.chars().step_by(7) {
                let mut changed: Vec<char> = DOCS_ADDR.chars().collect();
                if changed[pos] == c {
                    continue;
                }
                changed[pos] = c;
                let text: String = changed.into_iter().collect();
                assert!(Address::parse(&text).is_err(), "{text} accepted");
            }
        }
    }

    #[test]
    fn negative_cases_carry_daemon_codes_and_messages() {
        let short = &DOCS_ADDR[..53];
        let err = Address::parse(short).unwrap_err();
        assert_eq!(err.code(), 12);
        assert_eq!(
            err.to_string(),
            "The address should be 54 characters, but it is 53 characters. Integrated addresses are not supported in transparent mode."
        );
        assert_eq!(Address::parse(&format!("{DOCS_ADDR}1")).unwrap_err(), AddressError::WrongLength(55));
        let monero = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A";
        assert_eq!(Address::parse(monero).unwrap_err().code(), 12);
        let wrong_prefix = format!("XAS{}", &DOCS_ADDR[3..]);
        assert_eq!(Address::parse(&wrong_prefix).unwrap_err().code(), 13);
        let not_base58 = format!("{}0{}", &DOCS_ADDR[..10], &DOCS_ADDR[11..]);
        assert_eq!(Address::parse(&not_base58).unwrap_err().code(), 15);
        let last = DOCS_ADDR.chars().last().unwrap();
        let typo = format!("{}{}", &DOCS_ADDR[..53], if last == 'F' { 'G' } else { 'F' });
        let err = Address::parse(&typo).unwrap_err();
        assert_eq!(err.code(), 15);
        assert_eq!(err.to_string(), "The address given is not valid. Possibly invalid checksum. Most likely a typo.");
    }
}
