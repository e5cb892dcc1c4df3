//! Block blobs (spec §2.1-§2.4): the cryptonote "blob type 0" layout, parsed with byte offsets
//! kept so a pool can write its extra nonce and the miner's nonce in place.

use super::keccak::{keccak, keccak_parts};
use super::tree::tree_hash;
use super::varint::{self, VarintError};
use super::Hash;

/// Highest block major version the daemon accepts.
pub const MAX_MAJOR_VERSION: u64 = 2;
/// The only transaction version the daemon accepts.
pub const TX_VERSION: u64 = 1;
/// Input tag of a coinbase (`BaseInput`).
pub const TAG_BASE_INPUT: u8 = 0xff;
/// Output tag of a key output, the only output type.
pub const TAG_KEY_OUTPUT: u8 = 0x02;
/// Extra tags (`src/common/TransactionExtra.h`).
pub const EXTRA_TAG_PADDING: u8 = 0x00;
/// Extra tag of the 32-byte transaction public key.
pub const EXTRA_TAG_PUBKEY: u8 = 0x01;
/// Extra tag of the extra-nonce field (one length byte, then at most 255 bytes).
pub const EXTRA_TAG_NONCE: u8 = 0x02;

/// Upper bound on coinbase outputs accepted by the parser (the network allows 90 per tx).
const MAX_OUTPUTS: u64 = 1024;

/// Why a blob is not a well-formed block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A varint field could not be read.
    #[error("{field}: {source}")]
    Varint {
        /// The field being read.
        field: &'static str,
        /// What was wrong with it.
        source: VarintError,
    },
    /// The blob ended inside a fixed-size field.
    #[error("blob truncated in {0}")]
    Truncated(&'static str),
    /// A field has a value the daemon rejects.
    #[error("{field} is {value}, {expected}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What the daemon accepts.
        expected: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{0} trailing bytes after the block")]
    TrailingBytes(usize),
}

/// Block header (fields 1-5 of §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// 1 for block index 0-1, 2 afterwards.
    pub major_version: u8,
    /// 0 (or 1).
    pub minor_version: u8,
    /// Unix seconds.
    pub timestamp: u64,
    /// Id of the previous block.
    pub prev_id: Hash,
    /// The 4 nonce bytes as stored (little-endian u32).
    pub nonce: u32,
}

/// One coinbase output: an amount paid to a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOut {
    /// Atomic units.
    pub amount: u64,
    /// Recipient public key (the address key, transparent chain).
    pub key: [u8; 32],
}

/// The coinbase (miner) transaction of §2.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coinbase {
    /// `height + 10` in valid blocks.
    pub unlock_time: u64,
    /// Index of the block this coinbase belongs to.
    pub height: u64,
    /// Output 0 pays the miner; an optional output 1 carries matured staking rewards.
    pub outputs: Vec<TxOut>,
    /// Raw extra bytes (tx pubkey, extra nonce, padding).
    pub extra: Vec<u8>,
}

/// A full block: header, coinbase and the hashes of the other transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Header fields.
    pub header: BlockHeader,
    /// The coinbase transaction.
    pub coinbase: Coinbase,
    /// Hashes of the non-coinbase transactions, in block order.
    pub tx_hashes: Vec<Hash>,
}

/// Byte offsets of a parsed blob, for writing into it in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// Offset of the 4 nonce bytes (39 for all current timestamps).
    pub nonce_offset: usize,
    /// First byte of the coinbase.
    pub coinbase_start: usize,
    /// One past the last byte of the coinbase.
    pub coinbase_end: usize,
    /// First byte of the coinbase extra (after its length varint).
    pub extra_start: usize,
    /// One past the last byte of the coinbase extra.
    pub extra_end: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self, field: &'static str) -> Result<u64, ParseError> {
        varint::read(self.buf, &mut self.pos).map_err(|source| ParseError::Varint { field, source })
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(ParseError::Truncated(field))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array32(&mut self, field: &'static str) -> Result<[u8; 32], ParseError> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.bytes(32, field)?);
        Ok(out)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(self.bytes(1, field)?[0])
    }
}

fn bad(field: &'static str, value: u64, expected: &'static str) -> ParseError {
    ParseError::BadValue { field, value, expected }
}

impl Block {
    /// Parses a full block blob (a template or a `submitblock` payload) and its layout.
    pub fn parse(blob: &[u8]) -> Result<(Block, BlockLayout), ParseError> {
        let mut r = Reader { buf: blob, pos: 0 };
        let major = r.varint("major_version")?;
        if major == 0 || major > MAX_MAJOR_VERSION {
            return Err(bad("major_version", major, "expected 1 or 2"));
        }
        let minor = r.varint("minor_version")?;
        if minor > 255 {
            return Err(bad("minor_version", minor, "expected a byte"));
        }
        let timestamp = r.varint("timestamp")?;
        let prev_id = Hash(r.array32("prev_id")?);
        let nonce_offset = r.pos;
        let nonce_bytes = r.bytes(4, "nonce")?;
        let nonce = u32::from_le_bytes([nonce_bytes[0], nonce_bytes[1], nonce_bytes[2], nonce_bytes[3]]);

        let coinbase_start = r.pos;
        let version = r.varint("coinbase version")?;
        if version != TX_VERSION {
            return Err(bad("coinbase version", version, "expected 1"));
        }
        let unlock_time = r.varint("unlock_time")?;
        let inputs = r.varint("input count")?;
        if inputs != 1 {
            return Err(bad("coinbase input count", inputs, "expected 1"));
        }
        let tag = r.byte("input tag")?;
        if tag != TAG_BASE_INPUT {
            return Err(bad("coinbase input tag", u64::from(tag), "expected 0xff"));
        }
        let height = r.varint("coinbase height")?;
        let count = r.varint("output count")?;
        if count == 0 || count > MAX_OUTPUTS {
            return Err(bad("coinbase output count", count, "expected 1..=1024"));
        }
        let mut outputs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let amount = r.varint("output amount")?;
            let tag = r.byte("output tag")?;
            if tag != TAG_KEY_OUTPUT {
                return Err(bad("output tag", u64::from(tag), "expected 0x02"));
            }
            let key = r.array32("output key")?;
            outputs.push(TxOut { amount, key });
        }
        let extra_len = r.varint("extra length")?;
        let extra_len = usize::try_from(extra_len).map_err(|_| ParseError::Truncated("extra"))?;
        let extra_start = r.pos;
        let extra = r.bytes(extra_len, "extra")?.to_vec();
        let extra_end = r.pos;
        let coinbase_end = r.pos;

        let tx_count = r.varint("tx count")?;
        if tx_count > (blob.len() / 32) as u64 {
            return Err(ParseError::Truncated("tx hashes"));
        }
        let mut tx_hashes = Vec::with_capacity(tx_count as usize);
        for _ in 0..tx_count {
            tx_hashes.push(Hash(r.array32("tx hash")?));
        }
        if r.pos != blob.len() {
            return Err(ParseError::TrailingBytes(blob.len() - r.pos));
        }
        let block = Block {
            header: BlockHeader { major_version: major as u8, minor_version: minor as u8, timestamp, prev_id, nonce },
            coinbase: Coinbase { unlock_time, height, outputs, extra },
            tx_hashes,
        };
        let layout = BlockLayout { nonce_offset, coinbase_start, coinbase_end, extra_start, extra_end };
        Ok((block, layout))
    }

    /// Serializes the header fields 1-5.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        let h = &self.header;
        varint::write(&mut out, u64::from(h.major_version));
        varint::write(&mut out, u64::from(h.minor_version));
        varint::write(&mut out, h.timestamp);
        out.extend_from_slice(&h.prev_id.0);
        out.extend_from_slice(&h.nonce.to_le_bytes());
        out
    }

    /// Serializes the coinbase transaction.
    pub fn coinbase_bytes(&self) -> Vec<u8> {
        let c = &self.coinbase;
        let mut out = Vec::with_capacity(64 + 42 * c.outputs.len() + c.extra.len());
        varint::write(&mut out, TX_VERSION);
        varint::write(&mut out, c.unlock_time);
        varint::write(&mut out, 1);
        out.push(TAG_BASE_INPUT);
        varint::write(&mut out, c.height);
        varint::write(&mut out, c.outputs.len() as u64);
        for o in &c.outputs {
            varint::write(&mut out, o.amount);
            out.push(TAG_KEY_OUTPUT);
            out.extend_from_slice(&o.key);
        }
        varint::write(&mut out, c.extra.len() as u64);
        out.extend_from_slice(&c.extra);
        out
    }

    /// Serializes the whole block blob.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.extend_from_slice(&self.coinbase_bytes());
        varint::write(&mut out, self.tx_hashes.len() as u64);
        for h in &self.tx_hashes {
            out.extend_from_slice(&h.0);
        }
        out
    }

    /// The coinbase transaction hash: keccak of its bytes.
    pub fn coinbase_hash(&self) -> Hash {
        keccak(&self.coinbase_bytes())
    }

    /// The tree root over the coinbase hash and the transaction hashes.
    pub fn tree_root(&self) -> Hash {
        let mut leaves = Vec::with_capacity(1 + self.tx_hashes.len());
        leaves.push(self.coinbase_hash());
        leaves.extend_from_slice(&self.tx_hashes);
        tree_hash(&leaves)
    }

    /// The hashing blob miners hash (§2.3): header ‖ tree root ‖ varint(1 + tx count).
    pub fn hashing_blob(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.extend_from_slice(&self.tree_root().0);
        varint::write(&mut out, 1 + self.tx_hashes.len() as u64);
        out
    }

    /// The block id (§2.4).
    pub fn id(&self) -> Hash {
        block_id(&self.hashing_blob())
    }

    /// The sum of all coinbase outputs (what `block_header.reward` reports).
    pub fn coinbase_total(&self) -> u64 {
        self.coinbase.outputs.iter().map(|o| o.amount).fold(0u64, u64::saturating_add)
    }
}

/// Block id of a hashing blob: `keccak(varint(len) ‖ hashing_blob)`.
pub fn block_id(hashing_blob: &[u8]) -> Hash {
    let mut prefix = Vec::with_capacity(2);
    varint::write(&mut prefix, hashing_blob.len() as u64);
    keccak_parts(&[&prefix, hashing_blob])
}

/// Positions of the fields in a coinbase extra, found by walking its tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtraFields {
    /// Offset (within the extra) of the 32-byte tx public key, if present.
    pub pubkey: Option<usize>,
    /// Offset (within the extra) of the extra-nonce data and its length, if present.
    pub nonce: Option<(usize, usize)>,
}

/// Walks the tags of a coinbase extra up to the first tag it does not know.
pub fn extra_fields(extra: &[u8]) -> ExtraFields {
    let mut fields = ExtraFields::default();
    let mut pos = 0;
    while pos < extra.len() {
        match extra[pos] {
            EXTRA_TAG_PADDING => break,
            EXTRA_TAG_PUBKEY if pos + 33 <= extra.len() => {
                fields.pubkey.get_or_insert(pos + 1);
                pos += 33;
            }
            EXTRA_TAG_NONCE if pos + 2 <= extra.len() => {
                let len = extra[pos + 1] as usize;
                if pos + 2 + len > extra.len() {
                    break;
                }
                fields.nonce.get_or_insert((pos + 2, len));
                pos += 2 + len;
            }
            _ => break,
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::params::genesis_block;
    use proptest::prelude::*;

    #[test]
    fn genesis_vectors() {
        let genesis = genesis_block();
        assert_eq!(
            genesis.coinbase_hash().to_hex(),
            "80ee7502ab8e6ef3f3f89a6738737e5325ffc2b71b600e2233d41592572ed88d"
        );
        let blob = genesis.serialize();
        assert_eq!(blob.len(), 124);
        assert_eq!(
            hex::encode(&blob),
            concat!(
                "0100b0b082cd060000000000000000000000000000000000000000000000000000000000000000",
                "46000000",
                "010001ff00018080d49ca7981202004a339087cd0d26f4923abe48fac9a50f948b5e4b96d4c05ebfb4d18adb0a232101c18acd318998cdff799152afa2fd8a17c9b77cc4cc0eaed27e7dfe58e4143f09",
                "00"
            )
        );
        assert_eq!(
            hex::encode(genesis.hashing_blob()),
            "0100b0b082cd0600000000000000000000000000000000000000000000000000000000000000004600000080ee7502ab8e6ef3f3f89a6738737e5325ffc2b71b600e2233d41592572ed88d01"
        );
        assert_eq!(genesis.id().to_hex(), "c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c7");
        let (parsed, layout) = Block::parse(&blob).unwrap();
        assert_eq!(parsed, genesis);
        assert_eq!(layout.nonce_offset, 39);
        assert_eq!(parsed.coinbase_total(), 80_000_000_000_000);
    }

    #[test]
    fn rejects_bad_versions_and_trailing_bytes() {
        let mut blob = genesis_block().serialize();
        blob.push(0);
        assert_eq!(Block::parse(&blob).unwrap_err(), ParseError::TrailingBytes(1));
        let mut blob = genesis_block().serialize();
        blob[0] = 3;
        assert!(matches!(Block::parse(&blob), Err(ParseError::BadValue { field: "major_version", .. })));
        let mut blob = genesis_block().serialize();
        blob[43] = 2;
        assert!(matches!(Block::parse(&blob), Err(ParseError::BadValue { field: "coinbase version", .. })));
    }

    #[test]
    fn extra_walk_finds_pubkey_and_nonce() {
        let mut extra = vec![EXTRA_TAG_PUBKEY];
        extra.extend_from_slice(&[7; 32]);
        extra.extend_from_slice(&[EXTRA_TAG_NONCE, 17]);
        extra.extend_from_slice(&[0; 17]);
        extra.push(0);
        let f = extra_fields(&extra);
        assert_eq!(f.pubkey, Some(1));
        assert_eq!(f.nonce, Some((35, 17)));
        assert_eq!(extra_fields(&[EXTRA_TAG_NONCE, 200, 1]).nonce, None);
    }

    fn arb_block() -> impl Strategy<Value = Block> {
        (
            1u8..=2,
            0u8..=1,
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), any::<[u8; 32]>()), 1..4),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<[u8; 32]>(), 0..20),
        )
            .prop_map(|(major, minor, ts, prev, nonce, unlock, height, outs, extra, txs)| Block {
                header: BlockHeader {
                    major_version: major,
                    minor_version: minor,
                    timestamp: ts,
                    prev_id: Hash(prev),
                    nonce,
                },
                coinbase: Coinbase {
                    unlock_time: unlock,
                    height,
                    outputs: outs.into_iter().map(|(amount, key)| TxOut { amount, key }).collect(),
                    extra,
                },
                tx_hashes: txs.into_iter().map(Hash).collect(),
            })
    }

    proptest! {
        #[test]
        fn serialize_parse_round_trip(block in arb_block()) {
            let blob = block.serialize();
            let (parsed, layout) = Block::parse(&blob).unwrap();
            prop_assert_eq!(&parsed, &block);
            prop_assert_eq!(parsed.serialize(), blob.clone());
            prop_assert_eq!(&blob[layout.coinbase_start..layout.coinbase_end], &block.coinbase_bytes()[..]);
            prop_assert_eq!(&blob[layout.extra_start..layout.extra_end], &block.coinbase.extra[..]);
            prop_assert_eq!(&blob[layout.nonce_offset..layout.nonce_offset + 4], &block.header.nonce.to_le_bytes()[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Block::parse(&bytes);
        }

        #[test]
        fn mutated_blocks_never_panic(block in arb_block(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut blob = block.serialize();
            let i = pos % blob.len();
            blob[i] = byte;
            let _ = Block::parse(&blob);
            blob.truncate(i);
            let _ = Block::parse(&blob);
        }
    }
}
