//! Shared integration-test harness: a real `redis-server` on a free loopback port, the devnet
//! in-process, the pool in its own actix System thread, and a test miner that really mines
//! (RandomX light mode) over real TCP.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pastella_pool::chain::difficulty::{difficulty_of_target4, hash_difficulty};
use pastella_pool::chain::Hash;
use pastella_pool::config::{Config, Module};
use pastella_pool::devnet::{DevnetConfig, DevnetHandle};
use pastella_pool::pow::Hasher;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// The pool address of the shipped config (the devnet wallet's address).
pub const POOL_ADDRESS: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";
/// Miner addresses for tests (valid, distinct).
pub const MINER_A: &str = "PAS18z7m9DGbJFoVv6HiGoiwxNG5mLoniSEFWkguBKt59JSHPHjYaa";

/// A free TCP port on loopback (bound and released: good enough for tests).
///
/// The kernel may hand the same port to two binds in a row once the first is closed, so ports
/// already given out in this process are skipped: a test asking for two ports gets two.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A `redis-server` child on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server not installed (the README's test command installs it)");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) {
                    if let Ok(mut con) = client.get_connection() {
                        if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                            return RedisServer { port, child, _dir: dir };
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut child = child;
            let _ = child.kill();
        }
        panic!("could not start redis-server");
    }

    /// A synchronous connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap().get_connection().unwrap()
    }

    /// Kills Redis (to test outages); `restart` brings it back on the same port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(mut con) =
                redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap().get_connection()
            {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis did not restart");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a devnet with a fixed difficulty on free ports.
pub async fn devnet(difficulty: u64) -> DevnetHandle {
    pastella_pool::devnet::start(DevnetConfig { difficulty: Some(difficulty), ..DevnetConfig::ephemeral() })
        .await
        .expect("devnet starts")
}

/// Deep-merges `patch` into `base`.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A pool config for tests: light mode, fast polling, the given stratum ports and difficulties.
pub fn pool_config(redis: &RedisServer, devnet: &DevnetHandle, ports: &[(u16, u64)], patch: Value) -> Config {
    let json = pool_config_json(redis, devnet, ports, patch);
    let (config, _) = Config::from_json_str(&json.to_string(), "test config").unwrap();
    config
}

/// The JSON of [`pool_config`] (for a config file given to the pool binary).
pub fn pool_config_json(redis: &RedisServer, devnet: &DevnetHandle, ports: &[(u16, u64)], patch: Value) -> Value {
    let ports_json: serde_json::Map<String, Value> =
        ports.iter().map(|(p, d)| (p.to_string(), json!({"diff": d, "desc": format!("test port {p}")}))).collect();
    let mut config = json!({
        "coin": "pastella",
        "poolAddress": POOL_ADDRESS,
        "coinUnits": 100000000,
        "cnAlgorithm": "randomx",
        "isRandomX": true,
        "daemon": {"host": "127.0.0.1", "port": devnet.daemon_addr.port()},
        "walletApi": {"host": "127.0.0.1", "port": devnet.wallet_addr.port(), "apiKey": "devnet-api-key",
                      "walletFile": "pool.wallet", "walletPassword": "devnet"},
        "redis": {"host": "127.0.0.1", "port": redis.port, "db": 0},
        "ports": ports_json,
        "poolServer": {"blockRefreshInterval": 50, "bindIp": "127.0.0.1"},
        "varDiff": {"minDiff": 1, "maxDiff": 1000000, "targetTime": 30, "retargetTime": 15, "variancePercent": 30, "maxJump": 50},
        "randomx": {"mode": "light", "threads": 2},
        "api": {"port": free_port(), "bindIp": "127.0.0.1"},
        "payments": {"enabled": false},
        "blockUnlocker": {"enabled": false},
        "logging": {"level": "warn"}
    });
    merge(&mut config, &patch);
    config
}

/// The pool running in its own thread and actix System.
pub struct PoolProcess {
    pub http_addr: Option<SocketAddr>,
    /// The pool's RandomX engine (for fault injection).
    pub engine: Option<pastella_pool::pow::PowEngine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PoolProcess {
    pub fn start(config: Config, modules: &[Module]) -> PoolProcess {
        // RUST_LOG=info cargo test ... shows the pool's log.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ =
                tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
        }
        let modules = modules.to_vec();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                match pastella_pool::app::start(config, &modules).await {
                    Ok(pool) => {
                        let _ = ready_tx.send(Ok((pool.http_addr, pool.engine.clone())));
                        let _ = stop_rx.await;
                        pool.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        let (http_addr, engine) =
            ready_rx.recv_timeout(Duration::from_secs(60)).expect("pool start").expect("pool starts");
        PoolProcess { http_addr, engine, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Shuts down cleanly (writes pending shares).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PoolProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A RandomX light hasher shared by a test's miners (one 256 MiB cache).
#[derive(Clone)]
pub struct SharedHasher {
    inner: Arc<Mutex<Option<(Hash, Hasher)>>>,
}

impl SharedHasher {
    pub fn new() -> SharedHasher {
        SharedHasher { inner: Arc::new(Mutex::new(None)) }
    }

    /// Searches nonces from `start` until the hash meets `difficulty`; blocking.
    pub fn search(&self, seed: Hash, blob: &[u8], difficulty: u64, start: u32) -> ([u8; 4], Hash) {
        let mut guard = self.inner.lock().unwrap();
        if guard.as_ref().map(|(s, _)| *s != seed).unwrap_or(true) {
            *guard = Some((seed, Hasher::light(seed.as_bytes()).unwrap()));
        }
        let hasher = &mut guard.as_mut().unwrap().1;
        let mut blob = blob.to_vec();
        for nonce in start.. {
            let bytes = nonce.to_le_bytes();
            blob[39..43].copy_from_slice(&bytes);
            let hash = Hash(hasher.hash(&blob));
            if hash_difficulty(&hash) >= difficulty {
                return (bytes, hash);
            }
        }
        unreachable!()
    }

    /// Hashes one nonce.
    pub fn hash(&self, seed: Hash, blob: &[u8], nonce: [u8; 4]) -> Hash {
        let mut guard = self.inner.lock().unwrap();
        if guard.as_ref().map(|(s, _)| *s != seed).unwrap_or(true) {
            *guard = Some((seed, Hasher::light(seed.as_bytes()).unwrap()));
        }
        let mut blob = blob.to_vec();
        blob[39..43].copy_from_slice(&nonce);
        Hash(guard.as_mut().unwrap().1.hash(&blob))
    }
}

/// A job as a test miner sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub blob: Vec<u8>,
    pub target: String,
    /// Difficulty xmrig would derive from the target.
    pub difficulty: u64,
    pub height: u64,
    pub seed: Hash,
    pub raw: Value,
}

impl Job {
    pub fn from_json(v: &Value) -> Job {
        let target = v["target"].as_str().unwrap().to_string();
        let difficulty = if target.len() == 8 {
            difficulty_of_target4(u32::from_le_bytes(hex::decode(&target).unwrap().try_into().unwrap()))
        } else {
            u64::MAX / u64::from_le_bytes(hex::decode(&target).unwrap().try_into().unwrap())
        };
        Job {
            id: v["job_id"].as_str().unwrap().to_string(),
            blob: hex::decode(v["blob"].as_str().unwrap()).unwrap(),
            target,
            difficulty,
            height: v["height"].as_u64().unwrap(),
            seed: Hash::from_hex(v["seed_hash"].as_str().unwrap()).unwrap(),
            raw: v.clone(),
        }
    }
}

/// A stratum client speaking like xmrig.
pub struct TestMiner {
    reader: tokio::io::Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    next_id: u64,
    pub session: String,
    pub pushed: VecDeque<Job>,
    pub job: Option<Job>,
}

impl TestMiner {
    pub async fn connect(addr: SocketAddr) -> TestMiner {
        Self::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    /// Connects from a chosen loopback source address (127.0.0.x), to test per-IP rules.
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> TestMiner {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        Self::from_stream(socket.connect(addr).await.unwrap())
    }

    fn from_stream(stream: TcpStream) -> TestMiner {
        Self::from_io(stream)
    }

    /// A miner over any byte stream (TLS, or a socket that already sent a PROXY header).
    pub fn from_io<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> TestMiner {
        let (read, writer) = tokio::io::split(stream);
        TestMiner {
            reader: BufReader::new(Box::new(read) as Box<dyn AsyncRead + Send + Unpin>).lines(),
            writer: Box::new(writer),
            next_id: 1,
            session: String::new(),
            pushed: VecDeque::new(),
            job: None,
        }
    }

    /// Sends a raw line.
    pub async fn send_line(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// Sends bytes without a newline (an unfinished request line).
    pub async fn send_partial(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    /// Reads the next line (None on close or after `timeout`).
    pub async fn read_line(&mut self, timeout: Duration) -> Option<String> {
        match tokio::time::timeout(timeout, self.reader.next_line()).await {
            Ok(Ok(line)) => line,
            _ => None,
        }
    }

    /// True once the pool closed the connection (reads until EOF, within `timeout`).
    pub async fn closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match tokio::time::timeout(deadline - Instant::now(), self.reader.next_line()).await {
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Ok(Ok(Some(_))) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Sends a request and returns the whole reply; job pushes read meanwhile are queued.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "jsonrpc": "2.0", "method": method, "params": params}).to_string();
        self.send_line(&line).await;
        loop {
            let line = self.read_line(Duration::from_secs(30)).await.unwrap_or_else(|| panic!("no reply to {method}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["method"] == "job" {
                self.pushed.push_back(Job::from_json(&v["params"]));
                continue;
            }
            assert_eq!(v["id"], id, "reply id");
            return v;
        }
    }

    /// Logs in; panics on an error reply.
    pub async fn login(&mut self, login: &str, pass: &str) -> Value {
        let reply = self
            .call("login", json!({"login": login, "pass": pass, "agent": "pastella-test/1.0", "algo": ["rx/0"]}))
            .await;
        assert!(reply["error"].is_null(), "login failed: {reply}");
        self.session = reply["result"]["id"].as_str().unwrap().to_string();
        self.job = Some(Job::from_json(&reply["result"]["job"]));
        reply
    }

    /// Waits for the next job push.
    pub async fn next_push(&mut self, timeout: Duration) -> Option<Job> {
        if let Some(job) = self.pushed.pop_front() {
            self.job = Some(job.clone());
            return Some(job);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let line = self.read_line(deadline - Instant::now()).await?;
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["method"] == "job" {
                let job = Job::from_json(&v["params"]);
                self.job = Some(job.clone());
                return Some(job);
            }
        }
        None
    }

    /// Waits for the job at `height`, skipping any other push (vardiff retargets, refreshes).
    pub async fn job_at_height(&mut self, height: u64, timeout: Duration) -> Option<Job> {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.next_push(deadline.saturating_duration_since(Instant::now())).await?;
            if job.height == height {
                return Some(job);
            }
        }
    }

    /// Submits a nonce/result for `job`.
    pub async fn submit(&mut self, job: &Job, nonce: [u8; 4], result: &Hash) -> Value {
        let params = json!({"id": self.session, "job_id": job.id, "nonce": hex::encode(nonce), "result": result.to_hex(), "algo": "rx/0"});
        self.call("submit", params).await
    }

    /// Mines one share for the newest job at its difficulty (or `min`) and submits it.
    pub async fn mine_and_submit(&mut self, hasher: &SharedHasher, min: u64, start: u32) -> (Value, [u8; 4], Hash) {
        if let Some(newest) = self.pushed.pop_back() {
            self.pushed.clear();
            self.job = Some(newest);
        }
        let job = self.job.clone().expect("a job");
        let h = hasher.clone();
        let (seed, blob, diff) = (job.seed, job.blob.clone(), job.difficulty.max(min));
        let (nonce, hash) = tokio::task::spawn_blocking(move || h.search(seed, &blob, diff, start)).await.unwrap();
        let reply = self.submit(&job, nonce, &hash).await;
        (reply, nonce, hash)
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `url` until the body satisfies `check` (two minutes at most); the body. Panics naming
/// `what` and showing the last body otherwise.
pub async fn get_until(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..1200 {
        if let Ok(response) = reqwest::get(url).await {
            last = response.text().await.unwrap_or_default();
            if check(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never reached: {what}\n{last}");
}

/// Where a test keeps temporary files.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pastella-test-{}-{name}", std::process::id()))
}

/// Mines with `miners` in turn until the devnet's chain grew by `blocks` blocks found by the
/// pool (the devnet's own miners must be off), or `timeout`. Returns the blocks found. Every
/// block answered OK is on the chain when it returns (see [`BlocksInFlight`]), so the caller
/// may let the devnet mine right after.
pub async fn mine_blocks(
    devnet: &DevnetHandle,
    miners: &mut [TestMiner],
    hasher: &SharedHasher,
    blocks: u64,
    timeout: Duration,
) -> u64 {
    let start = devnet.block_count();
    let deadline = Instant::now() + timeout;
    let mut nonce = rand::random::<u32>() >> 4;
    let mut in_flight = BlocksInFlight::default();
    while devnet.block_count() < start + blocks && Instant::now() < deadline {
        for miner in miners.iter_mut() {
            let (reply, n, result) = miner.mine_and_submit(hasher, 0, nonce).await;
            nonce = u32::from_le_bytes(n).wrapping_add(1);
            in_flight.note(devnet, miner.job.as_ref().expect("the job mined"), &reply, &result);
        }
    }
    let landed = in_flight.landed(devnet, Duration::from_secs(300)).await;
    assert!(landed, "a block the pool answered OK never reached the daemon: {in_flight:?}");
    devnet.block_count() - start
}

/// Redis, a devnet with a fixed difficulty and a pool on `ports`, for one test. Fields drop in
/// order: the pool stops (writing its shares) before Redis goes away.
pub struct Stack {
    pub pool: PoolProcess,
    pub devnet: DevnetHandle,
    pub redis: RedisServer,
    pub hasher: SharedHasher,
}

impl Stack {
    pub async fn start(devnet_difficulty: u64, ports: &[(u16, u64)], patch: Value, modules: &[Module]) -> Stack {
        let redis = RedisServer::start();
        let devnet = devnet(devnet_difficulty).await;
        let pool = PoolProcess::start(pool_config(&redis, &devnet, ports, patch), modules);
        Stack { pool, devnet, redis, hasher: SharedHasher::new() }
    }
}

impl TestMiner {
    /// Like [`TestMiner::call`], but None when the pool closes the connection or does not
    /// answer within `timeout` (for tests that stop the pool under the miner).
    pub async fn try_call(&mut self, method: &str, params: Value, timeout: Duration) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "jsonrpc": "2.0", "method": method, "params": params}).to_string();
        self.writer.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        loop {
            let v: Value = serde_json::from_str(&self.read_line(timeout).await?).ok()?;
            if v["method"] == "job" {
                self.pushed.push_back(Job::from_json(&v["params"]));
                continue;
            }
            return (v["id"] == id).then_some(v);
        }
    }
}

impl RedisServer {
    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&self) {
        let _ = Command::new("kill").arg("-STOP").arg(self.child.id().to_string()).status();
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).status();
    }
}

/// Blocks the test miners found that may not be on the devnet's chain yet. The pool answers a
/// block's share before the block reaches the daemon (the candidate is written to Redis first,
/// with `WAIT` under `redis.waitReplicas`, and a daemon outage delays it further), so a test
/// that lets the devnet mine "only between pool blocks" must wait for these first: a devnet
/// block mined meanwhile takes the height and the pool's block ends an orphan.
#[derive(Debug, Default)]
pub struct BlocksInFlight {
    /// The highest height at which a block was found and not seen on the chain.
    highest: Option<u64>,
}

impl BlocksInFlight {
    /// Notes the share `result` that `job` got `reply` for: a block if it was answered OK, meets
    /// the network difficulty of the job's height and that height is not on the chain yet. (A
    /// block at a height already taken is the pool's second one there, which it never submits.)
    pub fn note(&mut self, devnet: &DevnetHandle, job: &Job, reply: &Value, result: &Hash) {
        if reply["result"]["status"] != "OK" {
            return;
        }
        // One snapshot: while the chain is below the job's height, `difficulty` is its height's.
        let state = devnet.state();
        if state.block_count <= job.height && hash_difficulty(result) >= state.difficulty {
            self.highest = Some(self.highest.map_or(job.height, |h| h.max(job.height)));
        }
    }

    /// Waits until the chain holds every noted height (the devnet mines only on request, so
    /// the block there is the pool's), at most `timeout`. False if one is still missing.
    pub async fn landed(&mut self, devnet: &DevnetHandle, timeout: Duration) -> bool {
        let Some(highest) = self.highest else { return true };
        let landed = eventually(timeout, || (devnet.block_count() > highest).then_some(())).await.is_some();
        if landed {
            self.highest = None;
        }
        landed
    }
}
