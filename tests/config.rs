//! The config loader as an operator meets it: the shipped file, an old Node.js pool config,
//! every validation rule's error text, and the `check-config` exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pastella_pool::config::{Config, ConfigError, Module, RandomXMode, TlsMode};
use serde_json::{json, Value};

const POOL_ADDRESS: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.json")
}

fn shipped_value() -> Value {
    let text = std::fs::read_to_string(shipped_path()).expect("config.json is readable");
    serde_json::from_str(&text).expect("config.json is JSON")
}

fn load_value(value: &Value) -> Result<(Config, Vec<String>), ConfigError> {
    Config::from_json_str(&value.to_string(), "test.json")
}

/// The error lines (`path message`) after changing the shipped config.
fn errors_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut value = shipped_value();
    change(&mut value);
    match load_value(&value) {
        Ok(_) => panic!("expected the changed config to be rejected"),
        Err(error) => error.field_errors().iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that changing the shipped config produces an error containing `expected`.
fn rejects(change: impl FnOnce(&mut Value), expected: &str) {
    let errors = errors_after(change);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "no error contains {expected:?}; errors were:\n{}",
        errors.join("\n")
    );
}

/// Asserts that changing the shipped config still loads.
fn accepts(change: impl FnOnce(&mut Value)) -> (Config, Vec<String>) {
    let mut value = shipped_value();
    change(&mut value);
    load_value(&value).unwrap_or_else(|e| panic!("expected the config to load, got:\n{e}"))
}

#[test]
fn shipped_config_loads_without_warnings() {
    let (config, warnings) = Config::load(&shipped_path()).expect("shipped config.json is valid");
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");

    assert_eq!(config.coin, "pastella");
    assert_eq!(config.redis_prefix(), "pastella");
    assert_eq!(config.pool_address.to_string(), POOL_ADDRESS);
    assert_eq!(config.coin_units, 100_000_000);
    assert_eq!((config.daemon.host.as_str(), config.daemon.port), ("127.0.0.1", 21001));
    assert_eq!(config.wallet_api.port, 21002);
    assert_eq!(config.wallet_api.api_key, "devnet-api-key");
    assert_eq!(config.wallet_api.wallet_file, "pool.wallet");
    assert_eq!(config.wallet_api.wallet_password, "devnet");
    let ports: Vec<(u16, u64)> = config.ports.iter().map(|p| (p.port, p.diff)).collect();
    assert_eq!(ports, [(3333, 5000), (5555, 15000), (7777, 25000), (9999, 500_000)]);
    assert_eq!(config.ports[3].desc, "Mining farms / NiceHash");
    assert!(config.banning.enabled);
    assert!(!config.share_trust.enabled);
    assert_eq!(config.redis.url(), "redis://127.0.0.1:6379/0");
    assert_eq!(config.block_unlocker.pool_fee_bps, 100);
    assert_eq!(config.block_unlocker.finder_reward_bps, 100);
    assert_eq!(config.pool_server.block_refresh_interval, Duration::from_millis(100));
    assert_eq!(config.api.port, 8117);
    assert_eq!(config.metrics.port, None);
}

#[test]
fn defaults_fill_a_minimal_config() {
    let minimal = json!({
        "poolAddress": POOL_ADDRESS,
        "ports": {"3333": {"diff": 5000}},
        "walletApi": {"apiKey": "k"}
    });
    let (config, warnings) = load_value(&minimal).expect("minimal config loads");
    assert!(warnings.is_empty());
    assert_eq!(config.coin, "pastella");
    assert_eq!(config.symbol, "PAS");
    assert_eq!(config.daemon.timeout, Duration::from_millis(5000));
    assert_eq!(config.wallet_api.timeout, Duration::from_millis(30_000));
    assert_eq!(config.pool_server.miner_timeout, Duration::from_secs(600));
    assert_eq!(config.pool_server.reserve_size, 17);
    assert_eq!(config.pool_server.instance_id, None);
    assert_eq!(config.var_diff.min_diff, 100);
    assert_eq!(config.var_diff.max_diff, 100_000_000);
    assert_eq!(config.fixed_diff.address_separator, '.');
    assert!(!config.banning.enabled);
    assert_eq!(config.randomx.mode, RandomXMode::Fast);
    assert_eq!(config.payments.max_addresses, 15);
    assert_eq!(config.payments.max_transaction_amount, 10_000_000_000);
    assert_eq!(config.payments.blocked_addresses_file, PathBuf::from("payment_blocked.json"));
    assert_eq!(config.block_unlocker.depth, 10);
    assert_eq!(config.block_unlocker.solo_fee_bps, None);
    assert_eq!(config.block_unlocker.payout_record_days, 90);
    assert_eq!(config.pplns.window_factor, 2.0);
    assert_eq!(config.api.hashrate_window, Duration::from_secs(600));
    assert_eq!(config.redis.password, None);
    assert_eq!(config.charts.pool.difficulty.step_interval, Duration::from_secs(10_800));
    assert_eq!(config.charts.user.worker_hashrate.update_interval, Duration::from_secs(60));
    assert_eq!(config.monitoring.check_interval, Duration::from_secs(60));
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.ports[0].desc, "");
}

/// The Pastella fork of cryptonote-nodejs-pool's `config.json.example`, filled in, plus the
/// upstream sections (email, telegram, childPools) operators often still carry.
const OLD_POOL_CONFIG: &str = r#"{
    "poolHost": "pool.example.org",
    "coin": "Pastella",
    "symbol": "PAS",
    "coinUnits": 100000000,
    "coinDecimalPlaces": 8,
    "coinDifficultyTarget": 30,
    "blockchainExplorer": "https://explorer.pastella.org/block/{id}",
    "transactionExplorer": "https://explorer.pastella.org/transaction/{id}",
    "daemonType": "bytecoin",
    "cnAlgorithm": "randomx",
    "cnVariant": 0,
    "cnBlobType": 0,
    "isRandomX": true,
    "logging": {
        "files": { "level": "info", "directory": "logs", "flushInterval": 5 },
        "console": { "level": "warn", "colors": true }
    },
    "poolServer": {
        "enabled": true,
        "clusterForks": "auto",
        "poolAddress": "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF",
        "addressPrefix": "PAS",
        "blockRefreshInterval": 600,
        "minerTimeout": 900,
        "sslCert": "./cert.pem",
        "sslKey": "./privkey.pem",
        "sslCA": "./chain.pem",
        "ports": [
            { "port": 7777, "difficulty": 25000, "desc": "High end" },
            { "port": 3333, "difficulty": 5000, "desc": "Low end" },
            { "port": 5555, "difficulty": 15000, "desc": "Mid range" },
            { "port": 9999, "difficulty": 500000, "desc": "SSL", "ssl": true }
        ],
        "varDiff": {
            "minDiff": 200, "maxDiff": 50000000, "targetTime": 45,
            "retargetTime": 20, "variancePercent": 25, "maxJump": 100
        },
        "fixedDiff": { "enabled": true, "addressSeparator": "+" },
        "shareTrust": { "enabled": true, "min": 10, "stepDown": 3, "threshold": 10, "penalty": 30 },
        "banning": { "enabled": true, "time": 600, "invalidPercent": 25, "checkThreshold": 30 },
        "slushMining": { "enabled": false, "weight": 300, "blockTime": 30, "lastBlockCheckRate": 1 }
    },
    "payments": {
        "enabled": true, "interval": 600, "maxAddresses": 20, "mixin": 0, "priority": 0,
        "transferFee": 1000, "dynamicTransferFee": true, "minerPayFee": true,
        "minPayment": 500000, "maxTransactionAmount": 10000000000, "denomination": 1
    },
    "blockUnlocker": {
        "enabled": true, "interval": 10, "depth": 20, "poolFee": 0.5, "devDonation": 0,
        "networkFee": 0, "finderReward": 0.25, "soloFee": 1.5, "fixBlockHeightRPC": false
    },
    "api": {
        "enabled": true, "hashrateWindow": 600, "updateInterval": 2, "bindIp": "0.0.0.0",
        "port": 8117, "blocks": 30, "payments": 30, "password": "hunter2", "ssl": false,
        "sslPort": 8118, "trustProxyIP": true
    },
    "daemon": { "host": "127.0.0.1", "port": 21001 },
    "walletApi": {
        "host": "127.0.0.1", "port": 21002, "apiKey": "rpc-secret", "timeout": 20000,
        "walletFile": "/root/pastella-wallet/pool.wallet", "walletPassword": "wallet-secret"
    },
    "redis": { "host": "127.0.0.1", "port": 6379, "auth": "redis-secret", "db": 3, "cleanupInterval": 15 },
    "monitoring": {
        "daemon": { "checkInterval": 90, "rpcMethod": "getblockcount" },
        "wallet": { "checkInterval": 120 }
    },
    "prices": { "source": "tradeogre", "currency": "USD" },
    "charts": {
        "pool": {
            "hashrate": { "enabled": true, "updateInterval": 60, "stepInterval": 1800, "maximumPeriod": 86400 },
            "price": { "enabled": true, "updateInterval": 1800, "stepInterval": 10800, "maximumPeriod": 604800 }
        },
        "user": {
            "worker_hashrate": { "enabled": false, "updateInterval": 30, "stepInterval": 60, "maximumPeriod": 3600 },
            "payments": { "enabled": false }
        },
        "blocks": { "enabled": true, "days": 14 }
    },
    "childPools": [],
    "email": { "enabled": false, "fromAddress": "pool@example.org" },
    "telegram": { "enabled": false, "token": "" }
}"#;

#[test]
fn old_pool_config_maps_and_warns() {
    let (config, warnings) = Config::from_json_str(OLD_POOL_CONFIG, "old.json").unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.coin, "Pastella", "the coin name is kept verbatim: it is the Redis prefix");
    assert_eq!(config.pool_address.to_string(), POOL_ADDRESS);
    let ports: Vec<(u16, u64, &str)> = config.ports.iter().map(|p| (p.port, p.diff, p.desc.as_str())).collect();
    assert_eq!(
        ports,
        [(3333, 5000, "Low end"), (5555, 15000, "Mid range"), (7777, 25000, "High end"), (9999, 500_000, "SSL")]
    );
    assert_eq!(config.pool_server.block_refresh_interval, Duration::from_millis(600));
    assert_eq!(config.pool_server.miner_timeout, Duration::from_secs(900));
    let v = &config.var_diff;
    assert_eq!((v.min_diff, v.max_diff, v.target_time, v.retarget_time), (200, 50_000_000, 45, 20));
    assert_eq!((v.variance_percent, v.max_jump), (25.0, 100.0));
    assert_eq!(config.fixed_diff.address_separator, '+');
    assert!(config.share_trust.enabled);
    assert!(config.banning.enabled);
    assert_eq!(config.banning.time, Duration::from_secs(600));
    assert_eq!(config.banning.invalid_percent, 25.0);
    assert_eq!(config.payments.max_addresses, 20);
    assert_eq!(config.payments.min_payment, 500_000);
    assert_eq!(config.block_unlocker.depth, 20);
    assert_eq!(config.block_unlocker.pool_fee_bps, 50);
    assert_eq!(config.block_unlocker.finder_reward_bps, 25);
    assert_eq!(config.block_unlocker.solo_fee_bps, Some(150));
    assert!(config.api.trust_proxy_ip);
    assert_eq!(config.api.update_interval, Duration::from_secs(2));
    assert_eq!(config.api.max_payout_level, 1000 * 500_000, "default: 1000 x minPayment");
    assert_eq!(config.api.payout_level_ip_age, Duration::from_secs(86_400));
    assert_eq!(config.api.payout_level_per_hour, 10);
    assert_eq!(config.wallet_api.timeout, Duration::from_millis(20_000));
    assert_eq!(config.redis.password.as_deref(), Some("redis-secret"));
    assert_eq!(config.redis.db, 3);
    assert_eq!(config.redis.url(), "redis://:redis-secret@127.0.0.1:6379/3");
    assert_eq!(config.monitoring.check_interval, Duration::from_secs(90));
    assert_eq!(config.logging.level, "warn");
    assert!(!config.charts.user.worker_hashrate.enabled);
    assert_eq!(config.charts.user.worker_hashrate.update_interval, Duration::from_secs(30));
    assert!(!config.charts.user.payments_enabled);
    assert_eq!(config.charts.blocks.days, 14);
    let tls: Vec<TlsMode> = config.ports.iter().map(|p| p.tls).collect();
    assert_eq!(tls, [TlsMode::Off, TlsMode::Off, TlsMode::Off, TlsMode::On], "ssl: true is a TLS-only port");
    assert_eq!(config.pool_server.tls.cert.as_deref(), Some(Path::new("./cert.pem")));
    assert_eq!(config.pool_server.tls.key.as_deref(), Some(Path::new("./privkey.pem")));
    assert_eq!(config.pool_server.tls.ca.as_deref(), Some(Path::new("./chain.pem")));

    for path in [
        "blockchainExplorer",
        "transactionExplorer",
        "daemonType",
        "logging.files",
        "logging.console.colors",
        "poolServer.clusterForks",
        "poolServer.addressPrefix",
        "poolServer.slushMining",
        "payments.mixin",
        "payments.priority",
        "blockUnlocker.fixBlockHeightRPC",
        "api.ssl",
        "api.sslPort",
        "redis.cleanupInterval",
        "monitoring.daemon.rpcMethod",
        "prices",
        "charts.pool.price",
        "childPools",
        "email",
        "telegram",
    ] {
        let expected = format!("unknown key \"{path}\" ignored");
        assert!(warnings.contains(&expected), "missing warning {expected:?}; warnings were:\n{}", warnings.join("\n"));
    }
    assert!(!warnings.iter().any(|w| w.contains("poolServer.ports\"")));
}

#[test]
fn top_level_settings_win_over_pool_server() {
    let (config, warnings) = accepts(|v| {
        v["poolServer"]["ports"] = json!([{"port": 4444, "difficulty": 1}]);
        v["poolServer"]["varDiff"] = json!({"minDiff": 7});
        v["minerTimeout"] = json!(700);
        v["poolServer"]["minerTimeout"] = json!(60);
    });
    assert_eq!(config.ports.len(), 4);
    assert_eq!(config.ports[0].port, 3333);
    assert_eq!(config.var_diff.min_diff, 100);
    assert_eq!(config.pool_server.miner_timeout, Duration::from_secs(700));
    for old in ["poolServer.ports", "poolServer.varDiff", "poolServer.minerTimeout"] {
        assert!(
            warnings.iter().any(|w| w.starts_with(&format!("\"{old}\" ignored"))),
            "no precedence warning for {old}: {warnings:?}"
        );
    }
}

#[test]
fn aliases_of_the_old_pool() {
    let (config, _) = accepts(|v| {
        v["redis"] = json!({"auth": "pw"});
        v["walletApi"].as_object_mut().unwrap().remove("timeoutMs");
        v["walletApi"]["timeout"] = json!(1234);
        v["api"].as_object_mut().unwrap().remove("trustProxyIP");
        v["api"]["trustProxyIp"] = json!(true);
        v["monitoring"] = json!({"wallet": {"checkInterval": 77}});
        v["logging"] = json!({"console": {"level": "debug"}});
        v["cnAlgorithm"] = json!("RandomX");
    });
    assert_eq!(config.redis.password.as_deref(), Some("pw"));
    assert_eq!(config.wallet_api.timeout, Duration::from_millis(1234));
    assert!(config.api.trust_proxy_ip);
    assert_eq!(config.monitoring.check_interval, Duration::from_secs(77));
    assert_eq!(config.logging.level, "debug");
    assert_eq!(config.cn_algorithm, "randomx");

    // An empty old-style `auth` means no password, like the old pool.
    let (config, _) = accepts(|v| v["redis"] = json!({"auth": ""}));
    assert_eq!(config.redis.password, None);
}

#[test]
fn optional_settings_parse() {
    let (config, _) = accepts(|v| {
        v["poolServer"]["instanceId"] = json!("0a0B0c0d");
        v["randomx"]["mode"] = json!("light");
        v["payments"]["maxPayment"] = json!(5_000_000);
        v["metrics"]["port"] = json!(9100);
        v["poolServer"]["bindIp"] = json!("::");
    });
    assert_eq!(config.pool_server.instance_id, Some([0x0a, 0x0b, 0x0c, 0x0d]));
    assert_eq!(config.randomx.mode, RandomXMode::Light);
    assert_eq!(config.payments.max_payment, Some(5_000_000));
    assert_eq!(config.metrics.port, Some(9100));
    assert!(config.pool_server.bind_ip.is_ipv6());
}

#[test]
fn port_rules() {
    rejects(|v| v["ports"]["3333"]["diff"] = json!(0), "ports.3333.diff must be >= 1, got 0");
    rejects(|v| v["ports"]["3333"]["diff"] = json!("abc"), "ports.3333.diff has the wrong type");
    rejects(|v| v["ports"]["3333"]["diff"] = json!(-5), "ports.3333.diff has the wrong type");
    rejects(
        |v| v["ports"]["3333"].as_object_mut().unwrap().remove("diff").map(drop).unwrap(),
        "ports.3333.diff is required",
    );
    rejects(|v| v["ports"] = json!({}), "ports must list at least one stratum port");
    rejects(
        |v| {
            v.as_object_mut().unwrap().remove("ports");
        },
        "ports is required",
    );
    rejects(|v| v["ports"]["abc"] = json!({"diff": 5}), "ports.abc is not a port number");
    rejects(|v| v["ports"]["0"] = json!({"diff": 5}), "ports.0 must be a TCP port (1 to 65535), got 0");
    rejects(|v| v["ports"]["70000"] = json!({"diff": 5}), "ports.70000 must be a TCP port (1 to 65535), got 70000");
    rejects(|v| v["ports"]["3333"]["port"] = json!(4444), "ports.3333.port must match the key 3333");
    rejects(
        |v| v["ports"] = json!([{"port": 3333, "difficulty": 1}, {"port": 3333, "difficulty": 2}]),
        "ports[1] duplicates port 3333 of ports[0]",
    );
    rejects(|v| v["ports"] = json!([{"difficulty": 1}]), "ports[0].port is required");
    rejects(
        |v| {
            v.as_object_mut().unwrap().remove("ports");
            v["poolServer"]["ports"] = json!([{"port": 3333, "difficulty": "abc"}]);
        },
        "poolServer.ports[0].difficulty has the wrong type",
    );
    rejects(
        |v| {
            v.as_object_mut().unwrap().remove("ports");
            v["poolServer"]["ports"] = json!([{"port": 3333, "difficulty": 0}]);
        },
        "poolServer.ports[0].difficulty must be >= 1, got 0",
    );
    rejects(|v| v["ports"] = json!(5), "ports has the wrong type");
}

#[test]
fn address_rules() {
    rejects(
        |v| v["poolAddress"] = json!("PAS1nope"),
        "poolAddress is not a valid Pastella address (\"PAS1nope\"): The address should be 54 characters",
    );
    let typo = format!("{}G", &POOL_ADDRESS[..POOL_ADDRESS.len() - 1]);
    rejects(|v| v["poolAddress"] = json!(typo), "Possibly invalid checksum");
    rejects(
        |v| {
            v.as_object_mut().unwrap().remove("poolAddress");
        },
        "poolAddress is required",
    );
    rejects(|v| v["poolAddress"] = json!(42), "poolAddress has the wrong type");
    rejects(
        |v| {
            v.as_object_mut().unwrap().remove("poolAddress");
            v["poolServer"]["poolAddress"] = json!("XMR1nope");
        },
        "poolServer.poolAddress is not a valid Pastella address",
    );
}

#[test]
fn coin_rules() {
    rejects(|v| v["coinUnits"] = json!(1_000_000_000_000u64), "coinUnits must be 100000000");
    rejects(|v| v["cnAlgorithm"] = json!("cryptonight"), "cnAlgorithm must be \"randomx\"");
    rejects(|v| v["isRandomX"] = json!(false), "isRandomX must be true");
    rejects(|v| v["cnBlobType"] = json!(2), "cnBlobType must be 0");
    rejects(|v| v["coin"] = json!("pas tella"), "coin must be a name without spaces");
    rejects(|v| v["coin"] = json!(""), "coin must be a name");
    rejects(|v| v["coinDifficultyTarget"] = json!(0), "coinDifficultyTarget must be >= 1, got 0");
}

#[test]
fn transport_rules() {
    let (config, _) = accepts(|v| {
        v["ports"]["3333"]["tls"] = json!("auto");
        v["poolServer"]["allow"] = json!(["10.1.0.0/16", "192.0.2.7"]);
        v["poolServer"]["deny"] = json!(["10.0.0.0/8"]);
        v["poolServer"]["proxyProtocol"] = json!({"enabled": true, "trusted": ["127.0.0.1/32"], "required": true});
    });
    assert_eq!(config.ports[0].tls, TlsMode::Auto);
    assert_eq!(config.pool_server.allow.len(), 2);
    assert_eq!(config.pool_server.allow[1].to_string(), "192.0.2.7/32");
    let proxy = &config.pool_server.proxy_protocol;
    assert!(proxy.enabled && proxy.required);
    assert_eq!(proxy.timeout, Duration::from_secs(5));
    assert_eq!(config.pool_server.tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.pool_server.tls.self_signed_dir, Path::new("tls"));

    rejects(|v| v["ports"]["3333"]["tls"] = json!("yes"), "ports.3333.tls must be \"off\", \"on\" or \"auto\"");
    rejects(
        |v| {
            v["ports"]["3333"]["tls"] = json!("off");
            v["ports"]["3333"]["ssl"] = json!(true);
        },
        "ports.3333.ssl contradicts \"tls\"",
    );
    rejects(|v| v["poolServer"]["allow"] = json!(["10.0.0.0/33"]), "poolServer.allow[0] must be a CIDR network");
    rejects(|v| v["poolServer"]["deny"] = json!(["x", "1.2.3.4"]), "poolServer.deny[0] must be a CIDR network");
    rejects(
        |v| v["poolServer"]["proxyProtocol"] = json!({"enabled": true}),
        "poolServer.proxyProtocol.trusted must list the load balancers",
    );
    rejects(
        |v| v["poolServer"]["proxyProtocol"] = json!({"enabled": true, "trusted": ["::1"], "timeout": 0}),
        "poolServer.proxyProtocol.timeout must be between 1 and 60, got 0",
    );
    rejects(|v| v["poolServer"]["sslCert"] = json!("cert.pem"), "poolServer.sslKey is required");
    rejects(
        |v| v["poolServer"]["tlsHandshakeTimeout"] = json!(0),
        "poolServer.tlsHandshakeTimeout must be between 1 and 300, got 0",
    );
}

#[test]
fn pool_server_rules() {
    rejects(
        |v| v["poolServer"]["blockRefreshInterval"] = json!(5),
        "poolServer.blockRefreshInterval must be between 10 and 60000, got 5",
    );
    rejects(
        |v| v["blockRefreshInterval"] = json!(70_000),
        "blockRefreshInterval must be between 10 and 60000, got 70000",
    );
    rejects(
        |v| v["poolServer"]["templateRefreshInterval"] = json!(0),
        "poolServer.templateRefreshInterval must be between 1 and 3600, got 0",
    );
    rejects(|v| v["minerTimeout"] = json!(10), "minerTimeout must be >= 30, got 10");
    rejects(|v| v["poolServer"]["maxConnections"] = json!(0), "poolServer.maxConnections must be >= 1, got 0");
    rejects(
        |v| v["poolServer"]["maxConnectionsPerIp"] = json!(0),
        "poolServer.maxConnectionsPerIp must be >= 1, got 0",
    );
    rejects(|v| v["poolServer"]["instanceId"] = json!("xyz"), "poolServer.instanceId must be 8 hex characters");
    rejects(|v| v["poolServer"]["reserveSize"] = json!(7), "poolServer.reserveSize must be between 16 and 127, got 7");
    // Room for the extra nonce but not for a proxy's two nonces.
    rejects(
        |v| v["poolServer"]["reserveSize"] = json!(15),
        "poolServer.reserveSize must be between 16 and 127, got 15 (every job writes an 8-byte extra nonce",
    );
    accepts(|v| v["poolServer"]["reserveSize"] = json!(16));
    rejects(
        |v| v["poolServer"]["reserveSize"] = json!(128),
        "poolServer.reserveSize must be between 16 and 127, got 128",
    );
    rejects(|v| v["poolServer"]["bindIp"] = json!("localhost"), "poolServer.bindIp must be an IP address");
}

#[test]
fn stratum_limits_have_defaults_and_path_named_errors() {
    let (config, warnings) = Config::load(&shipped_path()).expect("shipped config.json is valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    let limits = &config.limits;
    assert!(limits.allow.is_empty());
    assert_eq!(limits.max_connections_per_subnet, 1024);
    assert_eq!((limits.login_timeout, limits.line_timeout), (Duration::from_secs(60), Duration::from_secs(10)));
    assert_eq!((limits.shares_in_flight.per_session, limits.shares_in_flight.per_ip), (32, 256));
    let rates = &limits.rate_limits;
    assert!(rates.enabled);
    assert_eq!((rates.login.per_second, rates.login.burst), (5.0, 100));
    assert_eq!((rates.submit.per_second, rates.submit.burst), (250.0, 5000));
    assert_eq!((rates.getjob.per_second, rates.keepalived.per_second), (5.0, 2.0));

    let (config, warnings) = accepts(|v| {
        v["poolServer"]["allow"] = json!(["10.1.2.3/8", "192.168.1.7", "2001:db8::/32"]);
        v["poolServer"]["rateLimits"] = json!({"submit": {"perSecond": 10}});
    });
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(config.limits.exempt("10.200.0.1".parse().unwrap()), "10.1.2.3/8 is 10.0.0.0/8");
    assert!(config.limits.exempt("192.168.1.7".parse().unwrap()));
    assert!(!config.limits.exempt("192.168.1.8".parse().unwrap()));
    assert!(config.limits.exempt("2001:db8:1::1".parse().unwrap()));
    assert_eq!((config.limits.rate_limits.submit.per_second, config.limits.rate_limits.submit.burst), (10.0, 5000));

    rejects(
        |v| v["poolServer"]["allow"] = json!(["10.0.0.0/8", "10.0.0.0/33"]),
        "poolServer.allow[1] must be a CIDR network",
    );
    rejects(
        |v| v["poolServer"]["maxConnectionsPerSubnet"] = json!(0),
        "poolServer.maxConnectionsPerSubnet must be >= 1, got 0",
    );
    rejects(
        |v| v["poolServer"]["loginTimeout"] = json!(0),
        "poolServer.loginTimeout must be between 1 and 3600, got 0",
    );
    rejects(
        |v| v["poolServer"]["lineTimeout"] = json!(601),
        "poolServer.lineTimeout must be between 1 and 600, got 601",
    );
    rejects(
        |v| v["poolServer"]["sharesInFlight"]["perIp"] = json!(0),
        "poolServer.sharesInFlight.perIp must be >= 1, got 0",
    );
    rejects(
        |v| v["poolServer"]["rateLimits"]["login"]["perSecond"] = json!(0),
        "poolServer.rateLimits.login.perSecond must be > 0, got 0",
    );
    rejects(
        |v| v["poolServer"]["rateLimits"]["keepalived"]["burst"] = json!(0),
        "poolServer.rateLimits.keepalived.burst must be >= 1, got 0",
    );
}

#[test]
fn stratum_policy_rules() {
    rejects(|v| v["varDiff"]["minDiff"] = json!(0), "varDiff.minDiff must be >= 1, got 0");
    rejects(|v| v["varDiff"]["maxDiff"] = json!(50), "varDiff.maxDiff must be >= minDiff (100), got 50");
    rejects(|v| v["varDiff"]["targetTime"] = json!(0), "varDiff.targetTime must be >= 1, got 0");
    rejects(|v| v["varDiff"]["retargetTime"] = json!(0), "varDiff.retargetTime must be >= 1, got 0");
    rejects(
        |v| v["varDiff"]["variancePercent"] = json!(100),
        "varDiff.variancePercent must be >= 0 and < 100, got 100",
    );
    rejects(|v| v["varDiff"]["maxJump"] = json!(0), "varDiff.maxJump must be > 0 and <= 1000");
    rejects(
        |v| v["fixedDiff"]["addressSeparator"] = json!("ab"),
        "fixedDiff.addressSeparator must be a single character, got \"ab\"",
    );
    rejects(|v| v["fixedDiff"]["addressSeparator"] = json!("x"), "fixedDiff.addressSeparator must not be a letter");
    rejects(|v| v["banning"]["time"] = json!(0), "banning.time must be >= 1, got 0");
    rejects(|v| v["banning"]["invalidPercent"] = json!(0), "banning.invalidPercent must be > 0 and <= 100, got 0");
    rejects(|v| v["banning"]["checkThreshold"] = json!(0), "banning.checkThreshold must be >= 1, got 0");
    rejects(|v| v["shareTrust"]["min"] = json!(101), "shareTrust.min must be between 0 and 100, got 101");
    rejects(|v| v["randomx"]["mode"] = json!("turbo"), "randomx.mode must be \"fast\" or \"light\", got \"turbo\"");
    rejects(|v| v["randomx"]["threads"] = json!(-1), "randomx.threads has the wrong type");
}

#[test]
fn payment_rules() {
    rejects(|v| v["payments"]["maxAddresses"] = json!(90), "payments.maxAddresses must be between 1 and 89");
    rejects(|v| v["payments"]["maxAddresses"] = json!(0), "payments.maxAddresses must be between 1 and 89");
    rejects(|v| v["payments"]["interval"] = json!(0), "payments.interval must be >= 1, got 0");
    rejects(|v| v["payments"]["transferFee"] = json!(999), "payments.transferFee must be >= 1000");
    rejects(|v| v["payments"]["minPayment"] = json!(0), "payments.minPayment must be >= 1, got 0");
    rejects(|v| v["payments"]["minPayment"] = json!(1000), "payments.minPayment must be > transferFee (1000)");
    rejects(|v| v["payments"]["maxPayment"] = json!(10), "payments.maxPayment must be >= minPayment (100000)");
    rejects(|v| v["api"]["maxPayoutLevel"] = json!(10), "api.maxPayoutLevel must be >= payments.minPayment (100000)");
    rejects(|v| v["api"]["payoutLevelPerHour"] = json!(0), "api.payoutLevelPerHour must be >= 1, got 0");
    rejects(|v| v["api"]["payoutLevelIpAge"] = json!(600), "api.payoutLevelIpAge must be >= 7200, got 600");
    rejects(
        |v| v["payments"]["maxTransactionAmount"] = json!(0),
        "payments.maxTransactionAmount must be >= minPayment (100000)",
    );
    rejects(|v| v["payments"]["denomination"] = json!(0), "payments.denomination must be >= 1, got 0");
    rejects(|v| v["walletApi"]["apiKey"] = json!(""), "walletApi.apiKey is required while payments are enabled");
    // Without payments the wallet API key is not needed.
    accepts(|v| {
        v["walletApi"]["apiKey"] = json!("");
        v["payments"]["enabled"] = json!(false);
    });
    // Without miner-paid fees a threshold at the fee is fine.
    accepts(|v| {
        v["payments"]["minPayment"] = json!(1000);
        v["payments"]["minerPayFee"] = json!(false);
    });
}

#[test]
fn unlocker_rules() {
    rejects(
        |v| v["blockUnlocker"]["poolFee"] = json!(1.234),
        "blockUnlocker.poolFee must have at most 2 decimal places",
    );
    rejects(|v| v["blockUnlocker"]["poolFee"] = json!(101), "blockUnlocker.poolFee must be between 0 and 100");
    rejects(|v| v["blockUnlocker"]["finderReward"] = json!(-1), "blockUnlocker.finderReward must be between 0 and 100");
    rejects(
        |v| v["blockUnlocker"]["soloFee"] = json!(0.001),
        "blockUnlocker.soloFee must have at most 2 decimal places",
    );
    rejects(|v| v["blockUnlocker"]["depth"] = json!(5), "blockUnlocker.depth must be >= 10");
    rejects(|v| v["blockUnlocker"]["interval"] = json!(0), "blockUnlocker.interval must be >= 1, got 0");
    rejects(
        |v| v["blockUnlocker"]["payoutRecordDays"] = json!(0),
        "blockUnlocker.payoutRecordDays must be between 1 and 36500, got 0",
    );
    rejects(
        |v| {
            v["blockUnlocker"]["poolFee"] = json!(60);
            v["blockUnlocker"]["finderReward"] = json!(50);
        },
        "blockUnlocker.finderReward plus poolFee must be <= 100",
    );
    rejects(
        |v| v["blockUnlocker"]["devDonation"] = json!(0.5),
        "blockUnlocker.devDonation is not supported by this pool, must be 0",
    );
    rejects(
        |v| v["blockUnlocker"]["networkFee"] = json!(1),
        "blockUnlocker.networkFee is not supported by this pool, must be 0",
    );
    let (config, _) = accepts(|v| {
        v["blockUnlocker"]["poolFee"] = json!(1.25);
        v["blockUnlocker"]["finderReward"] = json!(0);
        v["blockUnlocker"]["soloFee"] = json!(0.07);
    });
    assert_eq!(config.block_unlocker.pool_fee_bps, 125);
    assert_eq!(config.block_unlocker.finder_reward_bps, 0);
    assert_eq!(config.block_unlocker.solo_fee_bps, Some(7));
}

#[test]
fn service_rules() {
    rejects(|v| v["daemon"]["port"] = json!(70_000), "daemon.port must be a TCP port (1 to 65535), got 70000");
    rejects(|v| v["daemon"]["timeoutMs"] = json!(10), "daemon.timeoutMs must be >= 100, got 10");
    rejects(|v| v["daemon"]["host"] = json!(""), "daemon.host must be a host name");
    rejects(|v| v["daemon"] = json!(5), "daemon has the wrong type: invalid type: integer `5`, expected an object");
    rejects(|v| v["walletApi"]["port"] = json!(0), "walletApi.port must be a TCP port");
    rejects(|v| v["pplns"]["windowFactor"] = json!(0), "pplns.windowFactor must be > 0 and <= 100, got 0");
    rejects(|v| v["api"]["hashrateWindow"] = json!(59), "api.hashrateWindow must be >= 60, got 59");
    rejects(|v| v["api"]["updateInterval"] = json!(0), "api.updateInterval must be >= 1, got 0");
    rejects(|v| v["api"]["port"] = json!(3333), "api.port must differ from a stratum port, got 3333");
    rejects(|v| v["api"]["bindIp"] = json!("0.0.0"), "api.bindIp must be an IP address");
    rejects(|v| v["metrics"]["port"] = json!(8117), "metrics.port must differ from api.port");
    rejects(|v| v["metrics"]["bindIp"] = json!("x"), "metrics.bindIp must be an IP address");
    rejects(|v| v["redis"]["db"] = json!(-1), "redis.db must be >= 0, got -1");
    rejects(|v| v["redis"]["port"] = json!(0), "redis.port must be a TCP port (1 to 65535), got 0");
    rejects(
        |v| v["charts"]["pool"]["hashrate"]["maximumPeriod"] = json!(60),
        "charts.pool.hashrate.maximumPeriod must be >= stepInterval (1800), got 60",
    );
    rejects(
        |v| v["charts"]["user"]["workerHashrate"]["updateInterval"] = json!(0),
        "charts.user.workerHashrate.updateInterval must be >= 1, got 0",
    );
    rejects(|v| v["charts"]["blocks"]["days"] = json!(0), "charts.blocks.days must be >= 1, got 0");
    rejects(|v| v["monitoring"]["checkInterval"] = json!(0), "monitoring.checkInterval must be >= 1, got 0");
    rejects(|v| v["logging"]["level"] = json!("verbose"), "logging.level must be a log filter");
    rejects(|v| v["logging"]["level"] = json!("x=loud"), "logging.level must be a log filter");
}

#[test]
fn all_errors_are_reported_together() {
    let errors = errors_after(|v| {
        v["ports"]["3333"]["diff"] = json!(0);
        v["ports"]["5555"]["diff"] = json!("abc");
        v["daemon"]["port"] = json!("21001");
        v["payments"]["maxAddresses"] = json!(90);
        v["blockUnlocker"]["depth"] = json!(5);
        v["poolAddress"] = json!("nope");
    });
    for expected in [
        "ports.3333.diff must be >= 1, got 0",
        "ports.5555.diff has the wrong type",
        "daemon.port has the wrong type",
        "payments.maxAddresses must be between 1 and 89",
        "blockUnlocker.depth must be >= 10",
        "poolAddress is not a valid Pastella address",
    ] {
        assert!(errors.iter().any(|e| e.contains(expected)), "missing {expected:?} in:\n{}", errors.join("\n"));
    }
    assert_eq!(errors.len(), 6, "one error per problem, no follow-ups:\n{}", errors.join("\n"));
}

#[test]
fn error_display_names_the_file_on_every_line() {
    let mut value = shipped_value();
    value["ports"]["3333"]["diff"] = json!(0);
    value["redis"]["db"] = json!(-1);
    value["payments"]["mixin"] = json!(3);
    let error = Config::from_json_str(&value.to_string(), "pool.json").unwrap_err();
    assert_eq!(
        error.to_string(),
        "pool.json: ports.3333.diff must be >= 1, got 0\npool.json: redis.db must be >= 0, got -1"
    );
    assert_eq!(error.file(), "pool.json");
    assert_eq!(error.warnings(), ["unknown key \"payments.mixin\" ignored"]);
}

#[test]
fn invalid_json_reports_line_and_column() {
    let text = "{\n  \"coin\": \"pastella\",\n  \"ports\": {\"3333\": {\"diff\": 5000,}}\n}";
    match Config::from_json_str(text, "broken.json") {
        Err(ConfigError::Syntax { file, line, column, message }) => {
            assert_eq!(file, "broken.json");
            assert_eq!(line, 3);
            assert_eq!(column, 35);
            assert!(message.contains("trailing comma"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let error = Config::from_json_str("{\"a\": 1", "x.json").unwrap_err();
    assert!(error.to_string().starts_with("x.json:1:7: invalid JSON: "), "{error}");
}

#[test]
fn non_object_document_is_rejected() {
    let error = Config::from_json_str("[1, 2]", "x.json").unwrap_err();
    let errors = error.field_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "(document)");
    assert_eq!(errors[0].message, "must be a JSON object {...}, got an array");
}

#[test]
fn unreadable_file_is_an_error() {
    let error = Config::load(Path::new("/nonexistent/pastella/config.json")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().starts_with("/nonexistent/pastella/config.json: cannot read"));
}

#[test]
fn summary_masks_secrets() {
    let (config, _) = accepts(|v| {
        v["api"]["password"] = json!("hunter2");
        v["redis"]["password"] = json!("redis-pass");
    });
    let summary = config.summary();
    for secret in ["devnet-api-key", "hunter2", "redis-pass"] {
        assert!(!summary.contains(secret), "summary leaks {secret}:\n{summary}");
    }
    assert!(summary.contains("apiKey ****"), "{summary}");
    assert!(summary.contains("walletPassword ****"), "{summary}");
    assert!(summary.contains("password ****"), "{summary}");
    assert!(summary.contains("port 3333"), "{summary}");
    assert!(summary.contains(POOL_ADDRESS), "{summary}");

    let (config, _) = accepts(|_| {});
    assert!(config.summary().contains("password (empty)"));
}

#[test]
fn modules() {
    assert_eq!(Module::all(), [Module::Stratum, Module::Unlocker, Module::Payments, Module::Api]);
    assert_eq!(Module::Payments.to_string(), "payments");
}

fn check_config(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("the binary runs")
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let output = check_config(&shipped_path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
    assert!(stdout.contains("port 3333"), "{stdout}");
    assert!(!stdout.contains("devnet-api-key"), "{stdout}");
}

#[test]
fn check_config_rejects_a_broken_file_with_code_2() {
    let dir = tempfile::tempdir().unwrap();

    let mut value = shipped_value();
    value["ports"]["3333"]["diff"] = json!(0);
    value["payments"]["maxAddresses"] = json!(90);
    value["poolServer"]["clusterForks"] = json!("auto");
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, value.to_string()).unwrap();
    let output = check_config(&invalid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ports.3333.diff must be >= 1, got 0"), "{stderr}");
    assert!(stderr.contains("payments.maxAddresses must be between 1 and 89"), "{stderr}");
    assert!(stderr.contains("warning: unknown key \"poolServer.clusterForks\" ignored"), "{stderr}");
    assert!(stderr.contains(&invalid.display().to_string()), "{stderr}");

    let syntax = dir.path().join("syntax.json");
    std::fs::write(&syntax, "{\n  \"coin\": \"pastella\"\n  \"symbol\": \"PAS\"\n}").unwrap();
    let output = check_config(&syntax);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("syntax.json:3:3: invalid JSON"), "{stderr}");

    let output = check_config(&dir.path().join("missing.json"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn redis_sentinel_rules() {
    let (config, _) = accepts(|_| {});
    assert!(config.redis.sentinels.is_empty(), "no Sentinel unless configured");
    assert_eq!(config.redis.wait_replicas, 0, "no WAIT for a single Redis");
    rejects(
        |v| v["redis"]["sentinels"] = json!(["10.0.0.1:26379", "10.0.0.2"]),
        "redis.sentinels[1] must be \"host:port\" such as \"10.0.0.5:26379\", got \"10.0.0.2\"",
    );
    rejects(|v| v["redis"]["sentinels"] = json!([":26379"]), "redis.sentinels[0] must be \"host:port\"");
    rejects(|v| v["redis"]["masterName"] = json!("my master"), "redis.masterName must be the master's name");
    rejects(|v| v["redis"]["waitReplicas"] = json!(17), "redis.waitReplicas must be between 0 and 16, got 17");
    rejects(|v| v["redis"]["waitTimeoutMs"] = json!(0), "redis.waitTimeoutMs must be between 1 and 60000, got 0");
    let (config, _) = accepts(|v| {
        v["redis"]["sentinels"] = json!(["10.0.0.1:26379", "[::1]:26380"]);
        v["redis"]["masterName"] = json!("pastella");
        v["redis"]["waitReplicas"] = json!(1);
        v["redis"]["waitTimeoutMs"] = json!(500);
    });
    let target = config.redis.target();
    assert_eq!(target.sentinels, ["10.0.0.1:26379", "[::1]:26380"]);
    assert_eq!(target.master_name, "pastella");
    assert_eq!(target.wait.replicas, 1);
    assert_eq!(target.wait.timeout, std::time::Duration::from_millis(500));
    assert_eq!(target.describe(), "master \"pastella\" via sentinels 10.0.0.1:26379, [::1]:26380");
}

#[test]
fn upgrade_keys_have_defaults_and_path_named_errors() {
    let (config, _) = accepts(|v| {
        v.as_object_mut().unwrap().remove("upgrade");
    });
    assert_eq!(config.upgrade.socket, PathBuf::from("pastella-pool.sock"));
    assert_eq!(config.upgrade.drain, Duration::from_secs(60));
    assert_eq!(config.upgrade.binary, None);
    let (config, _) = accepts(|v| {
        v["upgrade"] = json!({"socket": "/run/pool.sock", "drainSeconds": 5, "binary": "/opt/pool/bin/pastella-pool"})
    });
    assert_eq!(config.upgrade.socket, PathBuf::from("/run/pool.sock"));
    assert_eq!(config.upgrade.drain, Duration::from_secs(5));
    assert_eq!(config.upgrade.binary, Some(PathBuf::from("/opt/pool/bin/pastella-pool")));
    rejects(|v| v["upgrade"]["drainSeconds"] = json!(0), "upgrade.drainSeconds must be between 1 and 3600, got 0");
    rejects(|v| v["upgrade"]["socket"] = json!(""), "upgrade.socket");
    rejects(|v| v["upgrade"]["socket"] = json!("/x".repeat(60)), "upgrade.socket must be at most 100 bytes");
    rejects(|v| v["upgrade"]["binary"] = json!(""), "upgrade.binary");
}
