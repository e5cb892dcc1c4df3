//! Building one miner job: template + extra nonce → hashing blob → hex, for a template with 0
//! and with 500 transactions. This is the per-session cost of a job fan-out.
//!
//! `cargo bench --bench job`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pastella_pool::chain::block::{Block, BlockHeader, Coinbase, TxOut, EXTRA_TAG_NONCE, EXTRA_TAG_PUBKEY};
use pastella_pool::chain::keccak::keccak;
use pastella_pool::chain::{params, Template};

/// A template like the daemon's: coinbase with tx pubkey + 17 reserved bytes, `txs` hashes.
fn template(txs: usize) -> Template {
    let mut extra = vec![EXTRA_TAG_PUBKEY];
    extra.extend_from_slice(&[7; 32]);
    extra.extend_from_slice(&[EXTRA_TAG_NONCE, 17]);
    extra.extend_from_slice(&[0; 17]);
    let block = Block {
        header: BlockHeader {
            major_version: 2,
            minor_version: 0,
            timestamp: 1_795_462_126,
            prev_id: params::genesis_id(),
            nonce: 0,
        },
        coinbase: Coinbase {
            unlock_time: 1010,
            height: 1000,
            outputs: vec![TxOut { amount: 400_000_000, key: [9; 32] }],
            extra,
        },
        tx_hashes: (0..txs).map(|i| keccak(&(i as u64).to_le_bytes())).collect(),
    };
    let (_, layout) = Block::parse(&block.serialize()).unwrap();
    let reserved_offset = (layout.extra_start + 35) as u64;
    let seed = params::genesis_id();
    Template::parse(block.serialize(), reserved_offset, 17, 1000, 100_000, seed, seed).unwrap()
}

fn job_building(c: &mut Criterion) {
    for txs in [0usize, 500] {
        let t = template(txs);
        let mut counter = 0u32;
        c.bench_function(&format!("job_blob_hex/{txs}_txs"), |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                let mut nonce = [0u8; 8];
                nonce[..4].copy_from_slice(&counter.to_be_bytes());
                let blob = t.hashing_blob(black_box(&nonce));
                let mut hex = String::with_capacity(160);
                blob.write_hex(&mut hex);
                hex
            })
        });
    }
}

criterion_group!(benches, job_building);
criterion_main!(benches);
