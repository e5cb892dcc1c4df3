//! The captures from a real Pastellad / wallet / xmrig (../shared/fixtures/real-node, copied to
//! tests/fixtures/real-node) against the pool's chain code and RandomX verifier.

use std::path::PathBuf;

use pastella_pool::chain::difficulty::{difficulty_of_target4, hash_difficulty, meets_difficulty};
use pastella_pool::chain::{params, Address, Hash, Template};
use pastella_pool::pow::Hasher;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-node").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The wallet address the captures' node mined to (`walletapi_addresses_primary.json`).
fn capture_wallet() -> Address {
    let v = json("walletapi_addresses_primary.json");
    Address::parse(v["address"].as_str().unwrap()).unwrap()
}

#[test]
fn every_real_template_parses_and_pays_the_wallet_key() {
    let wallet = capture_wallet();
    for (name, height, txs, amount) in [
        ("getblocktemplate_height1.json", 1, 0, 400_000_000),
        ("getblocktemplate_after_mining.json", 67, 0, 400_000_000),
        ("getblocktemplate_height44_with_2_txs.json", 44, 2, 400_002_000),
    ] {
        let r = &json(name)["result"];
        let blob = hex::decode(r["blocktemplate_blob"].as_str().unwrap()).unwrap();
        let template = Template::parse(
            blob.clone(),
            r["reserved_offset"].as_u64().unwrap(),
            17,
            r["height"].as_u64().unwrap(),
            r["difficulty"].as_u64().unwrap(),
            Hash::from_hex(r["seed_hash"].as_str().unwrap()).unwrap(),
            Hash::from_hex(r["next_seed_hash"].as_str().unwrap()).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(template.height, height, "{name}");
        assert_eq!(template.reserved_offset, 123, "{name}");
        assert_eq!(template.layout.nonce_offset, 39, "{name}");
        assert_eq!(template.tx_count(), txs, "{name}");
        assert_eq!(template.block.coinbase.unlock_time, height + 10, "{name}");
        assert_eq!(template.block.header.major_version, params::major_version(height), "{name}");
        assert_eq!(template.output_to(wallet.key()).map(|o| o.amount), Some(amount), "{name}");
        assert_eq!(template.seed_hash, params::genesis_id(), "{name}");
        // Re-serialising the parsed block gives the daemon's bytes back.
        assert_eq!(template.block.serialize(), blob, "{name}");
        // An all-zero extra nonce reproduces the template's own hashing blob.
        assert_eq!(template.hashing_blob(&[]).as_slice(), template.block.hashing_blob(), "{name}");
    }
}

#[test]
fn template_after_mining_builds_on_the_last_header() {
    let tpl = &json("getblocktemplate_after_mining.json")["result"];
    let last = &json("getlastblockheader_after_mining.json")["result"]["block_header"];
    let blob = hex::decode(tpl["blocktemplate_blob"].as_str().unwrap()).unwrap();
    let (block, _) = pastella_pool::chain::Block::parse(&blob).unwrap();
    assert_eq!(block.header.prev_id.to_hex(), last["hash"].as_str().unwrap());
    assert_eq!(block.coinbase.height, last["height"].as_u64().unwrap() + 1);
}

#[test]
fn genesis_header_matches_the_chain_constants() {
    let header = &json("getlastblockheader_genesis.json")["result"]["block_header"];
    let genesis = params::genesis_block();
    assert_eq!(header["hash"].as_str().unwrap(), genesis.id().to_hex());
    assert_eq!(header["nonce"].as_u64().unwrap(), u64::from(genesis.header.nonce));
    assert_eq!(header["timestamp"].as_u64().unwrap(), genesis.header.timestamp);
    assert_eq!(header["reward"].as_u64().unwrap(), genesis.coinbase_total());
    assert_eq!(header["block_size"].as_u64().unwrap(), genesis.serialize().len() as u64);
    let first = &json("getblockheaderbyheight_1.json")["result"]["block_header"];
    assert_eq!(first["prev_hash"].as_str().unwrap(), genesis.id().to_hex());
}

#[test]
fn six_real_xmrig_shares_verify_in_light_mode_and_meet_their_targets() {
    let log = fixture("xmrig_stratum_wire.log");
    let mut jobs = std::collections::HashMap::new();
    let mut hasher: Option<(String, Hasher)> = None;
    let mut checked = 0;
    for line in log.lines() {
        let (dir, body) = line.split_at(3);
        let msg: serde_json::Value = serde_json::from_str(body).unwrap();
        if dir == "S> " {
            let job = if msg["method"] == "job" { &msg["params"] } else { &msg["result"]["job"] };
            if job.is_object() {
                jobs.insert(job["job_id"].as_str().unwrap().to_string(), job.clone());
            }
            continue;
        }
        if msg["method"] != "submit" {
            continue;
        }
        let p = &msg["params"];
        let job = &jobs[p["job_id"].as_str().unwrap()];
        let seed = job["seed_hash"].as_str().unwrap().to_string();
        if hasher.as_ref().map(|(s, _)| s != &seed).unwrap_or(true) {
            hasher = Some((seed.clone(), Hasher::light(&hex::decode(&seed).unwrap()).unwrap()));
        }
        let mut blob = hex::decode(job["blob"].as_str().unwrap()).unwrap();
        blob[39..43].copy_from_slice(&hex::decode(p["nonce"].as_str().unwrap()).unwrap());
        let hash = Hash(hasher.as_mut().unwrap().1.hash(&blob));
        assert_eq!(hash.to_hex(), p["result"].as_str().unwrap(), "share {}", msg["id"]);
        let target = u32::from_le_bytes(hex::decode(job["target"].as_str().unwrap()).unwrap().try_into().unwrap());
        let job_diff = difficulty_of_target4(target);
        assert!(meets_difficulty(&hash, job_diff), "share {} below its target", msg["id"]);
        assert!(hash_difficulty(&hash) >= job_diff);
        checked += 1;
    }
    assert_eq!(checked, 6);
}
