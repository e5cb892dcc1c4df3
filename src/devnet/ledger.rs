//! The simulated node's chain: every known block (main chain and alternatives), the mempool,
//! templates, block validation (everything but the proof of work, which the caller checks
//! without holding the lock) and chain switches by cumulative difficulty.
//!
//! Pure state and rules, no I/O: the RPC layer locks it, asks, and answers.

use std::collections::{BTreeMap, HashMap, HashSet};

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use rand::RngCore;

use crate::chain::block::{extra_fields, EXTRA_TAG_NONCE, EXTRA_TAG_PUBKEY};
use crate::chain::keccak::keccak;
use crate::chain::params::{self, FUTURE_TIME_LIMIT, MINED_MONEY_UNLOCK_WINDOW, TIMESTAMP_CHECK_WINDOW};
use crate::chain::{lwma, seed, varint, Block, BlockHeader, Coinbase, Hash, TxOut};
// The `block_header` answer (§1.4): the shape the pool's client reads.
use crate::node::BlockHeader as HeaderAnswer;

/// A block the simulated node knows.
#[derive(Debug, Clone)]
pub(crate) struct BlockEntry {
    /// The parsed block.
    pub block: Block,
    /// Its id.
    pub id: Hash,
    /// Its index.
    pub height: u64,
    /// The difficulty it had to meet (the cumulative-difficulty delta).
    pub difficulty: u64,
    /// Sum of difficulties from genesis to this block.
    pub cumulative: u64,
    /// Blob size plus the sizes of its transactions.
    pub size: u64,
}

/// A non-coinbase transaction relayed by the devnet wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolTx {
    /// `keccak(blob)`.
    pub hash: Hash,
    /// The synthetic transaction bytes.
    pub blob: Vec<u8>,
    /// Fee, atomic units.
    pub fee: u64,
    /// Recipients (address text as given to the wallet, amount).
    pub destinations: Vec<(String, u64)>,
}

impl PoolTx {
    /// Sum of the destination amounts.
    pub fn amount(&self) -> u64 {
        self.destinations.iter().map(|(_, a)| *a).fold(0, u64::saturating_add)
    }
}

/// Why a submitted block is refused (all map to `-7 "Block not accepted"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Reject {
    #[error("not a block: {0}")]
    Parse(String),
    #[error("unknown parent {0}")]
    UnknownParent(Hash),
    #[error("{0}")]
    Invalid(String),
    #[error("transaction {0} is not in the mempool")]
    MissingTx(Hash),
    #[error("proof of work does not meet difficulty {0}")]
    LowDifficulty(u64),
}

/// What a valid block (proof of work aside) needs to be added.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// Block id.
    pub id: Hash,
    /// Block index.
    pub height: u64,
    /// Difficulty the block must meet.
    pub difficulty: u64,
    /// RandomX key: the main-chain block at `seed_height(height)`.
    pub seed: Hash,
    /// The RandomX input.
    pub hashing_blob: Vec<u8>,
}

/// Where an added block went (`AddBlockErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Extended the main chain.
    Main,
    /// Stored on an alternative chain.
    Alternative,
    /// Its branch became the main chain.
    Switched,
    /// Already known.
    AlreadyExists,
}

/// A template as `getblocktemplate` returns it.
#[derive(Debug, Clone)]
pub(crate) struct TemplateOut {
    pub height: u64,
    pub difficulty: u64,
    pub reserved_offset: u64,
    pub blob: Vec<u8>,
    pub seed_hash: Hash,
    pub next_seed_hash: Hash,
}

/// A random point of the prime-order subgroup (`r·G`), as a real transaction public key is.
pub(crate) fn random_point(rng: &mut impl RngCore) -> [u8; 32] {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order_wide(&wide)).compress().to_bytes()
}

/// A fixed valid public key derived from a label (for the simulated miners and stakers).
pub(crate) fn derived_point(label: &str) -> [u8; 32] {
    EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order(keccak(label.as_bytes()).0)).compress().to_bytes()
}

/// `check_key`: the bytes decompress to a curve point.
pub(crate) fn is_valid_key(key: &[u8; 32]) -> bool {
    CompressedEdwardsY(*key).decompress().is_some()
}

/// `Common::medianValue`: the middle value, or the mean of the two middle values.
fn median(mut values: Vec<u64>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        ((values[n / 2 - 1] as u128 + values[n / 2] as u128) / 2) as u64
    }
}

/// A synthetic transaction in Pastella's wire format (§2.2, regular transactions): one input
/// referencing a made-up output, one key output per destination, a tx public key in extra,
/// one 64-byte signature. Its hash is `keccak(blob)` like a real transaction's.
pub(crate) fn synthetic_tx(destinations: &[([u8; 32], u64)], fee: u64, rng: &mut impl RngCore) -> Vec<u8> {
    let total = destinations.iter().map(|(_, a)| *a).fold(fee, u64::saturating_add);
    let mut out = Vec::with_capacity(200 + 42 * destinations.len());
    varint::write(&mut out, 1); // version
    varint::write(&mut out, 0); // unlock_time
    varint::write(&mut out, 1); // one input
    out.push(0x02); // KeyInput
    varint::write(&mut out, total);
    varint::write(&mut out, 1); // one key offset
    varint::write(&mut out, u64::from(rng.next_u32()));
    let mut spent = [0u8; 32];
    rng.fill_bytes(&mut spent);
    out.extend_from_slice(&spent); // transaction_hash of the spent output
    varint::write(&mut out, 0); // output_index
    varint::write(&mut out, destinations.len() as u64);
    for (key, amount) in destinations {
        varint::write(&mut out, *amount);
        out.push(0x02);
        out.extend_from_slice(key);
    }
    varint::write(&mut out, 33);
    out.push(EXTRA_TAG_PUBKEY);
    out.extend_from_slice(&random_point(rng));
    let mut signature = [0u8; 64];
    rng.fill_bytes(&mut signature);
    out.extend_from_slice(&signature);
    out
}

/// The chain, the mempool and every transaction the wallet relayed.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Every known block by id.
    blocks: HashMap<Hash, BlockEntry>,
    /// Ids in the order they became known (persistence keeps parents before children).
    order: Vec<Hash>,
    /// The main chain: `main[i]` is the id at index `i`.
    main: Vec<Hash>,
    /// Unconfirmed transactions, oldest first.
    mempool: Vec<Hash>,
    /// Every relayed transaction, confirmed or not.
    txs: HashMap<Hash, PoolTx>,
    /// Confirmed transactions: tx hash → main-chain block id.
    tx_block: HashMap<Hash, Hash>,
    /// Staking payouts attached to heights (coinbase output 1).
    staking: BTreeMap<u64, TxOut>,
    /// `--difficulty`, or LWMA when `None`.
    fixed_difficulty: Option<u64>,
}

impl Ledger {
    /// A chain holding only the genesis block.
    pub fn new(fixed_difficulty: Option<u64>) -> Ledger {
        let genesis = params::genesis_block();
        let id = genesis.id();
        let size = genesis.serialize().len() as u64;
        let entry = BlockEntry { block: genesis, id, height: 0, difficulty: 1, cumulative: 1, size };
        Ledger {
            blocks: HashMap::from([(id, entry)]),
            order: vec![id],
            main: vec![id],
            mempool: Vec::new(),
            txs: HashMap::new(),
            tx_block: HashMap::new(),
            staking: BTreeMap::new(),
            fixed_difficulty: fixed_difficulty.map(|d| d.max(1)),
        }
    }

    /// The top block of the main chain.
    pub fn top(&self) -> &BlockEntry {
        let id = self.main.last().expect("the main chain always holds genesis");
        &self.blocks[id]
    }

    /// Main-chain block count (top index + 1).
    pub fn count(&self) -> u64 {
        self.main.len() as u64
    }

    /// A known block.
    pub fn block(&self, id: &Hash) -> Option<&BlockEntry> {
        self.blocks.get(id)
    }

    /// The main-chain block at `height`.
    pub fn main_block(&self, height: u64) -> Option<&BlockEntry> {
        let id = self.main.get(usize::try_from(height).ok()?)?;
        self.blocks.get(id)
    }

    /// Main-chain ids, genesis first.
    pub fn main_ids(&self) -> &[Hash] {
        &self.main
    }

    /// Whether `id` is on the main chain.
    pub fn is_main(&self, id: &Hash) -> bool {
        self.blocks.get(id).is_some_and(|b| self.main.get(b.height as usize) == Some(id))
    }

    /// Known blocks off the main chain.
    pub fn alternative_blocks(&self) -> Vec<&BlockEntry> {
        self.order.iter().filter(|id| !self.is_main(id)).filter_map(|id| self.blocks.get(id)).collect()
    }

    /// Transactions waiting for a block, oldest first.
    pub fn mempool(&self) -> Vec<&PoolTx> {
        self.mempool.iter().filter_map(|h| self.txs.get(h)).collect()
    }

    /// A relayed transaction and, when confirmed, the main-chain block holding it.
    pub fn tx(&self, hash: &Hash) -> Option<(&PoolTx, Option<&BlockEntry>)> {
        let tx = self.txs.get(hash)?;
        let block = self.tx_block.get(hash).and_then(|id| self.blocks.get(id));
        Some((tx, block))
    }

    /// Every relayed transaction.
    pub fn txs(&self) -> impl Iterator<Item = &PoolTx> {
        self.txs.values()
    }

    /// Non-coinbase transactions in the main chain.
    pub fn confirmed_tx_count(&self) -> u64 {
        self.tx_block.len() as u64
    }

    /// The staking payout attached to `height`, if any.
    pub fn staking_at(&self, height: u64) -> Option<TxOut> {
        self.staking.get(&height).copied()
    }

    /// Staking payouts by height.
    pub fn staking(&self) -> &BTreeMap<u64, TxOut> {
        &self.staking
    }

    /// Attaches a staking payout to the block at `height` (replacing any earlier one).
    pub fn attach_staking(&mut self, height: u64, payout: TxOut) {
        self.staking.insert(height, payout);
    }

    /// Up to `n` blocks ending at `id` (inclusive), oldest first, following parent links, so
    /// alternative branches see their own history.
    fn ancestors(&self, id: &Hash, n: usize) -> Vec<&BlockEntry> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = self.blocks.get(id);
        while let Some(entry) = cursor {
            if out.len() == n {
                break;
            }
            out.push(entry);
            if entry.height == 0 {
                break;
            }
            cursor = self.blocks.get(&entry.block.header.prev_id);
        }
        out.reverse();
        out
    }

    /// Difficulty of a child of `parent` (`Core::getDifficultyForNextBlock` on its branch).
    pub fn difficulty_after(&self, parent: &Hash) -> u64 {
        if let Some(fixed) = self.fixed_difficulty {
            return fixed;
        }
        let Some(entry) = self.blocks.get(parent) else { return params::STARTING_DIFFICULTY };
        let window = self.ancestors(parent, lwma::window_len(entry.height));
        let timestamps: Vec<u64> = window.iter().map(|b| b.block.header.timestamp).collect();
        let cumulative: Vec<u64> = window.iter().map(|b| b.cumulative).collect();
        lwma::next_difficulty(&timestamps, &cumulative)
    }

    /// Median timestamp of the last 11 blocks ending at `parent`.
    pub fn median_timestamp(&self, parent: &Hash) -> u64 {
        median(self.ancestors(parent, TIMESTAMP_CHECK_WINDOW).iter().map(|b| b.block.header.timestamp).collect())
    }

    /// The RandomX key for a block at `height`: the main-chain id at `seed_height(height)`.
    pub fn seed_for(&self, height: u64) -> Hash {
        self.main_block(seed::seed_height(height)).map(|b| b.id).unwrap_or(Hash::ZERO)
    }

    /// Fees of `hashes`, which must all be known transactions.
    fn fees_of(&self, hashes: &[Hash]) -> u64 {
        hashes.iter().filter_map(|h| self.txs.get(h)).map(|t| t.fee).fold(0, u64::saturating_add)
    }

    fn size_of(&self, blob_len: usize, hashes: &[Hash]) -> u64 {
        hashes
            .iter()
            .filter_map(|h| self.txs.get(h))
            .map(|t| t.blob.len() as u64)
            .fold(blob_len as u64, u64::saturating_add)
    }

    /// A new block on `parent` paying `key`, with the mempool's transactions: what
    /// `Core::getBlockTemplate` builds. The extra nonce field holds `reserved` (none if empty).
    fn build_block(
        &self,
        parent: &Hash,
        key: [u8; 32],
        reserved: &[u8],
        txs: Vec<Hash>,
        now: u64,
        rng: &mut impl RngCore,
    ) -> Block {
        let parent_entry = &self.blocks[parent];
        let height = parent_entry.height + 1;
        let fees = self.fees_of(&txs);
        let mut outputs = vec![TxOut { amount: params::base_reward(height).saturating_add(fees), key }];
        if let Some(staking) = self.staking_at(height) {
            outputs.push(staking);
        }
        let mut extra = Vec::with_capacity(35 + reserved.len());
        extra.push(EXTRA_TAG_PUBKEY);
        extra.extend_from_slice(&random_point(rng));
        if !reserved.is_empty() {
            extra.push(EXTRA_TAG_NONCE);
            extra.push(reserved.len() as u8);
            extra.extend_from_slice(reserved);
        }
        Block {
            header: BlockHeader {
                major_version: params::major_version(height),
                minor_version: 0,
                timestamp: now.max(self.median_timestamp(parent)),
                prev_id: *parent,
                nonce: 0,
            },
            coinbase: Coinbase { unlock_time: height + MINED_MONEY_UNLOCK_WINDOW, height, outputs, extra },
            tx_hashes: txs,
        }
    }

    /// `getblocktemplate`: a block on the tip paying `key` with `reserve_size` zero bytes
    /// reserved (at most 255, checked by the caller).
    pub fn template(&self, key: [u8; 32], reserve_size: usize, now: u64, rng: &mut impl RngCore) -> TemplateOut {
        let parent = self.top().id;
        let reserved = vec![0u8; reserve_size];
        let block = self.build_block(&parent, key, &reserved, self.mempool.clone(), now, rng);
        let height = block.coinbase.height;
        let blob = block.serialize();
        // `RpcServer::getBlockTemplate`: position of the tx public key, + 32, + the nonce tag
        // and length bytes.
        let reserved_offset = if reserve_size == 0 {
            0
        } else {
            let header_len = block.header_bytes().len();
            let coinbase = block.coinbase_bytes();
            let extra_start = coinbase.len() - block.coinbase.extra.len();
            (header_len + extra_start + 1 + 32 + 2) as u64
        };
        TemplateOut {
            height,
            difficulty: self.difficulty_after(&parent),
            reserved_offset,
            blob,
            seed_hash: self.seed_for(height),
            next_seed_hash: self.seed_for(height + 1),
        }
    }

    /// Every `Core::submitBlock` / `validateBlock` rule except the proof of work.
    pub fn check(&self, blob: &[u8], now: u64) -> Result<(Block, Checked), CheckOutcome> {
        let (block, _) = Block::parse(blob).map_err(|e| CheckOutcome::Reject(Reject::Parse(e.to_string())))?;
        let hashing_blob = block.hashing_blob();
        let id = crate::chain::block::block_id(&hashing_blob);
        if self.blocks.contains_key(&id) {
            return Err(CheckOutcome::AlreadyExists);
        }
        let prev = block.header.prev_id;
        let parent = self.blocks.get(&prev).ok_or(CheckOutcome::Reject(Reject::UnknownParent(prev)))?;
        let height = parent.height + 1;
        let invalid = |what: String| CheckOutcome::Reject(Reject::Invalid(what));
        let cb = &block.coinbase;
        if cb.height != height {
            return Err(invalid(format!("coinbase height {} on a parent at {}", cb.height, parent.height)));
        }
        if cb.unlock_time != height + MINED_MONEY_UNLOCK_WINDOW {
            return Err(invalid(format!(
                "unlock_time {} instead of {}",
                cb.unlock_time,
                height + MINED_MONEY_UNLOCK_WINDOW
            )));
        }
        if block.header.major_version != params::major_version(height) || block.header.minor_version > 1 {
            return Err(invalid(format!("version {}.{}", block.header.major_version, block.header.minor_version)));
        }
        let median = self.median_timestamp(&prev);
        if block.header.timestamp < median {
            return Err(invalid(format!("timestamp {} below the median {median}", block.header.timestamp)));
        }
        if block.header.timestamp > now + FUTURE_TIME_LIMIT {
            return Err(invalid(format!("timestamp {} too far in the future", block.header.timestamp)));
        }
        let mut seen = HashSet::new();
        let extends_tip = prev == self.top().id;
        for hash in &block.tx_hashes {
            if !seen.insert(*hash) {
                return Err(invalid(format!("transaction {hash} twice")));
            }
            // Extending the tip, a transaction must be waiting in the mempool; an alternative
            // block may also carry one the main chain already confirmed above the fork.
            let known = if extends_tip { self.mempool.contains(hash) } else { self.txs.contains_key(hash) };
            if !known {
                return Err(CheckOutcome::Reject(Reject::MissingTx(*hash)));
            }
        }
        if cb.outputs.iter().any(|o| o.amount == 0) {
            return Err(invalid("a coinbase output of 0".into()));
        }
        if cb.outputs.iter().any(|o| !is_valid_key(&o.key)) {
            return Err(invalid("a coinbase output key is not a curve point".into()));
        }
        let staking = self.staking_at(height).map(|s| s.amount).unwrap_or(0);
        let expected =
            params::base_reward(height).saturating_add(self.fees_of(&block.tx_hashes)).saturating_add(staking);
        let paid = cb.outputs.iter().map(|o| o.amount as u128).sum::<u128>();
        if paid != expected as u128 {
            return Err(invalid(format!("coinbase pays {paid}, expected {expected}")));
        }
        if extra_fields(&cb.extra).pubkey.is_none() {
            return Err(invalid("no transaction public key in the coinbase extra".into()));
        }
        let checked =
            Checked { id, height, difficulty: self.difficulty_after(&prev), seed: self.seed_for(height), hashing_blob };
        Ok((block, checked))
    }

    /// Adds a checked block (its proof of work verified, or a simulated miner's). Re-checks what
    /// may have changed since [`Ledger::check`] ran without the lock.
    pub fn add(&mut self, block: Block, checked: &Checked) -> Result<Added, Reject> {
        if self.blocks.contains_key(&checked.id) {
            return Ok(Added::AlreadyExists);
        }
        let prev = block.header.prev_id;
        let Some(parent) = self.blocks.get(&prev) else { return Err(Reject::UnknownParent(prev)) };
        let extends_tip = prev == self.top().id;
        for hash in &block.tx_hashes {
            let known = if extends_tip { self.mempool.contains(hash) } else { self.txs.contains_key(hash) };
            if !known {
                return Err(Reject::MissingTx(*hash));
            }
        }
        let entry = BlockEntry {
            id: checked.id,
            height: parent.height + 1,
            difficulty: checked.difficulty,
            cumulative: parent.cumulative.saturating_add(checked.difficulty),
            size: self.size_of(block.serialize().len(), &block.tx_hashes),
            block,
        };
        let cumulative = entry.cumulative;
        self.blocks.insert(checked.id, entry);
        self.order.push(checked.id);
        if extends_tip {
            self.connect(checked.id);
            return Ok(Added::Main);
        }
        if cumulative > self.top().cumulative {
            self.switch_to(checked.id);
            return Ok(Added::Switched);
        }
        Ok(Added::Alternative)
    }

    fn connect(&mut self, id: Hash) {
        let hashes = self.blocks[&id].block.tx_hashes.clone();
        self.mempool.retain(|h| !hashes.contains(h));
        for hash in hashes {
            self.tx_block.insert(hash, id);
        }
        self.main.push(id);
    }

    /// Makes the branch ending at `tip` the main chain: blocks above the fork point go back to
    /// being alternatives and their transactions back to the mempool.
    pub fn switch_to(&mut self, tip: Hash) {
        let mut branch = Vec::new();
        let mut cursor = tip;
        while !self.is_main(&cursor) {
            branch.push(cursor);
            match self.blocks.get(&cursor) {
                Some(b) => cursor = b.block.header.prev_id,
                None => return,
            }
        }
        let fork_height = self.blocks[&cursor].height as usize;
        let detached: Vec<Hash> = self.main.drain(fork_height + 1..).collect();
        let mut returned = Vec::new();
        for id in &detached {
            for hash in &self.blocks[id].block.tx_hashes {
                self.tx_block.remove(hash);
                returned.push(*hash);
            }
        }
        let mut pool = returned;
        pool.append(&mut self.mempool);
        self.mempool = pool;
        for id in branch.into_iter().rev() {
            self.connect(id);
        }
    }

    /// Mines a block of the simulated network on the tip, paying `key`, with every mempool
    /// transaction; no proof of work. Returns its id.
    pub fn mine_other(&mut self, key: [u8; 32], now: u64, rng: &mut impl RngCore) -> Hash {
        let parent = self.top().id;
        self.mine_on(&parent, key, self.mempool.clone(), now, rng)
    }

    fn mine_on(&mut self, parent: &Hash, key: [u8; 32], txs: Vec<Hash>, now: u64, rng: &mut impl RngCore) -> Hash {
        let mut reserved = [0u8; 8];
        rng.fill_bytes(&mut reserved);
        let mut block = self.build_block(parent, key, &reserved, txs, now, rng);
        block.header.nonce = rng.next_u32();
        let height = block.coinbase.height;
        let checked = Checked {
            id: block.id(),
            height,
            difficulty: self.difficulty_after(parent),
            seed: self.seed_for(height),
            hashing_blob: Vec::new(),
        };
        let id = checked.id;
        // Cannot fail: the parent exists and the transactions come from the mempool.
        let _ = self.add(block, &checked);
        id
    }

    /// Replaces the last `depth` main-chain blocks with `depth + 1` blocks of the simulated
    /// network (no transactions: the replaced blocks' transactions return to the mempool).
    /// Returns (orphaned ids, new ids).
    pub fn reorg(
        &mut self,
        depth: u64,
        key: [u8; 32],
        now: u64,
        rng: &mut impl RngCore,
    ) -> Result<(Vec<Hash>, Vec<Hash>), String> {
        let top = self.top().height;
        if depth == 0 || depth > top {
            return Err(format!("depth must be between 1 and the top height {top} (genesis stays)"));
        }
        let orphaned: Vec<Hash> = self.main[(top - depth + 1) as usize..].to_vec();
        let mut parent = self.main[(top - depth) as usize];
        let mut added = Vec::new();
        for _ in 0..=depth {
            let mut reserved = [0u8; 8];
            rng.fill_bytes(&mut reserved);
            let mut block = self.build_block(&parent, key, &reserved, Vec::new(), now, rng);
            block.header.nonce = rng.next_u32();
            let checked = Checked {
                id: block.id(),
                height: block.coinbase.height,
                difficulty: self.difficulty_after(&parent),
                seed: Hash::ZERO,
                hashing_blob: Vec::new(),
            };
            let _ = self.add(block, &checked);
            parent = checked.id;
            added.push(checked.id);
        }
        // With LWMA the new branch could, in theory, carry less work; the control endpoint
        // promises a replacement, so switch regardless.
        if !self.is_main(&parent) {
            self.switch_to(parent);
        }
        Ok((orphaned, added))
    }

    /// The network forgets mempool transactions (all, or the one `hash`), as a node does with
    /// a transaction that is never mined; returns the hashes dropped.
    pub fn drop_from_mempool(&mut self, hash: Option<Hash>) -> Vec<Hash> {
        let dropped: Vec<Hash> = self.mempool.iter().filter(|h| hash.map_or(true, |x| x == **h)).copied().collect();
        self.mempool.retain(|h| !dropped.contains(h));
        for h in &dropped {
            self.txs.remove(h);
        }
        dropped
    }

    /// Puts a transaction into the mempool.
    pub fn relay(&mut self, tx: PoolTx) {
        let hash = tx.hash;
        if self.txs.insert(hash, tx).is_none() {
            self.mempool.push(hash);
        }
    }

    /// The header answer for a known block.
    pub fn header(&self, id: &Hash) -> Option<HeaderAnswer> {
        let b = self.blocks.get(id)?;
        let h = &b.block.header;
        Some(HeaderAnswer {
            major_version: h.major_version,
            minor_version: h.minor_version,
            timestamp: h.timestamp,
            prev_hash: h.prev_id,
            nonce: u64::from(h.nonce),
            orphan_status: !self.is_main(id),
            height: b.height,
            depth: self.top().height.saturating_sub(b.height),
            hash: b.id,
            difficulty: b.difficulty,
            reward: b.block.coinbase_total(),
            // The real node counts the coinbase (captures: 1 for a block without transactions).
            num_txes: 1 + b.block.tx_hashes.len() as u64,
            block_size: b.size,
        })
    }

    /// State for persistence.
    pub fn snapshot(&self) -> LedgerSnapshot {
        LedgerSnapshot {
            blocks: self.order[1..]
                .iter()
                .map(|id| {
                    let b = &self.blocks[id];
                    StoredBlock { blob: hex::encode(b.block.serialize()), difficulty: b.difficulty }
                })
                .collect(),
            main: self.main.clone(),
            mempool: self.mempool.clone(),
            txs: self
                .order_txs()
                .into_iter()
                .map(|t| StoredTx { blob: hex::encode(&t.blob), fee: t.fee, destinations: t.destinations.clone() })
                .collect(),
            staking: self
                .staking
                .iter()
                .map(|(h, o)| StoredStaking { height: *h, amount: o.amount, key: hex::encode(o.key) })
                .collect(),
        }
    }

    fn order_txs(&self) -> Vec<&PoolTx> {
        let mut txs: Vec<&PoolTx> = self.txs.values().collect();
        txs.sort_by_key(|t| t.hash);
        txs
    }

    /// Rebuilds a ledger from a snapshot, checking that it hangs together.
    pub fn restore(snapshot: &LedgerSnapshot, fixed_difficulty: Option<u64>) -> Result<Ledger, String> {
        let mut ledger = Ledger::new(fixed_difficulty);
        for tx in &snapshot.txs {
            let blob = hex::decode(&tx.blob).map_err(|e| format!("transaction blob: {e}"))?;
            let hash = keccak(&blob);
            ledger.txs.insert(hash, PoolTx { hash, blob, fee: tx.fee, destinations: tx.destinations.clone() });
        }
        for stored in &snapshot.blocks {
            let blob = hex::decode(&stored.blob).map_err(|e| format!("block blob: {e}"))?;
            let (block, _) = Block::parse(&blob).map_err(|e| format!("block blob: {e}"))?;
            let id = block.id();
            let parent =
                ledger.blocks.get(&block.header.prev_id).ok_or(format!("block {id}: parent not stored before it"))?;
            let entry = BlockEntry {
                id,
                height: parent.height + 1,
                difficulty: stored.difficulty,
                cumulative: parent.cumulative.saturating_add(stored.difficulty),
                size: ledger.size_of(blob.len(), &block.tx_hashes),
                block,
            };
            ledger.blocks.insert(id, entry);
            ledger.order.push(id);
        }
        if snapshot.main.first() != Some(&params::genesis_id()) {
            return Err("main chain does not start at the genesis block".into());
        }
        for (i, id) in snapshot.main.iter().enumerate().skip(1) {
            let b = ledger.blocks.get(id).ok_or(format!("main-chain block {id} not stored"))?;
            if b.height != i as u64 || b.block.header.prev_id != snapshot.main[i - 1] {
                return Err(format!("main-chain block {id} is not at index {i}"));
            }
        }
        ledger.main = snapshot.main.clone();
        for id in &ledger.main {
            for hash in &ledger.blocks[id].block.tx_hashes {
                ledger.tx_block.insert(*hash, *id);
            }
        }
        ledger.mempool = snapshot
            .mempool
            .iter()
            .filter(|h| ledger.txs.contains_key(h) && !ledger.tx_block.contains_key(h))
            .copied()
            .collect();
        for s in &snapshot.staking {
            let key: [u8; 32] = hex::decode(&s.key).ok().and_then(|k| k.try_into().ok()).ok_or("staking key")?;
            ledger.staking.insert(s.height, TxOut { amount: s.amount, key });
        }
        Ok(ledger)
    }
}

/// Why [`Ledger::check`] did not produce a block to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// The id is known: the daemon answers OK (`ALREADY_EXISTS`).
    AlreadyExists,
    /// Refused.
    Reject(Reject),
}

/// A block as persisted: its blob and the difficulty it was accepted at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredBlock {
    pub blob: String,
    pub difficulty: u64,
}

/// A transaction as persisted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredTx {
    pub blob: String,
    pub fee: u64,
    pub destinations: Vec<(String, u64)>,
}

/// A staking payout as persisted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredStaking {
    pub height: u64,
    pub amount: u64,
    pub key: String,
}

/// The persisted ledger: blocks parents-first (genesis implied), the main chain, the mempool.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LedgerSnapshot {
    pub blocks: Vec<StoredBlock>,
    pub main: Vec<Hash>,
    pub mempool: Vec<Hash>,
    pub txs: Vec<StoredTx>,
    pub staking: Vec<StoredStaking>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Template;

    const NOW: u64 = 1_800_000_000;

    fn key() -> [u8; 32] {
        derived_point("test pool")
    }

    #[test]
    fn template_matches_the_real_layout() {
        let ledger = Ledger::new(None);
        let mut rng = rand::thread_rng();
        let t = ledger.template(key(), 17, NOW, &mut rng);
        assert_eq!(t.height, 1);
        assert_eq!(t.difficulty, 1000);
        // Same layout as the captured height-1 template: reserved bytes at 123.
        assert_eq!(t.reserved_offset, 123);
        assert_eq!(t.blob.len(), 141);
        assert_eq!(t.seed_hash, params::genesis_id());
        let parsed =
            Template::parse(t.blob.clone(), t.reserved_offset, 17, 1, t.difficulty, t.seed_hash, t.next_seed_hash)
                .unwrap();
        assert_eq!(parsed.block.coinbase.unlock_time, 11);
        assert_eq!(parsed.output_to(&key()).unwrap().amount, 400_000_000);
        assert!(is_valid_key(&parsed.block.coinbase.extra[1..33].try_into().unwrap()));
        let none = ledger.template(key(), 0, NOW, &mut rng);
        assert_eq!(none.reserved_offset, 0);
        assert_eq!(none.blob.len(), 141 - 19);
    }

    #[test]
    fn checks_reject_bad_blocks() {
        let mut ledger = Ledger::new(Some(1));
        let mut rng = rand::thread_rng();
        let t = ledger.template(key(), 8, NOW, &mut rng);
        let (block, checked) = ledger.check(&t.blob, NOW).unwrap();
        assert_eq!(checked.height, 1);
        let mut bad = block.clone();
        bad.coinbase.outputs[0].amount += 1;
        assert!(matches!(ledger.check(&bad.serialize(), NOW), Err(CheckOutcome::Reject(Reject::Invalid(_)))));
        let mut bad = block.clone();
        bad.coinbase.unlock_time += 1;
        assert!(ledger.check(&bad.serialize(), NOW).is_err());
        let mut bad = block.clone();
        bad.header.timestamp = NOW + 181;
        assert!(ledger.check(&bad.serialize(), NOW).is_err());
        let mut bad = block.clone();
        bad.tx_hashes.push(Hash([7; 32]));
        assert!(matches!(ledger.check(&bad.serialize(), NOW), Err(CheckOutcome::Reject(Reject::MissingTx(_)))));
        assert!(matches!(ledger.check(b"\x01", NOW), Err(CheckOutcome::Reject(Reject::Parse(_)))));
        assert_eq!(ledger.add(block.clone(), &checked), Ok(Added::Main));
        assert_eq!(ledger.check(&t.blob, NOW).unwrap_err(), CheckOutcome::AlreadyExists);
        assert_eq!(ledger.count(), 2);
    }

    #[test]
    fn mempool_fees_staking_and_reorg() {
        let mut ledger = Ledger::new(Some(1));
        let mut rng = rand::thread_rng();
        let blob = synthetic_tx(&[(key(), 5)], 1000, &mut rng);
        let tx = PoolTx { hash: keccak(&blob), blob, fee: 1000, destinations: vec![("x".into(), 5)] };
        let hash = tx.hash;
        ledger.relay(tx);
        let staker = derived_point("staker");
        ledger.attach_staking(1, TxOut { amount: 77, key: staker });
        let t = ledger.template(key(), 0, NOW, &mut rng);
        let (block, checked) = ledger.check(&t.blob, NOW).unwrap();
        assert_eq!(block.tx_hashes, vec![hash]);
        assert_eq!(block.coinbase.outputs[0].amount, 400_001_000);
        assert_eq!(block.coinbase.outputs[1], TxOut { amount: 77, key: staker });
        assert_eq!(ledger.add(block, &checked), Ok(Added::Main));
        assert!(ledger.mempool().is_empty());
        assert_eq!(ledger.tx(&hash).unwrap().1.unwrap().height, 1);
        let other = derived_point("other");
        for _ in 0..3 {
            ledger.mine_other(other, NOW, &mut rng);
        }
        assert_eq!(ledger.count(), 5);
        let mined = ledger.main_ids()[1];
        let (orphaned, added) = ledger.reorg(4, other, NOW, &mut rng).unwrap();
        assert_eq!(orphaned.len(), 4);
        assert_eq!(orphaned[0], mined);
        assert_eq!(added.len(), 5);
        assert_eq!(ledger.count(), 6);
        assert!(!ledger.is_main(&mined));
        assert!(ledger.header(&mined).unwrap().orphan_status);
        assert_eq!(ledger.alternative_blocks().len(), 4);
        // The orphaned block's transaction is waiting again.
        assert_eq!(ledger.mempool().len(), 1);
        assert!(ledger.tx(&hash).unwrap().1.is_none());
        assert!(ledger.reorg(0, other, NOW, &mut rng).is_err());
        assert!(ledger.reorg(7, other, NOW, &mut rng).is_err());
        // Snapshot round trip.
        let restored = Ledger::restore(&ledger.snapshot(), Some(1)).unwrap();
        assert_eq!(restored.main_ids(), ledger.main_ids());
        assert_eq!(restored.alternative_blocks().len(), 4);
        assert_eq!(restored.mempool().len(), 1);
        assert_eq!(restored.staking_at(1).unwrap().amount, 77);
    }

    #[test]
    fn longer_alternative_branch_switches() {
        let mut ledger = Ledger::new(Some(5));
        let mut rng = rand::thread_rng();
        let other = derived_point("other");
        let a = ledger.mine_other(other, NOW, &mut rng);
        let genesis = params::genesis_id();
        // Two blocks on genesis beside `a`.
        let b1 = ledger.mine_on(&genesis, other, Vec::new(), NOW, &mut rng);
        assert!(!ledger.is_main(&b1));
        let b2 = ledger.mine_on(&b1, other, Vec::new(), NOW, &mut rng);
        assert!(ledger.is_main(&b2));
        assert!(!ledger.is_main(&a));
        assert_eq!(ledger.top().cumulative, 11);
    }

    #[test]
    fn lwma_kicks_in_after_61_blocks() {
        let mut ledger = Ledger::new(None);
        let mut rng = rand::thread_rng();
        let other = derived_point("other");
        for i in 0..61 {
            ledger.mine_other(other, NOW + 30 * i, &mut rng);
        }
        assert_eq!(ledger.top().difficulty, 1000);
        // 61 blocks on target: next = 0.99 · 1000.
        assert_eq!(ledger.difficulty_after(&ledger.top().id), 990);
    }
}
