//! `/get_block_payouts`: one block's payout as the pool stored it, for a miner to check: the
//! PPLNS window (per address, with the oldest record counted in part), N, the reward, the fee,
//! the finder reward, each credit and the dust. Read from the records written atomically with
//! the credit, never recomputed.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::routes::{json_value, Params};
use super::ApiState;
use crate::store::BlockPayout;

/// `?height=<n>` (the confirmed block at that height first) or `?hash=<64 hex>`.
pub async fn get_block_payouts(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let hash = match (params.get("hash"), params.get("height").map(str::parse::<u64>)) {
        (Some(hash), _) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hash.to_ascii_lowercase())
        }
        (None, Some(Ok(height))) => match state.store.block_hashes_at(height).await {
            Ok(hashes) => hashes.into_iter().next(),
            Err(e) => return failed(e),
        },
        _ => {
            return json_value(
                &json!({"error": "Parameters are incomplete: height=<block height> or hash=<block id, 64 hex digits>"}),
            )
        }
    };
    let Some(hash) = hash else {
        return json_value(&json!({"error": "Not found"}));
    };
    match state.store.block_payout(&hash).await {
        Ok(Some(payout)) => json_value(&payout_json(&payout)),
        Ok(None) => json_value(&json!({"error": "Not found"})),
        Err(e) => failed(e),
    }
}

fn failed(e: crate::store::StoreError) -> HttpResponse {
    tracing::warn!("API: {e}");
    json_value(&json!({"error": "Query failed"}))
}

/// What the block's record says, in words (for the page and for people reading the JSON).
fn note(p: &BlockPayout) -> String {
    match p.status.as_str() {
        "pending" => "Not confirmed yet: nothing is credited until the block is deep enough.".to_string(),
        "orphaned" => "Orphaned: another block took this height; nothing was credited.".to_string(),
        _ if p.expired() => {
            "Confirmed; its window and per-address credits have expired (blockUnlocker.payoutRecordDays).".to_string()
        }
        _ if p.solo => "Solo block: the finder is credited the reward minus the solo fee.".to_string(),
        _ => "Confirmed: each credit is floor(miners' part × difficulty / Σ window); the finder also gets the finder reward; the rest is dust, kept by the pool.".to_string(),
    }
}

/// The JSON answer for one block.
pub fn payout_json(p: &BlockPayout) -> Value {
    let mut window: Vec<(&String, &u64)> = p.window.iter().collect();
    window.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let window: Vec<Value> = window
        .into_iter()
        .map(|(address, difficulty)| {
            let partial = p.partial.as_ref().filter(|r| &r.address == address);
            json!({
                "address": address,
                "difficulty": difficulty,
                "partial": partial.map(|r| json!({"recordDifficulty": r.record, "counted": r.counted})),
            })
        })
        .collect();
    let mut credits: Vec<(&String, &u64)> = p.credits.iter().collect();
    credits.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let credits: Vec<Value> = credits
        .into_iter()
        .map(|(address, amount)| {
            let finder = if *address == p.finder { p.finder_reward } else { 0 };
            json!({"address": address, "amount": amount, "finderReward": finder, "windowShare": amount - finder.min(*amount)})
        })
        .collect();
    json!({
        "height": p.height,
        "hash": p.hash,
        "type": if p.solo { "solo" } else { "prop" },
        "status": p.status,
        "finder": p.finder,
        "reward": p.reward,
        "windowSize": p.window_size,
        "windowTotal": p.window_total,
        "window": window,
        "partial": p.partial.as_ref().map(|r| json!({"address": r.address, "recordDifficulty": r.record, "counted": r.counted})),
        "feeBps": p.fee_bps,
        "finderRewardBps": p.finder_bps,
        "poolFee": p.pool_fee,
        "finderReward": p.finder_reward,
        "dust": p.dust,
        "credited": p.credited,
        "credits": credits,
        "expiresAt": p.expires_at,
        "expired": p.expired(),
        "note": note(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PartialRecord;

    #[test]
    fn the_answer_adds_up_and_marks_the_partial_record() {
        let p = BlockPayout {
            height: 9,
            hash: "ab".repeat(32),
            solo: false,
            finder: "bob".into(),
            status: "confirmed".into(),
            reward: Some(1_000),
            window_size: 30,
            window_total: 30,
            window: [("alice".to_string(), 20), ("bob".to_string(), 10)].into(),
            partial: Some(PartialRecord { address: "alice".into(), record: 15, counted: 5 }),
            credits: [("alice".to_string(), 653), ("bob".to_string(), 336)].into(),
            credited: 989,
            pool_fee: 10,
            finder_reward: 10,
            dust: 1,
            fee_bps: Some(100),
            finder_bps: Some(100),
            expires_at: Some(100),
        };
        let v = payout_json(&p);
        assert_eq!(
            v["window"][0],
            json!({"address": "alice", "difficulty": 20, "partial": {"recordDifficulty": 15, "counted": 5}})
        );
        assert_eq!(v["window"][1]["partial"], Value::Null);
        assert_eq!(v["credits"][1], json!({"address": "bob", "amount": 336, "finderReward": 10, "windowShare": 326}));
        let credited: u64 = v["credits"].as_array().unwrap().iter().map(|c| c["amount"].as_u64().unwrap()).sum();
        assert_eq!(credited + v["poolFee"].as_u64().unwrap() + v["dust"].as_u64().unwrap(), 1_000);
        assert_eq!(v["expired"], false);
    }
}
