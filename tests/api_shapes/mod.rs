//! Shape checking for API answers: a tiny schema language, and the schemas of every route
//! (spec §10 and the old frontend's TypeScript types).
#![allow(dead_code)]

use serde_json::{json, Value};

/// Checks `v` against `schema`:
/// - a string names the type: `u64` (integer >= 0), `num`, `str`, `bool`, `null`, `any`, or
///   alternatives joined by `|` (`str|null`);
/// - an object requires exactly its keys (a key starting with `?` may be missing); the key
///   `*` makes it a map whose every value matches;
/// - a one-element array requires an array whose every element matches.
pub fn check(v: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    match schema {
        Value::String(kinds) => {
            let ok = kinds.split('|').any(|k| match k {
                "u64" => v.as_u64().is_some(),
                "num" => v.is_number(),
                "str" => v.is_string(),
                "bool" => v.is_boolean(),
                "null" => v.is_null(),
                "any" => true,
                "series" => v.as_array().is_some_and(|a| {
                    a.iter().all(|p| p.as_array().is_some_and(|p| p.len() == 3 && p.iter().all(Value::is_number)))
                }),
                other => panic!("unknown kind {other}"),
            });
            if !ok {
                errors.push(format!("{path}: expected {kinds}, got {v}"));
            }
        }
        Value::Array(items) => {
            let Some(array) = v.as_array() else {
                errors.push(format!("{path}: expected an array, got {v}"));
                return;
            };
            for (i, item) in array.iter().enumerate() {
                check(item, &items[0], &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(fields) => {
            let Some(object) = v.as_object() else {
                errors.push(format!("{path}: expected an object, got {v}"));
                return;
            };
            if let Some(each) = fields.get("*") {
                for (k, item) in object {
                    check(item, each, &format!("{path}.{k}"), errors);
                }
                return;
            }
            for (key, sub) in fields {
                let (name, optional) = key.strip_prefix('?').map_or((key.as_str(), false), |n| (n, true));
                match object.get(name) {
                    Some(item) => check(item, sub, &format!("{path}.{name}"), errors),
                    None if optional => {}
                    None => errors.push(format!("{path}: missing {name}")),
                }
            }
            for key in object.keys() {
                if !fields.contains_key(key) && !fields.contains_key(&format!("?{key}")) {
                    errors.push(format!("{path}: unexpected field {key}"));
                }
            }
        }
        other => panic!("bad schema {other}"),
    }
}

/// Panics with every mismatch.
pub fn assert_shape(v: &Value, schema: &Value, what: &str) {
    let mut errors = Vec::new();
    check(v, schema, what, &mut errors);
    assert!(errors.is_empty(), "{what} does not have the old API's shape:\n{}\nvalue: {v:#}", errors.join("\n"));
}

/// `ApiBlock`.
pub fn api_block() -> Value {
    json!({"height": "u64", "type": "str", "miner": "str", "hash": "str", "timestamp": "u64", "difficulty": "u64",
           "shares": "u64", "effort": "num", "status": "str", "reward": "u64", "score": "num", "minerScore": "num"})
}

/// A payment with its address (`payments:all`).
pub fn payment_with_address() -> Value {
    json!({"txHash": "str", "amount": "num", "fee": "num", "timestamp": "u64", "address": "str|null"})
}

/// The `/stats` object.
pub fn stats(coin: &str) -> Value {
    json!({
        "health": {coin: {"daemon": "str|null", "wallet": "str|null", "price": "null"}},
        "pool": {
            "stats": {"*": "str"},
            "blocks": [api_block()],
            "totalBlocks": "u64", "totalBlocksSolo": "u64", "totalDiff": "u64", "totalDiffSolo": "u64",
            "totalShares": "u64", "totalSharesSolo": "u64",
            "payments": [payment_with_address()],
            "totalPayments": "u64", "totalMinersPaid": "u64",
            "miners": "u64", "minersSolo": "u64", "workers": "u64", "workersSolo": "u64",
            "hashrate": "u64", "hashrateSolo": "u64", "roundScore": "num", "roundHashes": "u64",
            "?lastBlockFound": "str", "?lastBlockFoundSolo": "str"
        },
        "lastblock": {"difficulty": "u64", "height": "u64", "timestamp": "u64", "reward": "u64", "hash": "str"},
        "network": {"difficulty": "u64", "height": "u64"},
        "config": {
            "poolHost": "str", "ports": [{"port": "u64", "difficulty": "u64", "desc": "str", "ssl": "bool", "tls": "str"}],
            "cnAlgorithm": "str", "cnVariant": "u64", "cnBlobType": "u64", "hashrateWindow": "u64",
            "fee": "num", "soloFee": "num", "networkFee": "num", "coin": "str", "coinUnits": "u64",
            "coinDecimalPlaces": "u64", "coinDifficultyTarget": "u64", "symbol": "str", "depth": "u64",
            "finderReward": "num", "donation": {}, "version": "str", "paymentsInterval": "u64",
            "minPaymentThreshold": "u64", "maxPaymentThreshold": "u64|null", "transferFee": "u64",
            "denominationUnit": "u64", "slushMiningEnabled": "bool", "weight": "u64", "priceSource": "str",
            "priceCurrency": "str", "paymentIdSeparator": "str", "fixedDiffEnabled": "bool",
            "fixedDiffSeparator": "str", "blocksChartEnabled": "bool", "blocksChartDays": "u64"
        },
        "charts": {
            "hashrate": "series", "miners": "series", "workers": "series", "difficulty": "series",
            "hashrateSolo": "series", "minersSolo": "series", "workersSolo": "series",
            "blocks": {"*": "u64"}, "blocksSolo": {"*": "u64"}
        },
        "miner": {"?hashrate": "u64", "?roundScore": "num", "?roundHashes": "u64"}
    })
}

/// A worker object (`/stats_address` `workers`, `/workers`).
pub fn worker() -> Value {
    json!({"name": "str", "hashrate": "u64", "lastShare": "u64", "hashes": "u64", "type": "str",
           "hashrate_1h": "u64", "hashrate_6h": "u64", "hashrate_24h": "u64"})
}

/// The `/stats_address` object.
pub fn stats_address() -> Value {
    json!({
        "stats": {"hashes": "str", "lastShare": "str", "balance": "str", "paid": "str", "?minPayoutLevel": "str",
                  "hashrate": "u64", "roundScore": "num", "roundHashes": "u64", "roundSharePercent": "num",
                  "hashrate_1h": "u64", "hashrate_6h": "u64", "hashrate_24h": "u64"},
        "payments": [{"txHash": "str", "amount": "num", "fee": "num", "timestamp": "u64"}],
        "blocks": [{"height": "u64", "type": "str", "miner": "str", "hash": "str", "timestamp": "u64",
                    "difficulty": "u64", "totalShares": "u64", "totalScore": "num", "minerScore": "num",
                    "reward": "u64", "status": "str", "sharePercent": "num", "minerReward": "num"}],
        "charts": {"hashrate": "series", "payments": [["num"]]},
        "workers": [worker()]
    })
}

/// A paged answer.
pub fn paged(item: Value, key: &str) -> Value {
    json!({key: [item], "total": "u64", "page": "u64", "limit": "u64", "totalPages": "u64"})
}

/// `/get_top10miners`.
pub fn top_miners() -> Value {
    json!({"miners": [{"miner": "str", "hashrate": "u64", "lastShare": "u64", "hashes": "u64"}],
           "sortBy": "str", "excludeInactive": "bool", "total": "u64"})
}

/// `/admin_stats`.
pub fn admin_stats() -> Value {
    json!({"totalOwed": "u64", "totalPaid": "u64", "totalRevenue": "u64", "totalRevenueSolo": "u64",
           "totalDiff": "u64", "totalDiffSolo": "u64", "totalShares": "u64", "totalSharesSolo": "u64",
           "blocksOrphaned": "u64", "blocksUnlocked": "u64", "blocksUnlockedSolo": "u64", "totalWorkers": "u64"})
}

/// `/admin_users`.
pub fn admin_users() -> Value {
    json!({"*": {"pending": "str", "paid": "str", "lastShare": "str|null", "hashes": "str|null",
                 "childWallet": "null", "hashrate": "u64", "roundScore": "num", "roundHashes": "u64"}})
}

/// `/admin_monitoring`.
pub fn admin_monitoring() -> Value {
    let module = json!({"lastCheck": "str", "lastStatus": "str", "lastResponse": "str", "?lastFail": "str", "?lastFailResponse": "str"});
    json!({"monitoring": {"daemon": module.clone(), "wallet": module}, "logs": {"*": {"size": "u64", "changed": "u64"}}})
}

/// `/health`.
pub fn health() -> Value {
    let one = json!({"ok": "bool", "required": "bool", "detail": "str"});
    // With payments enabled: the wallet's balance against the books (docs/PAYOUTS.md).
    let wallet = json!({"unlocked": "u64", "locked": "u64", "owed": "u64", "immature": "u64",
                        "batches_in_flight": "u64", "payments_unconfirmed": "u64", "in_flight_prepared": "u64",
                        "batches_without_tx": "u64", "in_flight_without_tx": "u64"});
    let books = json!({"ok": "bool", "?wallet": wallet, "problems": ["str"]});
    // When the process runs stratum: how many miners it can hold.
    let sessions = json!({"capacity": "u64", "connected": "u64", "openFileLimit": "u64", "openFileHardLimit": "u64",
                          "reservedFiles": "u64", "maxConnections": "u64", "limitedBy": "str", "?howToRaise": "str"});
    json!({"status": "str", "redis": one.clone(), "daemon": one.clone(), "wallet": one.clone(), "redisConfig": one,
           "?books": books, "?sessions": sessions})
}

#[test]
fn the_checker_finds_mismatches() {
    let mut errors = Vec::new();
    check(&json!({"a": 1, "b": "x", "c": 3}), &json!({"a": "u64", "b": "u64", "?d": "str"}), "v", &mut errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
    let mut errors = Vec::new();
    check(&json!([{"a": -1}]), &json!([{"a": "num"}]), "v", &mut errors);
    assert!(errors.is_empty());
    let mut errors = Vec::new();
    check(&json!({"x": [[1, 2, 3]]}), &json!({"*": "series"}), "v", &mut errors);
    assert!(errors.is_empty());
}
