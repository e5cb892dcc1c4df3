//! A parsed block template, immutable and shared (`Arc<Template>`) by every miner session.
//!
//! Parsing splits the coinbase around the reserved bytes and precomputes the merkle branch of
//! the coinbase, so building one miner's job is one keccak of the coinbase, log2(tx count)
//! keccaks for the root and a copy of the header: no allocation, no locks.

use sha3::{Digest, Keccak256};

use super::block::{block_id, extra_fields, Block, BlockLayout, ParseError, TxOut};
use super::tree::{coinbase_branch, root_from_branch};
use super::{varint, Hash};

/// Largest hashing blob: header (≤ 2+2+10+32+4) + root (32) + varint count (≤ 10).
pub const MAX_HASHING_BLOB: usize = 96;

/// Why a `getblocktemplate` answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The blob is not a block.
    #[error("template blob: {0}")]
    Parse(#[from] ParseError),
    /// The coinbase height disagrees with the template's `height`.
    #[error("coinbase height {coinbase} differs from template height {template}")]
    HeightMismatch {
        /// Height in the coinbase input.
        coinbase: u64,
        /// `height` field of the answer.
        template: u64,
    },
    /// `reserved_offset` does not point at an extra-nonce field of `reserve_size` bytes in the
    /// coinbase extra.
    #[error("reserved_offset {offset} is not an extra-nonce field of {size} bytes in the coinbase extra")]
    BadReservedOffset {
        /// The daemon's `reserved_offset`.
        offset: u64,
        /// The reserve size the pool asked for.
        size: usize,
    },
}

/// A miner's hashing blob, on the stack (at most [`MAX_HASHING_BLOB`] bytes).
#[derive(Clone, Copy)]
pub struct HashingBlob {
    bytes: [u8; MAX_HASHING_BLOB],
    len: u8,
    nonce_offset: u8,
}

impl HashingBlob {
    /// The blob bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Writes the 4 nonce bytes as the miner submits them (stored order).
    pub fn set_nonce(&mut self, nonce: [u8; 4]) {
        let at = self.nonce_offset as usize;
        self.bytes[at..at + 4].copy_from_slice(&nonce);
    }

    /// The block id of this hashing blob.
    pub fn block_id(&self) -> Hash {
        block_id(self.as_slice())
    }

    /// The lower-case hex form, written into `buf` (no allocation: this runs once per session
    /// in every job fan-out).
    pub fn hex<'b>(&self, buf: &'b mut [u8; 2 * MAX_HASHING_BLOB]) -> &'b str {
        let hex = &mut buf[..2 * self.len as usize];
        hex::encode_to_slice(self.as_slice(), hex).expect("the buffer holds twice the blob");
        std::str::from_utf8(hex).expect("hex digits are ASCII")
    }

    /// Writes the lower-case hex form into `out` (appending).
    pub fn write_hex(&self, out: &mut String) {
        out.push_str(self.hex(&mut [0; 2 * MAX_HASHING_BLOB]));
    }
}

impl std::fmt::Debug for HashingBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashingBlob({})", hex::encode(self.as_slice()))
    }
}

/// An immutable, pre-split block template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Index of the block being built.
    pub height: u64,
    /// Network difficulty the block must meet.
    pub difficulty: u64,
    /// RandomX key for this height.
    pub seed_hash: Hash,
    /// RandomX key for the next height.
    pub next_seed_hash: Hash,
    /// The parsed block (nonce 0, reserved bytes 0).
    pub block: Block,
    /// Offsets in [`Template::blob`].
    pub layout: BlockLayout,
    /// Offset of the first reserved byte in the blob.
    pub reserved_offset: usize,
    /// Number of reserved bytes the pool may write.
    pub reserved_size: usize,
    /// The template blob as the daemon sent it.
    blob: Vec<u8>,
    /// Siblings of the coinbase on its path to the tree root.
    branch: Vec<Hash>,
}

impl Template {
    /// Parses the `getblocktemplate` answer fields. `reserve_size` is what the pool asked for.
    pub fn parse(
        blob: Vec<u8>,
        reserved_offset: u64,
        reserve_size: usize,
        height: u64,
        difficulty: u64,
        seed_hash: Hash,
        next_seed_hash: Hash,
    ) -> Result<Template, TemplateError> {
        let (block, layout) = Block::parse(&blob)?;
        if block.coinbase.height != height {
            return Err(TemplateError::HeightMismatch { coinbase: block.coinbase.height, template: height });
        }
        let bad_offset = TemplateError::BadReservedOffset { offset: reserved_offset, size: reserve_size };
        let offset = usize::try_from(reserved_offset).map_err(|_| bad_offset.clone())?;
        // The reserved bytes must be exactly the data of the extra-nonce field.
        let fields = extra_fields(&block.coinbase.extra);
        match fields.nonce {
            Some((at, len)) if layout.extra_start + at == offset && len == reserve_size => {}
            _ => return Err(bad_offset),
        }
        let branch = coinbase_branch(&block.tx_hashes);
        Ok(Template {
            height,
            difficulty,
            seed_hash,
            next_seed_hash,
            block,
            layout,
            reserved_offset: offset,
            reserved_size: reserve_size,
            blob,
            branch,
        })
    }

    /// The template blob as received.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Id of the block this template builds on.
    pub fn prev_id(&self) -> Hash {
        self.block.header.prev_id
    }

    /// Coinbase hash with `extra_nonce` written at the start of the reserved bytes.
    fn coinbase_hash(&self, extra_nonce: &[u8]) -> Hash {
        let n = extra_nonce.len().min(self.reserved_size);
        let cb_start = self.layout.coinbase_start;
        let res_start = self.reserved_offset;
        let mut hasher = Keccak256::new();
        hasher.update(&self.blob[cb_start..res_start]);
        hasher.update(&extra_nonce[..n]);
        hasher.update(&self.blob[res_start + n..self.layout.coinbase_end]);
        Hash(hasher.finalize().into())
    }

    /// The hashing blob for a job whose reserved bytes start with `extra_nonce` (nonce 0).
    pub fn hashing_blob(&self, extra_nonce: &[u8]) -> HashingBlob {
        let root = root_from_branch(self.coinbase_hash(extra_nonce), &self.branch);
        let header = &self.blob[..self.layout.nonce_offset + 4];
        let mut bytes = [0u8; MAX_HASHING_BLOB];
        bytes[..header.len()].copy_from_slice(header);
        // Miners must receive zero nonce bytes (xmrig's nicehash detection).
        bytes[self.layout.nonce_offset..self.layout.nonce_offset + 4].fill(0);
        let mut len = header.len();
        bytes[len..len + 32].copy_from_slice(&root.0);
        len += 32;
        len += varint::write_slice(&mut bytes[len..], 1 + self.block.tx_hashes.len() as u64);
        HashingBlob { bytes, len: len as u8, nonce_offset: self.layout.nonce_offset as u8 }
    }

    /// The full block blob for `submitblock`: the template with `extra_nonce` and `nonce` written.
    pub fn block_blob(&self, extra_nonce: &[u8], nonce: [u8; 4]) -> Vec<u8> {
        let mut blob = self.blob.clone();
        let n = extra_nonce.len().min(self.reserved_size);
        blob[self.reserved_offset..self.reserved_offset + n].copy_from_slice(&extra_nonce[..n]);
        blob[self.layout.nonce_offset..self.layout.nonce_offset + 4].copy_from_slice(&nonce);
        blob
    }

    /// The coinbase output paying `key`, if any (the pool's own reward: never the staking output).
    pub fn output_to(&self, key: &[u8; 32]) -> Option<TxOut> {
        self.block.coinbase.outputs.iter().find(|o| &o.key == key).copied()
    }

    /// Number of transactions besides the coinbase.
    pub fn tx_count(&self) -> usize {
        self.block.tx_hashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::params::genesis_id;

    /// Spec §12.3, verified with the daemon's own code.
    pub const SYNTHETIC_BLOB: &str = concat!(
        "0200c0c086cd06c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c70000000001f20701ffe807018088debe0102",
        "69499635a9e294755ad720fcb1cdf1fa4e776ed069bf537886bc48f5467465a03401c18acd318998cdff799152afa2fd8a17c9b77cc4cc0eae",
        "d27e7dfe58e4143f0902110000000000000000000000000000000000025fe7f977e71dba2ea1a68e21057beebb9be2ac30c6410aa38d4f3fbe",
        "41dcffd2f2ee15ea639b73fa3db9b34a245bdfa015c260c598b211bf05a1ecc4b3e3b4f2"
    );

    fn synthetic() -> Template {
        let seed = genesis_id();
        Template::parse(hex::decode(SYNTHETIC_BLOB).unwrap(), 125, 17, 1000, 5000, seed, seed).unwrap()
    }

    const FILL: [u8; 8] = [0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn synthetic_template_end_to_end() {
        let t = synthetic();
        assert_eq!(t.blob().len(), 207);
        assert_eq!(t.layout.nonce_offset, 39);
        assert_eq!(t.tx_count(), 2);
        assert_eq!(t.block.coinbase.unlock_time, 1010);
        assert_eq!(t.coinbase_hash(&FILL).to_hex(), "e4eb17ee05ddd5137526845acfa5ce38122ea4bd51f06319eb57d68368c39c99");
        let mut blob = t.hashing_blob(&FILL);
        assert_eq!(
            hex::encode(blob.as_slice()),
            "0200c0c086cd06c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c7000000006f9705df6bf6359844663333f7d897bece6ae35b5272f6c8f910fbc531d748fa03"
        );
        blob.set_nonce(hex::decode("18070000").unwrap().try_into().unwrap());
        let mut text = String::new();
        blob.write_hex(&mut text);
        assert_eq!(
            text,
            "0200c0c086cd06c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c7180700006f9705df6bf6359844663333f7d897bece6ae35b5272f6c8f910fbc531d748fa03"
        );
        assert_eq!(blob.block_id().to_hex(), "e3f738317f6e2951be9158a52e47c847191381d9d921459ac3eb424a3bc44e70");
        let submit = t.block_blob(&FILL, [0x18, 0x07, 0, 0]);
        assert_eq!(
            hex::encode(&submit),
            concat!(
                "0200c0c086cd06c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c71807000001f20701ffe807018088debe0102",
                "69499635a9e294755ad720fcb1cdf1fa4e776ed069bf537886bc48f5467465a03401c18acd318998cdff799152afa2fd8a17c9b77cc4cc0eae",
                "d27e7dfe58e4143f09021100000001deadbeef000000000000000000025fe7f977e71dba2ea1a68e21057beebb9be2ac30c6410aa38d4f3fbe",
                "41dcffd2f2ee15ea639b73fa3db9b34a245bdfa015c260c598b211bf05a1ecc4b3e3b4f2"
            )
        );
        // The submitted block, parsed independently, has the same id as the job's blob.
        let (parsed, _) = Block::parse(&submit).unwrap();
        assert_eq!(parsed.id(), blob.block_id());
        let mut other = t.hashing_blob(&FILL);
        other.set_nonce([0x2a, 0, 0, 0]);
        assert_eq!(other.block_id().to_hex(), "dddad16756a310406e5b32854a2f5a7fd68acbb946bcc67b241b6f1df5ac3924");
    }

    #[test]
    fn pool_output_and_key_check() {
        let t = synthetic();
        let key: [u8; 32] = hex::decode("69499635a9e294755ad720fcb1cdf1fa4e776ed069bf537886bc48f5467465a0")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(t.output_to(&key).map(|o| o.amount), Some(400_000_000));
        assert_eq!(t.output_to(&[1; 32]), None);
    }

    #[test]
    fn rejects_wrong_offsets_and_heights() {
        let seed = genesis_id();
        let blob = hex::decode(SYNTHETIC_BLOB).unwrap();
        for (offset, size) in [(124, 17), (126, 17), (125, 16), (125, 18), (0, 17), (u64::MAX, 17)] {
            let err = Template::parse(blob.clone(), offset, size, 1000, 1, seed, seed).unwrap_err();
            assert!(matches!(err, TemplateError::BadReservedOffset { .. }), "{offset}/{size}: {err}");
        }
        let err = Template::parse(blob, 125, 17, 999, 1, seed, seed).unwrap_err();
        assert_eq!(err, TemplateError::HeightMismatch { coinbase: 1000, template: 999 });
    }
}
