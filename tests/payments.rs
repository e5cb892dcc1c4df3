//! Payments under wallet faults, driven one run at a time (`pay_once`) against a real Redis and
//! the devnet wallet: ambiguous sends never release a batch, a prepared transaction is never
//! left behind, a bad address never blocks the others, and a run pays what fits.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pastella_pool::accounting::leader::Lease;
use pastella_pool::accounting::payments::{pay_once, PaymentReport, PaymentSettings};
use pastella_pool::accounting::payouts::PayoutPolicy;
use pastella_pool::chain::{Address, Hash};
use pastella_pool::devnet::{DaemonMode, DevnetHandle, Failure, FailureKind};
use pastella_pool::node::WalletClient;
use pastella_pool::store::Store;
use redis::Commands;

const COIN: u64 = 100_000_000;

/// A valid address that is nobody's (a random key on the curve).
fn fresh_address() -> String {
    loop {
        let key: [u8; 32] = rand::random();
        let text = Address::from_key(key).encode();
        if Address::parse(&text).is_ok() {
            return text;
        }
    }
}

/// The same address with its last character changed: right length and prefix, bad checksum.
fn bad_checksum(address: &str) -> String {
    let mut text = address.to_string();
    let last = text.pop().unwrap();
    text.push(if last == 'a' { 'b' } else { 'a' });
    assert!(Address::parse(&text).is_err());
    text
}

struct Books {
    redis: RedisServer,
    devnet: DevnetHandle,
    store: Store,
    wallet: WalletClient,
    lease: Lease,
    token: String,
    settings: PaymentSettings,
}

impl Books {
    /// Redis, a devnet whose wallet holds `funding_blocks` unlocked coinbases, and this test
    /// holding the leader lease.
    async fn start(funding_blocks: u64) -> Books {
        let redis = RedisServer::start();
        let devnet = devnet(12).await;
        let pool = Address::parse(POOL_ADDRESS).unwrap();
        devnet.mine_to(funding_blocks, &pool);
        devnet.mine(10);
        let store = Store::connect(&format!("redis://127.0.0.1:{}/0", redis.port), "pastella", Duration::from_secs(5))
            .await
            .unwrap();
        let token = store.acquire_lease("payments-test", Duration::from_secs(3600)).await.unwrap().unwrap();
        let wallet =
            WalletClient::new("127.0.0.1", devnet.wallet_addr.port(), "devnet-api-key", Duration::from_secs(5));
        let settings = PaymentSettings {
            interval: Duration::from_secs(1),
            policy: PayoutPolicy {
                min_payment: 100_000,
                max_payment: None,
                denomination: 1,
                transfer_fee: 1000,
                dynamic_transfer_fee: true,
                miner_pay_fee: false,
                max_addresses: 15,
                max_transaction_amount: 1000 * COIN,
            },
            blocked_file: "/nonexistent/payment_blocked.json".into(),
            wallet_file: "pool.wallet".into(),
            wallet_password: "devnet".into(),
            daemon_host: "127.0.0.1".into(),
            daemon_port: devnet.daemon_addr.port(),
            pool_address: POOL_ADDRESS.into(),
            settle_after: Duration::from_secs(3600),
            lookup_rounds: 3,
            hold_after: Duration::from_secs(3600),
        };
        Books { redis, devnet, store, wallet, lease: Lease::holding(token.clone()), token, settings }
    }

    /// Credits balances the way the old pool's import does (the audit counts them).
    async fn credit(&self, balances: &[(&str, u64)]) {
        let mut con = self.redis.conn();
        for (address, amount) in balances {
            let _: () = con.hset(format!("pastella:workers:{address}"), "balance", amount.to_string()).unwrap();
        }
        let _: () = con.srem("pastella:migrations", "workers-balances").unwrap();
        self.store.import_old_balances().await.unwrap();
    }

    async fn run(&self) -> PaymentReport {
        pay_once(&self.store, &self.wallet, &self.lease, &self.token, &self.settings).await.unwrap()
    }

    fn field(&self, address: &str, name: &str) -> u64 {
        let v: Option<u64> = self.redis.conn().hget(format!("pastella:balances:{address}"), name).unwrap();
        v.unwrap_or(0)
    }

    fn journal(&self) -> Vec<HashMap<String, String>> {
        let mut con = self.redis.conn();
        let ids: Vec<String> = con.zrange("pastella:payments:journal", 0, -1).unwrap();
        ids.iter().map(|id| con.hgetall(format!("pastella:payments:batch:{id}")).unwrap()).collect()
    }

    /// What the wallet sent to `address` equals what Redis paid it, in exactly `txs` transactions.
    fn paid_once(&self, address: &str, txs: usize) {
        let received = self.devnet.received(address);
        assert_eq!(received.received + received.pending, self.field(address, "paid"), "{address}: sent vs paid");
        assert_eq!(received.transactions.len(), txs, "{address}: {received:?}");
    }

    async fn audit_ok(&self) {
        let audit = self.store.audit().await.unwrap();
        assert!(audit.broken.is_empty(), "{audit:?}");
        assert_eq!(audit.credited, audit.balance + audit.pending + audit.paid + audit.fees);
    }
}

/// Every way a `send/prepared` can fail without saying "not sent" leaves the batch `unknown`,
/// its amounts reserved; the next runs find the relayed transaction or send the same prepared
/// hash again, and every miner is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_send_is_never_released_and_never_paid_twice() {
    let books = Books::start(4).await;
    let failures = [
        ("daemon error 31", Failure { kind: FailureKind::Error, code: 31, hold: Duration::ZERO }),
        ("daemon offline 30", Failure { kind: FailureKind::Error, code: 30, hold: Duration::ZERO }),
        ("timeout", Failure { kind: FailureKind::Timeout, code: 30, hold: Duration::from_secs(10) }),
        (
            "dropped connection after the relay",
            Failure { kind: FailureKind::DropAfterSuccess, code: 0, hold: Duration::ZERO },
        ),
        ("relayed, then error 31", Failure { kind: FailureKind::RelayThenError, code: 31, hold: Duration::ZERO }),
    ];
    for (name, failure) in failures {
        let miner = fresh_address();
        books.credit(&[(&miner, COIN)]).await;
        books.devnet.fail_wallet_sends(1, failure);
        let report = books.run().await;
        assert_eq!(report.uncertain, 1, "{name}: {report:?}");
        assert_eq!(report.released, 0, "{name}: an ambiguous send is never released");
        let journal = books.journal();
        assert_eq!(journal.len(), 1, "{name}");
        assert_eq!(journal[0]["state"], "unknown", "{name}");
        assert_eq!(books.field(&miner, "pending"), COIN, "{name}: still reserved");
        assert_eq!(books.field(&miner, "balance"), 0, "{name}: not payable again");
        books.audit_ok().await;
        // The next run settles it: found in the wallet, or the same prepared hash sent again.
        let report = books.run().await;
        assert_eq!(report.sent.len(), 1, "{name}: {report:?}");
        assert!(books.journal().is_empty(), "{name}");
        assert_eq!(books.field(&miner, "paid"), COIN, "{name}");
        books.paid_once(&miner, 1);
        // And nothing more happens in later runs.
        let report = books.run().await;
        assert!(report.sent.is_empty(), "{name}: {report:?}");
        books.paid_once(&miner, 1);
        books.audit_ok().await;
    }
    assert_eq!(books.store.audit().await.unwrap().problems(), Vec::<String>::new());
}

/// The race of a send moving from the mempool into a block between the wallet's two lookups:
/// looking at the unconfirmed transactions first, the lookup always finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mined_between_the_two_lookups_is_found() {
    let books = Books::start(2).await;
    let miner = fresh_address();
    books.credit(&[(&miner, COIN)]).await;
    books.devnet.fail_wallet_sends(1, Failure { kind: FailureKind::DropAfterSuccess, code: 0, hold: Duration::ZERO });
    assert_eq!(books.run().await.uncertain, 1);
    let journal = books.journal();
    let hash = Hash::from_hex(&journal[0]["txHash"]).unwrap();
    assert_eq!(books.devnet.state().mempool.len(), 1, "relayed");
    // The block comes right after the first lookup is answered.
    books.devnet.mine_after_lookups(1);
    let found = books.wallet.transaction(&hash).await.unwrap();
    assert!(found.is_some(), "a transaction mined between the lookups is found");
    assert!(books.devnet.state().mempool.is_empty(), "it was mined between the two lookups");
    books.devnet.mine_after_lookups(1);
    let report = books.run().await;
    assert_eq!(report.sent, vec![hash.to_hex()]);
    assert_eq!(report.released, 0);
    books.paid_once(&miner, 1);
    books.audit_ok().await;
}

/// §3b: the wallet's daemon is down. The prepared transaction keeps its inputs locked and can
/// still be sent, so the batch is kept and the same hash is sent once the daemon is back.
/// After a wallet restart the hash is forgotten (inputs still locked): only then, after
/// `lookupRounds` rounds, is the batch released and paid with a new transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_never_left_behind() {
    let books = Books::start(4).await;
    let alice = fresh_address();
    books.credit(&[(&alice, 2 * COIN)]).await;
    books.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    assert_eq!(books.run().await.uncertain, 1);
    let state = books.devnet.state();
    assert_eq!(state.wallet.prepared.len(), 1, "the prepared transaction is still in the wallet");
    assert!(state.wallet.locked >= 2 * COIN, "its inputs are locked: {:?}", state.wallet);
    // Daemon still down: nothing proves "not sent", so it stays reserved, round after round.
    for _ in 0..4 {
        let report = books.run().await;
        assert_eq!((report.released, report.uncertain), (0, 1), "{report:?}");
        assert_eq!(books.journal()[0]["state"], "unknown");
        assert_eq!(books.field(&alice, "pending"), 2 * COIN);
    }
    books.devnet.set_daemon_mode(DaemonMode::Normal, None);
    let prepared = books.devnet.state().wallet.prepared[0];
    let report = books.run().await;
    assert_eq!(report.sent, vec![prepared.to_hex()], "the same prepared transaction is sent");
    books.paid_once(&alice, 1);
    books.devnet.mine(1);

    // Now with a wallet restart while the daemon is down.
    let bob = fresh_address();
    books.credit(&[(&bob, COIN)]).await;
    books.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    assert_eq!(books.run().await.uncertain, 1);
    books.devnet.restart_wallet();
    books.devnet.set_daemon_mode(DaemonMode::Normal, None);
    let locked = books.devnet.state().wallet.locked;
    assert!(locked >= COIN, "a restart keeps the inputs locked");
    for round in 1..books.settings.lookup_rounds {
        let report = books.run().await;
        assert_eq!((report.released, report.uncertain), (0, 1), "round {round}: {report:?}");
        assert_eq!(books.journal()[0]["absentRounds"], round.to_string());
    }
    // Unknown to the wallet `lookupRounds` rounds in a row, but the inputs it locked are not
    // free yet (the wallet has not rescanned): still kept, round after round.
    for _ in 0..2 {
        let report = books.run().await;
        assert_eq!((report.released, report.uncertain), (0, 1), "{report:?}");
        assert_eq!(books.field(&bob, "pending"), COIN);
    }
    assert_eq!(books.devnet.received(&bob).transactions.len(), 0);
    // The rescan frees them: released, and paid with a new transaction in the same run (the
    // forgotten one can never be sent).
    books.wallet.reset().await.unwrap();
    let report = books.run().await;
    assert_eq!(report.released, 1, "{report:?}");
    assert_eq!(report.sent.len(), 1, "{report:?}");
    books.paid_once(&bob, 1);
    let report = books.run().await;
    assert!(report.sent.is_empty() && report.released == 0, "{report:?}");
    books.paid_once(&bob, 1);
    books.paid_once(&alice, 1);
    books.audit_ok().await;
}

/// The operator's command line on these books: (exit code, stdout + stderr).
fn payments_cli(books: &Books, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let config = temp_path(name);
    let json = pool_config_json(&books.redis, &books.devnet, &[(free_port(), 1000)], serde_json::json!({}));
    std::fs::write(&config, json.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["payments", "--config"])
        .arg(&config)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// §3b: the wallet prepares the transaction and locks its inputs, but its answer is lost (the
/// connection drops). The batch was recorded `preparing` before the call, so it is not released
/// while the wallet's locked balance may hold those inputs: the other miners are paid, the
/// batch goes `held` after `holdAfter`, the operator's `--not-sent` and `--sent` are refused.
/// After the wallet's rescan the pool releases it by itself and pays every miner exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_prepare_answer_is_not_released_while_the_wallets_inputs_are_locked() {
    use pastella_pool::accounting::payments::{resolve_held, wallet_books, Resolution, ResolveError};
    let mut books = Books::start(4).await;
    books.settings.settle_after = Duration::ZERO;
    let (alice, bob) = (fresh_address(), fresh_address());
    books.credit(&[(&alice, 2 * COIN)]).await;
    books.devnet.fail_wallet_sends(1, Failure { kind: FailureKind::PrepareThenDrop, code: 0, hold: Duration::ZERO });
    let report = books.run().await;
    assert_eq!((report.uncertain, report.released, report.sent.len()), (1, 0, 0), "{report:?}");
    let journal = books.journal();
    assert_eq!(journal[0]["state"], "preparing", "{journal:?}");
    assert!(!journal[0].contains_key("txHash"), "the pool never learnt the hash");
    let id = books.store.journal().await.unwrap()[0].id.clone();
    let state = books.devnet.state();
    assert_eq!(state.wallet.prepared.len(), 1, "the wallet prepared it");
    assert_eq!(state.wallet.locked, 2 * COIN + 1000, "and locked its inputs");
    assert_eq!(books.field(&alice, "pending"), 2 * COIN);

    // Later runs: the inputs are locked, so the batch is kept (and says why); other miners
    // are paid meanwhile.
    books.credit(&[(&bob, COIN)]).await;
    let report = books.run().await;
    assert_eq!((report.waiting, report.released, report.sent.len()), (1, 0, 1), "{report:?}");
    books.paid_once(&bob, 1);
    books.devnet.mine(1);
    let report = books.run().await;
    assert_eq!((report.waiting, report.released, report.sent.len()), (1, 0, 0), "{report:?}");
    let journal = books.journal();
    assert_eq!((journal[0]["state"].as_str(), journal[0]["waiting"].as_str()), ("preparing", "inputs"));
    assert!(journal[0]["error"].contains("PUT /reset"), "{journal:?}");
    assert_eq!(books.field(&alice, "pending"), 2 * COIN, "still reserved");
    assert_eq!(books.devnet.received(&alice).transactions.len(), 0);
    // The books explain the locked inputs: audit OK, the batch listed as waiting.
    let audit = books.store.audit().await.unwrap();
    assert_eq!(audit.problems(), Vec::<String>::new());
    assert_eq!(audit.waiting_inputs.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![id.clone()]);
    let check = wallet_books(&books.store, &books.wallet).await.unwrap();
    assert_eq!(
        (check.batches_without_tx, check.in_flight_without_tx, check.in_flight_prepared),
        (1, 2 * COIN + 1000, 0)
    );
    assert_eq!(check.problems(), Vec::<String>::new(), "{check:?}");
    // The operator cannot settle it either way while the inputs are locked.
    let refused = resolve_held(&books.store, &books.wallet, &id, Resolution::NotSent).await;
    assert!(matches!(&refused, Err(ResolveError::Contradicted(why)) if why.contains("may still exist")), "{refused:?}");
    let refused = resolve_held(&books.store, &books.wallet, &id, Resolution::Sent).await;
    assert!(
        matches!(&refused, Err(ResolveError::Contradicted(why)) if why.contains("no transaction hash")),
        "{refused:?}"
    );

    // Past holdAfter it is held for the operator, still reserved.
    books.settings.hold_after = Duration::ZERO;
    let report = books.run().await;
    assert_eq!((report.held, report.released), (1, 0), "{report:?}");
    assert_eq!(books.journal()[0]["state"], "held");
    assert_eq!(books.store.audit().await.unwrap().held_batches, vec![id.clone()]);
    let (code, text) = payments_cli(&books, "payments-preparing.json", &["resolve", &id, "--not-sent"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused") && text.contains("PUT /reset"), "{text}");
    let (code, text) = payments_cli(&books, "payments-preparing.json", &["resolve", &id, "--sent"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no transaction hash"), "{text}");
    assert_eq!(books.field(&alice, "pending"), 2 * COIN, "nothing changed");

    // The operator rescans the wallet: the inputs are free, the pool releases the batch by
    // itself and pays it with a new transaction, once.
    books.wallet.reset().await.unwrap();
    let report = books.run().await;
    assert_eq!((report.released, report.sent.len()), (1, 1), "{report:?}");
    books.devnet.mine(1);
    let report = books.run().await;
    assert!(report.sent.is_empty() && report.released == 0, "{report:?}");
    assert!(books.journal().is_empty());
    books.paid_once(&alice, 1);
    books.paid_once(&bob, 1);
    assert_eq!(books.field(&alice, "paid"), 2 * COIN);
    books.audit_ok().await;
    assert_eq!(books.store.audit().await.unwrap().problems(), Vec::<String>::new());
    let check = wallet_books(&books.store, &books.wallet).await.unwrap();
    assert_eq!(check.problems(), Vec::<String>::new(), "{check:?}");
}

/// A `reserved` batch without a hash whose prepare was never reached is released at restart as
/// before: one of this version (it records `preparing` before the wallet call) at once, one an
/// earlier version journaled once the wallet's locked balance shows no inputs held for it (and
/// kept while it does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_batch_that_never_reached_the_wallet_is_released() {
    use pastella_pool::store::BatchDestination;
    let mut books = Books::start(2).await;
    books.settings.settle_after = Duration::ZERO;
    let (carol, dave) = (fresh_address(), fresh_address());
    books.credit(&[(&carol, COIN), (&dave, COIN / 2)]).await;
    let reserve = |address: &str, amount: u64, id: &str| {
        let batch = vec![BatchDestination { address: address.into(), amount, fee: 0, reserved: amount }];
        let (store, token, id) = (books.store.clone(), books.token.clone(), id.to_string());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        async move { assert!(store.reserve_batch(&token, &id, now, &batch, 1000).await.unwrap()) }
    };
    reserve(&carol, COIN, "1-current").await;
    reserve(&dave, COIN / 2, "2-earlier").await;
    let _: () = books.redis.conn().hdel("pastella:payments:batch:2-earlier", "intent").unwrap();
    assert_eq!(books.field(&carol, "pending"), COIN);
    let report = books.run().await;
    assert_eq!(report.released, 2, "{report:?}");
    assert_eq!(report.sent.len(), 1, "both paid again in the same run: {report:?}");
    let released: HashMap<String, String> = books.redis.conn().hgetall("pastella:payments:batch:2-earlier").unwrap();
    assert!(released["error"].contains("no transaction prepared for it holds the wallet's inputs"), "{released:?}");
    books.paid_once(&carol, 1);
    books.paid_once(&dave, 1);
    books.devnet.mine(1);
    books.run().await; // the payment is seen in a block: its change no longer locked

    // An earlier version's `reserved` batch while the wallet holds inputs nothing explains (a
    // transaction it prepared and then forgot in a restart): kept, until the rescan.
    let erin = fresh_address();
    books.credit(&[(&erin, COIN)]).await;
    let forgotten = pastella_pool::node::wallet::Destination { address: fresh_address(), amount: COIN / 4 };
    books.wallet.prepare_advanced(&[forgotten], None).await.unwrap();
    books.devnet.restart_wallet();
    reserve(&erin, COIN, "3-earlier").await;
    let _: () = books.redis.conn().hdel("pastella:payments:batch:3-earlier", "intent").unwrap();
    let report = books.run().await;
    assert_eq!((report.waiting, report.released, report.sent.len()), (1, 0, 0), "{report:?}");
    let kept: HashMap<String, String> = books.redis.conn().hgetall("pastella:payments:batch:3-earlier").unwrap();
    assert_eq!((kept["state"].as_str(), kept["waiting"].as_str()), ("preparing", "inputs"), "{kept:?}");
    assert_eq!(books.field(&erin, "pending"), COIN);
    books.wallet.reset().await.unwrap();
    let report = books.run().await;
    assert_eq!((report.released, report.sent.len()), (1, 1), "{report:?}");
    books.paid_once(&erin, 1);
    books.audit_ok().await;
}

/// The running pool reports a lost prepare to the operator: `/admin_payments` lists the batch
/// `preparing` with `waitingInputs` and the remedy, the gauge counts it, and after the rescan
/// the pool releases it by itself and pays the miner once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reports_a_batch_waiting_for_the_wallets_inputs() {
    let books = Books::start(2).await;
    let miner = fresh_address();
    books.credit(&[(&miner, COIN)]).await;
    books.store.release_lease(&books.token).await.unwrap();
    books.devnet.fail_wallet_sends(1, Failure { kind: FailureKind::PrepareThenDrop, code: 0, hold: Duration::ZERO });
    let api_port = free_port();
    let patch = serde_json::json!({
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000,
                     "minerPayFee": false, "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "blockUnlocker": {"leaseTtl": 2},
        "walletApi": {"timeoutMs": 2000},
        "api": {"port": api_port, "password": "s3cret-admin"},
        "metrics": {"enabled": true},
    });
    let pool = PoolProcess::start(
        pool_config(&books.redis, &books.devnet, &[(free_port(), 1000)], patch),
        &[pastella_pool::config::Module::Api, pastella_pool::config::Module::Payments],
    );
    let mut con = books.redis.conn();
    let waiting = eventually(Duration::from_secs(60), || {
        let ids: Vec<String> = con.zrange("pastella:payments:journal", 0, -1).ok()?;
        let flag: Option<String> = con.hget(format!("pastella:payments:batch:{}", ids.first()?), "waiting").ok()?;
        (flag.as_deref() == Some("inputs")).then(|| ids[0].clone())
    })
    .await;
    let id = waiting.expect("the pool flags the batch as waiting for the wallet's inputs");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}");
    let admin: serde_json::Value =
        http.get(format!("{base}/admin_payments?password=s3cret-admin")).send().await.unwrap().json().await.unwrap();
    let batch = &admin["inFlight"][0];
    assert_eq!((batch["id"].as_str(), batch["state"].as_str()), (Some(id.as_str()), Some("preparing")), "{admin}");
    assert_eq!(batch["waitingInputs"], true, "{admin}");
    assert!(batch["txHash"].is_null() && batch["error"].as_str().unwrap().contains("PUT /reset"), "{admin}");
    // The gauge is set after each run: wait for the run that saw it.
    let mut gauge = String::new();
    for _ in 0..600 {
        gauge = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if gauge.lines().any(|l| l == "pastella_pool_payment_batches_waiting_inputs 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gauge.lines().any(|l| l == "pastella_pool_payment_batches_waiting_inputs 1"), "{gauge}");
    assert_eq!(books.field(&miner, "pending"), COIN, "kept reserved");

    books.wallet.reset().await.unwrap();
    let paid = eventually(Duration::from_secs(60), || {
        let paid: u64 = con.hget(format!("pastella:balances:{miner}"), "paid").ok()?;
        (paid == COIN).then_some(())
    })
    .await;
    assert!(paid.is_some(), "released by the pool after the rescan and paid");
    pool.stop();
    books.paid_once(&miner, 1);
    books.audit_ok().await;
    assert!(books.journal().is_empty());
}

/// §4: one bad-checksum address with a large balance plus 14 valid miners, `maxAddresses` 15:
/// all 14 are paid in the first run, the bad one is quarantined with its balance kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_address_never_blocks_the_other_miners() {
    let books = Books::start(6).await;
    let good: Vec<String> = (0..14).map(|_| fresh_address()).collect();
    let bad = bad_checksum(&fresh_address());
    let mut credits: Vec<(&str, u64)> = good.iter().map(|a| (a.as_str(), COIN / 10)).collect();
    credits.push((&bad, 50 * COIN));
    books.credit(&credits).await;
    let audit = books.store.audit().await.unwrap();
    assert_eq!(audit.quarantined.len(), 1, "quarantined at import: {:?}", audit.quarantined);
    assert_eq!(audit.quarantined[0].0, bad);

    let report = books.run().await;
    assert_eq!(report.sent.len(), 1, "{report:?}");
    for address in &good {
        assert_eq!(books.field(address, "paid"), COIN / 10, "{address}");
        books.paid_once(address, 1);
    }
    assert_eq!(books.field(&bad, "balance"), 50 * COIN, "kept");
    assert_eq!(books.field(&bad, "paid"), 0);

    // An invalid address that got a balance some other way (before this check existed) is
    // quarantined before planning.
    let older = bad_checksum(&fresh_address());
    let mut con = books.redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(format!("pastella:balances:{older}"))
        .arg("balance")
        .arg(COIN)
        .arg("credited")
        .arg(COIN)
        .query(&mut con)
        .unwrap();
    let _: () = con.sadd("pastella:balances:index", &older).unwrap();
    let _: () = con.hincr("pastella:totals", "imported", COIN).unwrap();
    let report = books.run().await;
    assert_eq!(report.quarantined, vec![older.clone()], "{report:?}");
    assert!(report.sent.is_empty() && report.released == 0, "{report:?}");
    assert_eq!(books.field(&older, "balance"), COIN);

    // A destination the pool's own check accepts but the wallet refuses: found and
    // quarantined with the wallet's reason, and the others are paid in the same run.
    let refused = fresh_address();
    let others: Vec<String> = (0..3).map(|_| fresh_address()).collect();
    let mut credits: Vec<(&str, u64)> = others.iter().map(|a| (a.as_str(), COIN / 5)).collect();
    credits.push((&refused, COIN));
    books.credit(&credits).await;
    books.devnet.reject_address(&refused, 15, true);
    let report = books.run().await;
    assert_eq!(report.quarantined, vec![refused.clone()], "{report:?}");
    assert_eq!(report.sent.len(), 1, "the rest paid in the same run: {report:?}");
    for address in &others {
        books.paid_once(address, 1);
    }
    assert_eq!(books.field(&refused, "balance"), COIN);
    let quarantined = books.store.quarantined().await.unwrap();
    assert!(quarantined[&refused].contains("error 15"), "{quarantined:?}");
    books.audit_ok().await;
    assert!(books.journal().is_empty());

    // A destination the wallet refuses only inside a transaction (its validation accepts it):
    // the batch is split until the refused one stands alone, and the others are paid.
    let hidden = fresh_address();
    let rest: Vec<String> = (0..4).map(|_| fresh_address()).collect();
    let mut credits: Vec<(&str, u64)> = rest.iter().map(|a| (a.as_str(), COIN / 4)).collect();
    credits.push((&hidden, COIN / 2));
    books.credit(&credits).await;
    books.devnet.reject_address(&hidden, 15, false);
    let report = books.run().await;
    assert_eq!(report.quarantined, vec![hidden.clone()], "{report:?}");
    for address in &rest {
        books.paid_once(address, 1);
    }
    assert_eq!(books.field(&hidden, "balance"), COIN / 2);
    assert!(books.devnet.state().wallet.prepared.is_empty(), "nothing left prepared");
    books.audit_ok().await;
    assert!(books.journal().is_empty());
}

/// §5b: the payouts plus the fee exceed the wallet's unlocked balance by one atomic unit: the
/// largest payouts that fit are paid in this run, the smallest waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pays_what_fits() {
    let books = Books::start(1).await;
    let unlocked = books.wallet.balance().await.unwrap().unlocked;
    let (a, b, c) = (fresh_address(), fresh_address(), fresh_address());
    let (big, mid) = (unlocked / 2, unlocked / 4);
    let small = unlocked - big - mid - 1000 + 1;
    books.credit(&[(&a, big), (&b, mid), (&c, small)]).await;
    let report = books.run().await;
    assert_eq!(report.sent.len(), 1, "{report:?}");
    assert_eq!(report.deferred, 1);
    assert_eq!(books.field(&a, "paid"), big);
    assert_eq!(books.field(&b, "paid"), mid);
    assert_eq!(books.field(&c, "paid"), 0);
    assert_eq!(books.field(&c, "balance"), small, "waits, untouched");
    books.paid_once(&a, 1);
    books.paid_once(&b, 1);
    books.audit_ok().await;
}

/// A finalized payment is checked later: confirmed in a block, it is done; dropped from the
/// mempool (never mined), it is flagged after `lookupRounds` runs — audit problem, listed —
/// and never paid again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_never_confirms_is_flagged_and_never_paid_again() {
    let books = Books::start(2).await;
    let (kept, lost) = (fresh_address(), fresh_address());
    books.credit(&[(&kept, COIN)]).await;
    assert_eq!(books.run().await.sent.len(), 1);
    books.devnet.mine(1);
    books.run().await;
    assert!(books.store.confirming().await.unwrap().is_empty(), "confirmed in a block: checked off");

    books.credit(&[(&lost, COIN)]).await;
    assert_eq!(books.run().await.sent.len(), 1);
    assert_eq!(books.devnet.drop_mempool(None).len(), 1);
    for _ in 1..books.settings.lookup_rounds {
        let report = books.run().await;
        assert_eq!((report.dropped, report.sent.len()), (0, 0), "{report:?}");
    }
    let report = books.run().await;
    assert_eq!(report.dropped, 1, "{report:?}");
    let audit = books.store.audit().await.unwrap();
    assert_eq!(audit.dropped_batches.len(), 1);
    assert!(audit.problems().iter().any(|p| p.contains("never confirmed")), "{:?}", audit.problems());
    for _ in 0..3 {
        assert!(books.run().await.sent.is_empty(), "never re-paid by itself");
    }
    assert_eq!(books.field(&lost, "paid"), COIN, "the books say paid: the operator decides");
    assert_eq!(books.devnet.received(&lost).received, 0, "the wallet never paid it");
    books.paid_once(&kept, 1);
    books.audit_ok().await;
}

/// Past `holdAfter` an unresolved batch is held (reserved, no longer retried). The operator's
/// resolution is refused when the wallet contradicts it; "not sent" deletes the prepared
/// transaction first. Its inputs stay locked in the wallet: the wallet check names the gap
/// until the wallet rescans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_batch_is_settled_by_the_operator_only_as_the_wallet_shows() {
    use pastella_pool::accounting::payments::{resolve_held, wallet_books, Resolution, ResolveError};
    let mut books = Books::start(4).await;
    books.settings.hold_after = Duration::ZERO;
    let miner = fresh_address();
    books.credit(&[(&miner, COIN)]).await;
    books.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    assert_eq!(books.run().await.uncertain, 1);
    let id = books.store.journal().await.unwrap()[0].id.clone();
    assert!(matches!(
        resolve_held(&books.store, &books.wallet, &id, Resolution::NotSent).await,
        Err(ResolveError::NotHeld { .. })
    ));
    let report = books.run().await;
    assert_eq!((report.held, report.uncertain), (1, 0), "{report:?}");
    assert_eq!(books.journal()[0]["state"], "held");
    assert_eq!(books.store.audit().await.unwrap().held_batches, vec![id.clone()]);
    assert_eq!(books.run().await.held, 1, "stays held, still reserved");
    assert_eq!(books.field(&miner, "pending"), COIN);

    books.devnet.set_daemon_mode(DaemonMode::Normal, None);
    let refused = resolve_held(&books.store, &books.wallet, &id, Resolution::Sent).await;
    assert!(matches!(refused, Err(ResolveError::Contradicted(_))), "{refused:?}");
    assert_eq!(books.field(&miner, "pending"), COIN, "nothing changed");

    // The same through the operator's command line.
    let config = temp_path("payments-held.json");
    let json = pool_config_json(&books.redis, &books.devnet, &[(free_port(), 1000)], serde_json::json!({}));
    std::fs::write(&config, json.to_string()).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
            .args(["payments", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, list) = cli(&["list"]);
    assert_eq!(code, Some(0), "{list}");
    assert!(list.contains(&id) && list.contains("held"), "{list}");
    let (code, text) = cli(&["resolve", &id, "--sent"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused") && text.contains("use --not-sent"), "{text}");
    let (code, text) = cli(&["resolve", &id, "--not-sent"]);
    assert_eq!(code, Some(0), "{text}");
    let _ = std::fs::remove_file(&config);
    assert!(books.devnet.state().wallet.prepared.is_empty(), "the prepared transaction was deleted first");
    assert_eq!(books.field(&miner, "balance"), COIN);
    assert_eq!(books.run().await.sent.len(), 1, "paid with a new transaction");
    books.devnet.mine(1);
    books.run().await;
    books.paid_once(&miner, 1);
    books.audit_ok().await;

    // The deleted transaction's inputs are still locked (as in the real wallet): a gap.
    let check = wallet_books(&books.store, &books.wallet).await.unwrap();
    assert_eq!((check.batches_in_flight, check.payments_unconfirmed), (0, 0), "{check:?}");
    assert!(check.problems().iter().any(|p| p.contains("PUT /reset")), "{check:?}");
    books.wallet.reset().await.unwrap();
    let check = wallet_books(&books.store, &books.wallet).await.unwrap();
    assert_eq!(check.problems(), Vec::<String>::new(), "{check:?}");
}

/// The operator sees it over HTTP too: `/health` names the wallet's gap against the books
/// (without turning into a 503), `/admin_payments` lists quarantined addresses and batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_admin_payments_show_what_needs_the_operator() {
    let books = Books::start(2).await;
    let bad = bad_checksum(&fresh_address());
    books.credit(&[(&bad, COIN)]).await;
    // A prepared transaction the wallet then forgets: its inputs stay locked.
    let prepared = books
        .wallet
        .prepare_advanced(&[pastella_pool::node::wallet::Destination { address: fresh_address(), amount: COIN }], None)
        .await
        .unwrap();
    books.devnet.restart_wallet();
    assert_eq!(books.wallet.send_prepared(&prepared.transaction_hash).await.unwrap_err().code(), Some(58));

    let api_port = free_port();
    let patch = serde_json::json!({
        "payments": {"enabled": true, "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "api": {"port": api_port, "password": "s3cret-admin"},
    });
    let pool = PoolProcess::start(
        pool_config(&books.redis, &books.devnet, &[(free_port(), 1000)], patch),
        &[pastella_pool::config::Module::Api],
    );
    let base = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "reachability only");
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["books"]["ok"], false, "{health}");
    let problems = health["books"]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("PUT /reset")), "{health}");
    assert_eq!(health["books"]["wallet"]["locked"].as_u64(), Some(COIN + 1000), "{health}");

    let admin: serde_json::Value =
        http.get(format!("{base}/admin_payments?password=s3cret-admin")).send().await.unwrap().json().await.unwrap();
    assert!(admin["quarantined"][&bad].as_str().unwrap().contains("imported from the old pool"), "{admin}");
    assert_eq!(admin["inFlight"], serde_json::json!([]));
    assert_eq!(http.get(format!("{base}/api/admin_payments")).send().await.unwrap().status().as_u16(), 401);

    books.wallet.reset().await.unwrap();
    let health: serde_json::Value = http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["books"]["ok"], true, "{health}");
    pool.stop();
}

/// The wallet API restarted with no wallet open while a payment's outcome was unknown: the
/// processor opens the wallet again and settles the same prepared transaction, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_reopens_a_restarted_wallet_and_settles_the_payment() {
    let books = Books::start(2).await;
    let miner = fresh_address();
    books.credit(&[(&miner, COIN)]).await;
    books.store.release_lease(&books.token).await.unwrap();
    books.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let patch = serde_json::json!({
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000,
                     "minerPayFee": false, "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "blockUnlocker": {"leaseTtl": 2},
        "walletApi": {"timeoutMs": 5000},
    });
    let pool = PoolProcess::start(
        pool_config(&books.redis, &books.devnet, &[(free_port(), 1000)], patch),
        &[pastella_pool::config::Module::Payments],
    );
    let mut con = books.redis.conn();
    let unknown = eventually(Duration::from_secs(30), || {
        let ids: Vec<String> = con.zrange("pastella:payments:journal", 0, -1).ok()?;
        let state: Option<String> = con.hget(format!("pastella:payments:batch:{}", ids.first()?), "state").ok()?;
        (state.as_deref() == Some("unknown")).then_some(())
    })
    .await;
    assert!(unknown.is_some(), "the send failed while the daemon was down: unknown");
    // The wallet API restarts: no wallet open (its prepared transaction is still there, as in a
    // wallet that was closed and opened again without a restart of the process).
    let closed = reqwest::Client::new()
        .delete(format!("http://{}/wallet", books.devnet.wallet_addr))
        .header("X-API-KEY", "devnet-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status().as_u16(), 200);
    books.devnet.set_daemon_mode(DaemonMode::Normal, None);
    let paid = eventually(Duration::from_secs(30), || {
        let paid: u64 = con.hget(format!("pastella:balances:{miner}"), "paid").ok()?;
        (paid == COIN).then_some(())
    })
    .await;
    assert!(paid.is_some(), "paid after the wallet was opened again");
    assert!(books.devnet.state().wallet.open);
    pool.stop();
    books.paid_once(&miner, 1);
    books.audit_ok().await;
}
