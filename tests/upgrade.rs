//! Zero-downtime upgrade: `pastella-pool upgrade --config` hands the running pool's listening
//! sockets to a new process while miners submit. No share answered OK is lost, no connection
//! is refused, every miner ends up on the new process, the old one exits 0. A new process that
//! cannot start leaves the old one serving, and the command says why.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pastella_pool::devnet::DevnetHandle;
use redis::Commands;
use serde_json::{json, Value};
use tokio::net::TcpStream;

const MINERS: usize = 4;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ok(reply: &Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

/// What one test miner saw, updated as it goes.
#[derive(Default)]
struct Tally {
    /// TCP connects that succeeded.
    connections: AtomicU64,
    /// Connects refused or failed, and logins not answered with a job.
    failures: AtomicU64,
    /// Σ difficulty of shares answered OK.
    ok: AtomicU64,
    /// Σ difficulty of every share sent.
    sent: AtomicU64,
    /// Shares answered OK on the miner's first connection (the old process).
    ok_first: AtomicU64,
    /// Shares answered OK once the test saw the old process exit.
    ok_after_exit: AtomicU64,
}

/// The test's view of the upgrade.
#[derive(Default)]
struct Phase {
    old_exited: AtomicBool,
    stop: AtomicBool,
}

/// Mines difficulty-1 shares in a loop and reconnects at once when the pool closes the
/// connection, as xmrig does after its retry pause.
async fn keep_mining(port: u16, worker: String, hasher: SharedHasher, tally: Arc<Tally>, phase: Arc<Phase>) {
    let mut nonce = rand::random::<u32>() >> 4;
    while !phase.stop.load(Ordering::SeqCst) {
        let Ok(stream) = TcpStream::connect(addr(port)).await else {
            tally.failures.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let connection = tally.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let mut miner = TestMiner::from_io(stream);
        let login = json!({"login": MINER_A, "pass": worker, "agent": "pastella-test/1.0", "algo": ["rx/0"]});
        let Some(reply) =
            miner.try_call("login", login, Duration::from_secs(30)).await.filter(|r| r["error"].is_null())
        else {
            tally.failures.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        miner.session = reply["result"]["id"].as_str().unwrap().to_string();
        miner.job = Some(Job::from_json(&reply["result"]["job"]));
        while !phase.stop.load(Ordering::SeqCst) {
            if let Some(newest) = miner.pushed.pop_back() {
                miner.pushed.clear();
                miner.job = Some(newest);
            }
            let job = miner.job.clone().unwrap();
            let h = hasher.clone();
            let (seed, blob, diff) = (job.seed, job.blob.clone(), job.difficulty);
            let (n, result) = tokio::task::spawn_blocking(move || h.search(seed, &blob, diff, nonce)).await.unwrap();
            nonce = u32::from_le_bytes(n).wrapping_add(1);
            let after_exit = phase.old_exited.load(Ordering::SeqCst);
            tally.sent.fetch_add(job.difficulty, Ordering::SeqCst);
            let params =
                json!({"id": miner.session, "job_id": job.id, "nonce": hex::encode(n), "result": result.to_hex()});
            match miner.try_call("submit", params, Duration::from_secs(30)).await {
                Some(reply) if ok(&reply) => {
                    tally.ok.fetch_add(job.difficulty, Ordering::SeqCst);
                    if connection == 1 {
                        tally.ok_first.fetch_add(job.difficulty, Ordering::SeqCst);
                    }
                    if after_exit {
                        tally.ok_after_exit.fetch_add(job.difficulty, Ordering::SeqCst);
                    }
                }
                Some(reply) => panic!("share refused: {reply}"),
                // Closed by the pool: reconnect.
                None => break,
            }
        }
    }
}

/// Σ of every `scores:prop:*` entry of `address` (the current round and every closed one).
fn booked(con: &mut redis::Connection, address: &str) -> u64 {
    let keys: Vec<String> = con.keys("pastella:scores:prop:*").unwrap();
    keys.iter().map(|k| con.hget::<_, _, Option<u64>>(k, address).unwrap().unwrap_or(0)).sum()
}

struct Files {
    dir: PathBuf,
    config: PathBuf,
}

/// The pool's directory (its working directory: the control socket lives there) and config.
fn pool_files(name: &str, redis: &RedisServer, devnet: &DevnetHandle, port: u16, http: &Http) -> Files {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pool.json");
    std::fs::write(&config, config_json(redis, devnet, &[port], http).to_string()).unwrap();
    Files { dir, config }
}

/// The API and the separate metrics listener: handed over too.
struct Http {
    api: u16,
    metrics: u16,
}

fn config_json(redis: &RedisServer, devnet: &DevnetHandle, ports: &[u16], http: &Http) -> Value {
    let ports: Vec<(u16, u64)> = ports.iter().map(|p| (*p, 1)).collect();
    let mut json = pool_config_json(redis, devnet, &ports, json!({}));
    merge(
        &mut json,
        &json!({
            "api": {"port": http.api},
            "metrics": {"port": http.metrics},
            // Difficulty 1 throughout: every share is cheap and counted.
            "varDiff": {"minDiff": 1, "maxDiff": 1},
            "upgrade": {"drainSeconds": 3},
            "logging": {"level": "info"}
        }),
    );
    json
}

fn spawn_pool(files: &Files) -> Child {
    let log = std::fs::File::create(files.dir.join("pool.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["run", "--config"])
        .arg(&files.config)
        .current_dir(&files.dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Runs `pastella-pool upgrade --config <config>` from the pool's directory, as an operator does.
async fn upgrade(dir: &Path, config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pastella-pool"));
    cmd.args(["upgrade", "--config"]).arg(config).current_dir(dir);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Waits until every miner's `field` passes `at_least` (shares keep coming in).
async fn all_reach(tallies: &[Arc<Tally>], what: &str, field: fn(&Tally) -> u64, at_least: impl Fn(usize) -> u64) {
    let reached = eventually(Duration::from_secs(180), || {
        tallies.iter().enumerate().all(|(i, t)| field(t) >= at_least(i)).then_some(())
    })
    .await;
    assert!(reached.is_some(), "never happened: {what}");
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills the pool processes a failed test leaves behind (the new one is not the test's child).
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        // The old process's child (a new process whose pid the test never learnt) goes too.
        let children = |pid: &u32| -> Vec<u32> {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .flat_map(|list| list.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>())
                .collect()
        };
        let mut pids = self.0.clone();
        pids.extend(self.0.iter().flat_map(children));
        for pid in pids.iter().filter(|pid| pid_alive(**pid)) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_loses_no_share_refuses_no_connection_and_moves_every_miner() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let port = free_port();
    let http = Http { api: free_port(), metrics: free_port() };
    let files = pool_files("upgrade-test", &redis, &devnet, port, &http);
    let hasher = SharedHasher::new();
    let mut old = spawn_pool(&files);
    let mut reaper = Reaper(vec![old.id()]);
    let up = eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr(port)).ok().map(drop)).await;
    assert!(up.is_some(), "the pool listens on {port}");
    let up = eventually(Duration::from_secs(60), || files.dir.join("pastella-pool.sock").exists().then_some(())).await;
    assert!(up.is_some(), "the pool listens on its control socket");

    let phase = Arc::new(Phase::default());
    let tallies: Vec<Arc<Tally>> = (0..MINERS).map(|_| Arc::new(Tally::default())).collect();
    let miners: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, t)| tokio::spawn(keep_mining(port, format!("rig{i}"), hasher.clone(), t.clone(), phase.clone())))
        .collect();
    all_reach(&tallies, "every miner had shares accepted", |t| t.ok.load(Ordering::SeqCst), |_| 3).await;

    // 1. An invalid config: refused before the running pool is asked; nothing changes.
    let bad = files.dir.join("bad.json");
    let mut json = config_json(&redis, &devnet, &[port], &http);
    merge(&mut json, &json!({"upgrade": {"drainSeconds": 0}}));
    std::fs::write(&bad, json.to_string()).unwrap();
    let out = upgrade(&files.dir, &bad).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("upgrade.drainSeconds"), "the error names the key: {}", text(&out));
    assert!(text(&out).contains("running pool is untouched"), "{}", text(&out));

    // 2. A config the new process cannot start with (its extra port is taken): it exits before
    // serving, the command says so, and the old process serves on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unstartable = files.dir.join("unstartable.json");
    let json = config_json(&redis, &devnet, &[port, taken.local_addr().unwrap().port()], &http);
    std::fs::write(&unstartable, json.to_string()).unwrap();
    let out = upgrade(&files.dir, &unstartable).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exited with exit status: 1 before serving"), "the command says why: {}", text(&out));
    drop(taken);
    assert!(old.try_wait().unwrap().is_none(), "the old process still runs");
    let before: Vec<u64> = tallies.iter().map(|t| t.ok.load(Ordering::SeqCst)).collect();
    all_reach(&tallies, "miners still mining on the old process", |t| t.ok.load(Ordering::SeqCst), |i| before[i] + 2)
        .await;
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(t.connections.load(Ordering::SeqCst), 1, "miner {i} stayed connected through the failed upgrades");
    }

    // 3. The upgrade, miners submitting all along.
    let out = upgrade(&files.dir, &files.config).await;
    let said = text(&out);
    assert!(out.status.success(), "upgrade: {said}");
    let done = said.lines().find(|l| l.starts_with("upgrade done:")).unwrap_or_else(|| panic!("no outcome: {said}"));
    assert!(done.contains(&format!("{MINERS} session(s) drained")), "{done}");
    let new_pid: u32 = done.rsplit("(pid ").next().unwrap().split(')').next().unwrap().parse().unwrap();
    reaper.0.push(new_pid);
    assert_ne!(new_pid, old.id());
    let status = tokio::task::spawn_blocking(move || old.wait().unwrap()).await.unwrap();
    assert!(status.success(), "the old process exits 0: {status}");
    phase.old_exited.store(true, Ordering::SeqCst);

    // Every share the old process answered OK is booked once it exited.
    let mut con = redis.conn();
    let on_old: u64 = tallies.iter().map(|t| t.ok_first.load(Ordering::SeqCst)).sum();
    assert!(booked(&mut con, MINER_A) >= on_old, "the old process booked every share it answered OK");
    // Every miner mines on the new process: the old one is gone.
    all_reach(&tallies, "every miner mines on the new process", |t| t.ok_after_exit.load(Ordering::SeqCst), |_| 2)
        .await;
    assert!(pid_alive(new_pid), "the new process serves");
    // The API and metrics listeners were handed over too: the new process answers on them.
    let stats = reqwest::get(format!("http://127.0.0.1:{}/stats", http.api)).await.unwrap();
    assert!(stats.status().is_success(), "/stats on the new process: {}", stats.status());
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", http.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pastella_pool_stratum_disconnects_total"), "/metrics on the new process");
    phase.stop.store(true, Ordering::SeqCst);
    for miner in miners {
        miner.await.unwrap();
    }
    let _ = Command::new("kill").arg("-TERM").arg(new_pid.to_string()).status();
    let gone = eventually(Duration::from_secs(60), || (!pid_alive(new_pid)).then_some(())).await;
    assert!(gone.is_some(), "the new process stops on SIGTERM");

    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(t.failures.load(Ordering::SeqCst), 0, "miner {i}: a connect or login failed");
        assert_eq!(
            t.connections.load(Ordering::SeqCst),
            2,
            "miner {i}: closed once by the old process, reconnected once to the new one"
        );
    }
    let ok: u64 = tallies.iter().map(|t| t.ok.load(Ordering::SeqCst)).sum();
    let sent: u64 = tallies.iter().map(|t| t.sent.load(Ordering::SeqCst)).sum();
    let booked = booked(&mut con, MINER_A);
    assert!(booked >= ok, "{ok} answered OK, {booked} booked: shares lost");
    assert!(booked <= sent, "{booked} booked, more than the {sent} sent");
    // A share booked but never answered is a reply cut by a session closed too early (the
    // shares not booked were sent to a connection the old process had already closed).
    assert_eq!(booked, ok, "booked {booked}, answered OK {ok}: a session was closed before its reply");
    eprintln!("answered OK {ok}, booked {booked}, sent {sent}, on the old process {on_old}");
}

/// `systemctl stop` during an upgrade's drain: the old process closes the sessions it has left
/// at once instead of draining on past the unit's stop timeout, books every share it answered
/// OK and exits 0; the command still reports the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_during_the_drain_closes_the_rest_at_once_and_books_every_share() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let port = free_port();
    let http = Http { api: free_port(), metrics: free_port() };
    let files = pool_files("upgrade-stop-test", &redis, &devnet, port, &http);
    // A drain far longer than any test: only the signal can end it.
    let mut json = config_json(&redis, &devnet, &[port], &http);
    merge(&mut json, &json!({"upgrade": {"drainSeconds": 3600}}));
    std::fs::write(&files.config, json.to_string()).unwrap();
    let hasher = SharedHasher::new();
    let mut old = spawn_pool(&files);
    let mut reaper = Reaper(vec![old.id()]);
    let up = eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr(port)).ok().map(drop)).await;
    assert!(up.is_some(), "the pool listens on {port}");
    let up = eventually(Duration::from_secs(60), || files.dir.join("pastella-pool.sock").exists().then_some(())).await;
    assert!(up.is_some(), "the pool listens on its control socket");
    let phase = Arc::new(Phase::default());
    let tallies: Vec<Arc<Tally>> = (0..MINERS).map(|_| Arc::new(Tally::default())).collect();
    let miners: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, t)| tokio::spawn(keep_mining(port, format!("rig{i}"), hasher.clone(), t.clone(), phase.clone())))
        .collect();
    all_reach(&tallies, "every miner had shares accepted", |t| t.ok.load(Ordering::SeqCst), |_| 3).await;

    let (dir, config) = (files.dir.clone(), files.config.clone());
    let command = tokio::spawn(async move { upgrade(&dir, &config).await });
    let log = files.dir.join("pool.log");
    let draining = eventually(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).unwrap().contains("[Upgrade] draining").then_some(())
    })
    .await;
    assert!(draining.is_some(), "the old process drains");
    let _ = Command::new("kill").arg("-TERM").arg(old.id().to_string()).status();
    // Far less than the hour the drain was given.
    let status = eventually(Duration::from_secs(120), || old.try_wait().unwrap()).await;
    let status = status.expect("the old process exits on SIGTERM during the drain");
    assert!(status.success(), "the old process exits 0: {status}");
    phase.old_exited.store(true, Ordering::SeqCst);
    let out = command.await.unwrap();
    let said = text(&out);
    assert!(out.status.success(), "upgrade: {said}");
    let done = said.lines().find(|l| l.starts_with("upgrade done:")).unwrap_or_else(|| panic!("no outcome: {said}"));
    assert!(done.contains(&format!("{MINERS} session(s) drained")), "{done}");
    let new_pid: u32 = done.rsplit("(pid ").next().unwrap().split(')').next().unwrap().parse().unwrap();
    reaper.0.push(new_pid);

    let mut con = redis.conn();
    let on_old: u64 = tallies.iter().map(|t| t.ok_first.load(Ordering::SeqCst)).sum();
    assert!(booked(&mut con, MINER_A) >= on_old, "the old process booked every share it answered OK");
    all_reach(&tallies, "every miner mines on the new process", |t| t.ok_after_exit.load(Ordering::SeqCst), |_| 1)
        .await;
    phase.stop.store(true, Ordering::SeqCst);
    for miner in miners {
        miner.await.unwrap();
    }
    let _ = Command::new("kill").arg("-TERM").arg(new_pid.to_string()).status();
    let gone = eventually(Duration::from_secs(60), || (!pid_alive(new_pid)).then_some(())).await;
    assert!(gone.is_some(), "the new process stops on SIGTERM");
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(t.failures.load(Ordering::SeqCst), 0, "miner {i}: a connect or login failed");
    }
    let ok: u64 = tallies.iter().map(|t| t.ok.load(Ordering::SeqCst)).sum();
    let booked = booked(&mut con, MINER_A);
    assert_eq!(booked, ok, "booked {booked}, answered OK {ok}");
}

/// A port a reload (SIGHUP) opened is handed over by a later upgrade like the ports of the
/// start: the new process serves it (without the hand-over it would try to bind the port the
/// old process still listens on, fail, and the upgrade with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_added_by_a_reload_is_handed_over_by_an_upgrade() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let (port, added) = (free_port(), free_port());
    let http = Http { api: free_port(), metrics: free_port() };
    let files = pool_files("upgrade-reloaded-port", &redis, &devnet, port, &http);
    let mut old = spawn_pool(&files);
    let mut reaper = Reaper(vec![old.id()]);
    let up = eventually(Duration::from_secs(60), || files.dir.join("pastella-pool.sock").exists().then_some(())).await;
    assert!(up.is_some(), "the pool listens on its control socket");

    std::fs::write(&files.config, config_json(&redis, &devnet, &[port, added], &http).to_string()).unwrap();
    let sent = Command::new("kill").args(["-HUP", &old.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let opened = eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr(added)).ok().map(drop)).await;
    assert!(opened.is_some(), "the reload opened port {added}");

    let out = upgrade(&files.dir, &files.config).await;
    assert!(out.status.success(), "upgrade: {}", text(&out));
    let done = text(&out);
    let done = done.lines().find(|l| l.starts_with("upgrade done:")).unwrap_or_else(|| panic!("no outcome: {done}"));
    let new_pid: u32 = done.rsplit("(pid ").next().unwrap().split(')').next().unwrap().parse().unwrap();
    reaper.0.push(new_pid);
    let status = tokio::task::spawn_blocking(move || old.wait().unwrap()).await.unwrap();
    assert!(status.success(), "the old process exits 0: {status}");
    // Only the new process is left: both ports are its.
    for p in [port, added] {
        let mut miner = TestMiner::connect(addr(p)).await;
        let login = miner.login(MINER_A, "rig").await;
        assert!(login["error"].is_null(), "login on port {p} after the upgrade: {login}");
    }
    let log = std::fs::read_to_string(files.dir.join("pool.log")).unwrap();
    assert!(log.contains("reload applied"), "{log}");
    let _ = Command::new("kill").arg("-TERM").arg(new_pid.to_string()).status();
    let gone = eventually(Duration::from_secs(60), || (!pid_alive(new_pid)).then_some(())).await;
    assert!(gone.is_some(), "the new process stops on SIGTERM");
}
