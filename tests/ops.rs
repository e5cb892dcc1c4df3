//! Operating the pool (issue 12): the deploy/ files, admin routes behind nginx, Redis safety at
//! start-up, metrics from the first scrape, the alert rules' unit tests and fail2ban against
//! ban lines the pool binary really wrote.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when `cmd` can be run; otherwise says loudly that a check is skipped.
fn have(cmd: &str, what: &str) -> bool {
    let found = Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `{cmd}` is not installed (scripts/deps.sh --test): {what} NOT checked !!!!!!!!\n"
        );
    }
    found
}

/// Every `pastella_pool_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pastella_pool_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The pool binary running `config` (written to a file), its log (stdout and stderr) in a file.
struct PoolBinary {
    child: Child,
    log: PathBuf,
}

impl PoolBinary {
    fn start(name: &str, config: &Value, args: &[&str]) -> PoolBinary {
        let config_path = temp_path(&format!("{name}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = temp_path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
            .args(["run", "--config"])
            .arg(&config_path)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        PoolBinary { child, log }
    }

    /// Like [`PoolBinary::start`], with the open-file limit (soft and hard) set to `files`.
    fn start_with_open_files(name: &str, config: &Value, files: u64) -> PoolBinary {
        use std::os::unix::process::CommandExt;
        let config_path = temp_path(&format!("{name}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = temp_path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pastella-pool"));
        command.args(["run", "--config"]).arg(&config_path).stdout(file.try_clone().unwrap()).stderr(file);
        // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: files, rlim_max: files };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        PoolBinary { child: command.spawn().unwrap(), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; its exit status.
    async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        eventually(timeout, || child.try_wait().ok().flatten()).await
    }
}

impl Drop for PoolBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url` until it answers; the body.
async fn get_when_up(url: &str) -> String {
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(url).await {
            return response.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

#[test]
fn alert_rules_fire_and_resolve_under_promtool() {
    if !have("promtool", "the alert rules' unit tests") {
        return;
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(root().join("grafana/prometheus/alerts.test.yml"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool test rules:\n{text}");
    // Every alert of the rules file has a test.
    let rules = std::fs::read_to_string(root().join("grafana/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(root().join("grafana/prometheus/alerts.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            assert!(tests.contains(&format!("alertname: {}", name.trim())), "{} has no promtool test", name.trim());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pool_exports_every_series_the_dashboards_and_alerts_use() {
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let port = free_port();
    let patch = json!({
        "blockUnlocker": {"enabled": true},
        "payments": {"enabled": true},
        "logging": {"level": "info"}
    });
    let config = pool_config_json(&redis, &devnet, &[(port, 1000)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let _pool = PoolBinary::start("fresh-metrics", &config, &[]);
    // The first scrape: no miner connected, no share, no block, no payment, no error.
    let scrape = get_when_up(&format!("http://127.0.0.1:{api}/metrics")).await;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        used.extend(metric_names(&std::fs::read_to_string(entry.unwrap().path()).unwrap()));
    }
    used.extend(metric_names(&std::fs::read_to_string(root().join("grafana/prometheus/alerts.yml")).unwrap()));
    let missing: Vec<_> = used.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "a fresh pool lacks {missing:?}\n\n{scrape}");
    // The label sets the selectors use exist too, at zero.
    for series in [
        "pastella_pool_blocks_total{status=\"orphaned\"} 0",
        "pastella_pool_payment_batches_total{outcome=\"released\"} 0",
        "pastella_pool_payment_batches_total{outcome=\"unknown\"} 0",
        "pastella_pool_bans_total 0",
        &format!("pastella_pool_stratum_connections{{port=\"{port}\"}} 0"),
    ] {
        assert!(scrape.lines().any(|l| l == series), "no `{series}` in\n{scrape}");
    }
}

/// nginx in the foreground (no master, no daemon) on a config made of `server_blocks`, killed
/// on drop.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx serving `server_blocks` (an `http {}` body) and waits until `port` accepts.
    fn start(server_blocks: &str, port: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {server_blocks}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, _dir: dir };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx never listened on {port}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body of `GET url` (certificates not checked: the test's own is self-signed).
fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-ks", "--max-time", "30", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// Admin routes behind the two obvious proxy configs (`location /` as the status page's, and
/// the old frontend README's `location /api/` that strips the prefix), with no proxy headers:
/// every request reaches the pool from 127.0.0.1 looking local. They need the password unless
/// the operator opts in to passwordless loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_password_behind_nginx() {
    if !have("nginx", "admin routes behind nginx") {
        return;
    }
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    for opt_in in [false, true] {
        let patch = json!({"api": {"password": "s3cret", "passwordlessLoopbackAdmin": opt_in}});
        let config = pool_config(&redis, &devnet, &[(free_port(), 1000)], patch);
        let pool = PoolProcess::start(config, &[pastella_pool::config::Module::Api]);
        let api = pool.http_addr.unwrap();
        let (root_port, api_port) = (free_port(), free_port());
        let _nginx = Nginx::start(
            &format!(
                "server {{ listen 127.0.0.1:{root_port}; location / {{ proxy_pass http://{api}; }} }}\n\
                 server {{ listen 127.0.0.1:{api_port}; location /api/ {{ proxy_pass http://{api}/; }} }}"
            ),
            api_port,
        );
        let _ = get_when_up(&format!("http://127.0.0.1:{root_port}/stats")).await;
        for base in [format!("http://127.0.0.1:{root_port}"), format!("http://127.0.0.1:{api_port}/api")] {
            let (status, _) = curl(&format!("{base}/stats"));
            assert_eq!(status, 200, "{base}/stats");
            for route in ["/admin_users", "/admin_stats", "/miners_hashrate"] {
                let (status, body) = curl(&format!("{base}{route}"));
                if opt_in {
                    // What the opt-in means: through a proxy that adds no header, every
                    // visitor is "loopback". Documented: never with a proxy in front.
                    assert_eq!(status, 200, "opted in: {base}{route} {body}");
                } else {
                    assert_eq!((status, body.as_str()), (401, "Invalid password"), "{base}{route}");
                }
                let (status, _) = curl(&format!("{base}{route}?password=s3cret"));
                assert_eq!(status, 200, "{base}{route} with the password");
                let (status, _) = curl(&format!("{base}{route}?password=wrong"));
                assert_eq!(status, 401, "{base}{route} with a wrong password");
            }
        }
        // Straight to the pool from loopback: only with the opt-in.
        let (status, _) = curl(&format!("http://{api}/admin_users"));
        assert_eq!(status, if opt_in { 200 } else { 401 });
        pool.stop();
    }
}

/// deploy/nginx/pastella-pool.conf, as shipped but for its ports, certificate and paths: the
/// old frontend at `/`, the status page at `/status/`, the API at `/api/` with the visitor's
/// address passed, admin routes behind the password, `/metrics` not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_site_serves_the_frontend_status_page_and_api() {
    if !have("nginx", "deploy/nginx/pastella-pool.conf") || !have("openssl", "deploy/nginx/pastella-pool.conf") {
        return;
    }
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let patch = json!({"api": {"password": "s3cret", "trustProxyIP": true}, "logging": {"level": "info"}});
    let config = pool_config_json(&redis, &devnet, &[(free_port(), 1000)], patch);
    let api = format!("127.0.0.1:{}", config["api"]["port"]);
    let pool = PoolBinary::start("nginx-site", &config, &["--module", "api"]);
    let _ = get_when_up(&format!("http://{api}/stats")).await;
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("fullchain.pem"), files.path().join("privkey.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pool.example.org"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let frontend = files.path().join("frontend");
    std::fs::create_dir(&frontend).unwrap();
    std::fs::write(frontend.join("index.html"), "<html>the old frontend</html>").unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let site = std::fs::read_to_string(root().join("deploy/nginx/pastella-pool.conf"))
        .unwrap()
        .replace("server 127.0.0.1:8117;", &format!("server {api};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{http_port};"))
        .replace("listen 443 ssl http2;", &format!("listen 127.0.0.1:{https_port} ssl http2;"))
        .replace("/etc/letsencrypt/live/pool.example.org/fullchain.pem", &cert.display().to_string())
        .replace("/etc/letsencrypt/live/pool.example.org/privkey.pem", &key.display().to_string())
        .replace("/var/www/pastella-pool-frontend", &frontend.display().to_string())
        .replace("/var/www/letsencrypt", &files.path().display().to_string())
        .lines()
        .filter(|l| !l.contains("listen [::]"))
        .collect::<Vec<_>>()
        .join("\n");
    let _nginx = Nginx::start(&site, https_port);
    let base = format!("https://127.0.0.1:{https_port}");

    let (status, body) = curl(&format!("{base}/"));
    assert_eq!((status, body.as_str()), (200, "<html>the old frontend</html>"));
    let (status, body) = curl(&format!("{base}/blocks"));
    assert_eq!((status, body.as_str()), (200, "<html>the old frontend</html>"), "single-page app routes");
    let (status, body) = curl(&format!("{base}/status/"));
    assert_eq!(status, 200);
    assert!(body.contains("status.js"), "the built-in status page: {body}");
    let (status, body) = curl(&format!("{base}/status/stats"));
    assert_eq!(status, 200, "the status page's relative `stats` URL: {body}");
    let (status, body) = curl(&format!("{base}/api/stats"));
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["pool"].is_object(), "{body}");
    assert_eq!(curl(&format!("{base}/api/admin_users")), (401, "Invalid password".to_string()));
    assert_eq!(curl(&format!("{base}/status/admin_users")).0, 401);
    assert_eq!(curl(&format!("{base}/api/admin_users?password=s3cret")).0, 200);
    assert_eq!(curl(&format!("{base}/api/metrics")).0, 404);
    assert_eq!(curl(&format!("{base}/status/metrics")).0, 404);
    let (status, _) = curl(&format!("http://127.0.0.1:{http_port}/api/stats"));
    assert_eq!(status, 301, "plain HTTP redirects to HTTPS");
    // A visitor from 127.0.0.9: the pool, reached by nginx from 127.0.0.1, logs the visitor's
    // address (X-Forwarded-For with api.trustProxyIP).
    let out = Command::new("curl")
        .args(["-ks", "--interface", "127.0.0.9", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{base}/api/admin_stats?password=s3cret"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let logged =
        eventually(Duration::from_secs(10), || pool.log().contains("Admin authorized from 127.0.0.9").then_some(()))
            .await;
    assert!(logged.is_some(), "the visitor's address reaches the pool:\n{}", pool.log());
}

/// A Redis set to `allkeys-lru` (the old operator guide's advice) and persisting nothing: the
/// pool refuses to run its money modules, runs them when the operator overrides, and reports
/// both settings on `/health` and in metrics, following Redis when they change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_or_unpersisted_redis_is_refused_or_reported() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query(&mut con).unwrap();
    let devnet = devnet(1000).await;
    let money = json!({"blockUnlocker": {"enabled": true}, "payments": {"enabled": true}});

    let config = pool_config_json(&redis, &devnet, &[(free_port(), 1000)], money.clone());
    let mut refused = PoolBinary::start("evicting-refused", &config, &[]);
    let status = refused.exited(Duration::from_secs(60)).await.expect("the pool refuses to start");
    assert!(!status.success());
    let log = refused.log();
    assert!(log.contains("Redis maxmemory-policy is allkeys-lru") && log.contains("redis.allowEviction"), "{log}");

    let mut patch = money.clone();
    merge(&mut patch, &json!({"redis": {"allowEviction": true}, "logging": {"level": "info"}}));
    let config = pool_config_json(&redis, &devnet, &[(free_port(), 1000)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let pool = PoolBinary::start("evicting-allowed", &config, &[]);
    let health: Value = serde_json::from_str(&get_when_up(&format!("http://127.0.0.1:{api}/health")).await).unwrap();
    assert_eq!(health["redisConfig"]["ok"], false, "{health}");
    let detail = health["redisConfig"]["detail"].as_str().unwrap();
    assert!(detail.contains("allkeys-lru EVICTS") && detail.contains("persistence NONE"), "{detail}");
    let metrics = get_when_up(&format!("http://127.0.0.1:{api}/metrics")).await;
    assert!(metrics.lines().any(|l| l == "pastella_pool_redis_evicting_policy 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "pastella_pool_redis_persistence_enabled 0"), "{metrics}");
    let log = pool.log();
    assert!(log.contains("Redis maxmemory-policy is allkeys-lru: keys may be evicted"), "{log}");
    assert!(log.contains("Redis persists NOTHING"), "{log}");

    // The operator fixes Redis: /health and the metrics follow.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut con).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes").query(&mut con).unwrap();
    let health: Value = serde_json::from_str(&get_when_up(&format!("http://127.0.0.1:{api}/health")).await).unwrap();
    assert_eq!(health["redisConfig"]["ok"], true, "{health}");
    assert_eq!(health["redisConfig"]["detail"], "maxmemory-policy noeviction; persistence aof");
    let metrics = get_when_up(&format!("http://127.0.0.1:{api}/metrics")).await;
    assert!(metrics.lines().any(|l| l == "pastella_pool_redis_evicting_policy 0"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "pastella_pool_redis_persistence_enabled 1"), "{metrics}");
}

/// IPs `fail2ban-regex` finds in `log` with `filter` (a file or a regex), one per matched line.
fn fail2ban_ips(log: &std::path::Path, filter: &str) -> Vec<String> {
    let out = Command::new("fail2ban-regex").args(["--raw", "-o", "ip"]).arg(log).arg(filter).output().unwrap();
    assert!(out.status.success(), "fail2ban-regex: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// A test miner from 127.0.0.2 gets itself banned by the pool binary; the ban line the pool
/// wrote is matched by deploy/fail2ban's filter, plain and behind syslog prefixes (the form the
/// journald backend presents too), with the miner's IP extracted, and by the operator guide's
/// own filter in the plain log; no other line of the pool's log matches. The jails parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail2ban_matches_the_ban_lines_the_pool_writes() {
    if !have("fail2ban-regex", "deploy/fail2ban") {
        return;
    }
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let port = free_port();
    let patch = json!({
        "banning": {"enabled": true, "time": 30, "invalidPercent": 50, "checkThreshold": 1},
        "logging": {"level": "info"}
    });
    let config = pool_config_json(&redis, &devnet, &[(port, 1000)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let pool = PoolBinary::start("fail2ban", &config, &["--module", "stratum", "--module", "api"]);
    let _ = get_when_up(&format!("http://127.0.0.1:{api}/stats")).await;
    let stratum = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut miner = TestMiner::connect_from(std::net::IpAddr::from([127, 0, 0, 2]), stratum).await;
    miner.login(MINER_A, "rig").await;
    let job = miner.job.clone().expect("a job at login");
    // A result far above the target: rejected as low difficulty, counted against the IP.
    let reply = miner.submit(&job, [1, 2, 3, 4], &pastella_pool::chain::Hash([0xff; 32])).await;
    assert!(!reply["error"].is_null(), "{reply}");
    assert!(miner.closed(Duration::from_secs(10)).await, "the banned miner is disconnected");
    let ban =
        eventually(Duration::from_secs(10), || pool.log().lines().find(|l| l.contains("banned: ")).map(str::to_string))
            .await
            .unwrap_or_else(|| panic!("no ban line in the pool's log:\n{}", pool.log()));
    assert!(
        ban.contains(" 127.0.0.2 banned: \"Ban: 1 of 1 shares invalid") && ban.ends_with(", banned for 30 s\""),
        "{ban}"
    );

    let filter = root().join("deploy/fail2ban/filter.d/pastella-pool.conf").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path
    };
    let plain = write("plain.log", &ban);
    let syslog = write("syslog.log", &format!("Nov 30 23:35:24 myhost pastella-pool[123]: {ban}"));
    let rfc3339 = write("rsyslog.log", &format!("2026-11-30T23:35:24.120021+00:00 myhost pastella-pool[123]: {ban}"));
    for log in [&plain, &syslog, &rfc3339] {
        assert_eq!(fail2ban_ips(log, &filter), ["127.0.0.2"], "{}", std::fs::read_to_string(log).unwrap());
    }
    // The guide's filter, on a log without a syslog prefix.
    assert_eq!(fail2ban_ips(&plain, "<HOST> .* \"Ban:.*\""), ["127.0.0.2"]);
    // The pool's whole log: the ban line and nothing else.
    assert_eq!(fail2ban_ips(&pool.log, &filter), ["127.0.0.2"], "{}", pool.log());

    // The jails parse (journald and syslog variants both enabled for the check).
    if have("fail2ban-client", "deploy/fail2ban jails") && std::path::Path::new("/etc/fail2ban/jail.conf").exists() {
        let etc = dir.path().join("etc");
        let copied = Command::new("cp").arg("-r").arg("/etc/fail2ban").arg(&etc).status().unwrap();
        assert!(copied.success());
        let _ = std::fs::remove_file(etc.join("jail.d/defaults-debian.conf")); // sshd: no log here
        std::fs::copy(&filter, etc.join("filter.d/pastella-pool.conf")).unwrap();
        let jail = std::fs::read_to_string(root().join("deploy/fail2ban/jail.d/pastella-pool.conf"))
            .unwrap()
            .replace("enabled  = false", "enabled  = true")
            .replace("/var/log/syslog", &syslog.display().to_string());
        std::fs::write(etc.join("jail.d/pastella-pool.conf"), jail).unwrap();
        let out = Command::new("fail2ban-client").arg("-c").arg(&etc).arg("-t").output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("OK: configuration test is successful"), "{text}");
    }
}

/// deploy/systemd/pastella-pool.service passes `systemd-analyze verify` without a single
/// complaint, and its hardening keeps systemd's exposure score in the "OK" band.
#[test]
fn the_systemd_unit_verifies() {
    if !have("systemd-analyze", "deploy/systemd/pastella-pool.service") {
        return;
    }
    let unit = std::fs::read_to_string(root().join("deploy/systemd/pastella-pool.service")).unwrap();
    for needed in [
        "User=pastella",
        "Restart=always",
        "LimitNOFILE=1048576",
        "Environment=GLIBC_TUNABLES=glibc.malloc.hugetlb=1",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "After=network-online.target redis-server.service",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(needed)), "the unit lacks {needed}");
    }
    // verify checks that the binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pastella-pool.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/pastella-pool", env!("CARGO_BIN_EXE_pastella-pool"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // verify exits 0 on unknown keys and bad values but names them: any line about the unit fails.
    let complaints: Vec<_> = text.lines().filter(|l| l.contains("pastella-pool.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify:\n{text}");
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for pastella-pool.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    if let Some(level) = level {
        assert!(level < 4.0, "exposure {level} (systemd-analyze security):\n{text}");
    } else {
        eprintln!("systemd-analyze security --offline is not supported here: exposure not checked");
    }
}

/// SIGHUP (`systemctl reload`, the unit's ExecReload) leaves the pool running: it reloads the
/// config (tests/reload.rs covers what changes), where by default it would end the process and
/// drop every miner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_pool_running() {
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let port = free_port();
    let config = pool_config_json(&redis, &devnet, &[(port, 1000)], json!({"logging": {"level": "info"}}));
    let api = config["api"]["port"].as_u64().unwrap();
    let mut pool = PoolBinary::start("sighup", &config, &[]);
    let _ = get_when_up(&format!("http://127.0.0.1:{api}/stats")).await;
    let mut miner = TestMiner::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    miner.login(MINER_A, "rig").await;
    let sent = Command::new("kill").args(["-HUP", &pool.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let logged = eventually(Duration::from_secs(10), || pool.log().contains("reload applied").then_some(())).await;
    assert!(logged.is_some(), "{}", pool.log());
    assert!(pool.exited(Duration::from_millis(500)).await.is_none(), "the pool kept running");
    let reply = miner.call("getjob", json!({"id": miner.session.clone()})).await;
    assert!(reply["error"].is_null(), "the miner's session survived: {reply}");
}

/// deploy/docker/compose.yml is valid against the compose-spec JSON schema; it keeps Redis on
/// AOF with noeviction on a volume, mounts the shipped rules and dashboards, and every file it
/// mounts exists.
#[test]
fn the_compose_file_matches_the_compose_spec() {
    let schema = root().join("target/compose-spec/compose_spec.json");
    if !schema.exists() {
        eprintln!("\n!!!!!!!! SKIPPED: {} is missing (scripts/deps.sh --test fetches it): compose.yml NOT validated !!!!!!!!\n", schema.display());
        return;
    }
    let compose = root().join("deploy/docker/compose.yml");
    let script = "import json, sys, yaml, jsonschema\n\
                  jsonschema.validate(yaml.safe_load(open(sys.argv[2])), json.load(open(sys.argv[1])))\n\
                  print('valid')";
    let out = Command::new("python3").arg("-c").arg(script).arg(&schema).arg(&compose).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if text.contains("ModuleNotFoundError") {
        eprintln!("\n!!!!!!!! SKIPPED: python3 lacks jsonschema or yaml (scripts/deps.sh --test): compose.yml NOT validated !!!!!!!!\n");
        return;
    }
    assert!(out.status.success() && text.trim() == "valid", "compose.yml against the compose spec:\n{text}");
    let text = std::fs::read_to_string(&compose).unwrap();
    assert!(text.contains("\"--appendonly\", \"yes\"") && text.contains("\"--maxmemory-policy\", \"noeviction\""));
    for line in text.lines() {
        let mount = line.trim().trim_start_matches("- ");
        if let Some(source) =
            mount.strip_prefix("./").or(mount.strip_prefix("../")).map(|_| mount.split(':').next().unwrap())
        {
            let path = root().join("deploy/docker").join(source);
            assert!(path.exists(), "compose.yml mounts {source}, which does not exist");
        }
    }
}

/// The Dockerfile's stages, checked without a Docker engine: everything it copies exists, the
/// build stage's cargo command builds the binary the runtime stage runs, the runtime runs as a
/// non-root user with a HEALTHCHECK on /health at the API port of the config it ships, and that
/// config passes `check-config`. (The release build itself: deploy/docker/check-build.sh.)
#[test]
fn the_dockerfile_stages_hold_together() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].starts_with("rust:") && stages[0].contains("cargo build --release --locked --bin pastella-pool"));
    assert!(stages[1].starts_with("debian:") && stages[1].contains("-slim"), "a slim Debian runtime");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root().join(source).exists(), "COPY {source}: not in the repository");
        }
    }
    // Every file the sources compile in (include_bytes!/include_str!) is in a COPY'd path:
    // the build stage has nothing else.
    let copied: Vec<PathBuf> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[1..parts.len() - 1].iter().map(|s| root().join(s)).collect::<Vec<_>>()
        })
        .collect();
    let mut included = 0;
    for file in rust_sources(&root().join("src")).into_iter().chain(rust_sources(&root().join("loadtest/src"))) {
        let text = std::fs::read_to_string(&file).unwrap();
        for piece in text.split("include_").skip(1) {
            let Some(rest) = piece.strip_prefix("bytes!(\"").or_else(|| piece.strip_prefix("str!(\"")) else {
                continue;
            };
            let path = file.parent().unwrap().join(&rest[..rest.find('"').unwrap()]);
            let path = path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                copied.iter().any(|c| path.starts_with(c.canonicalize().unwrap())),
                "{} includes {}, which the Dockerfile does not COPY",
                file.display(),
                path.display()
            );
            included += 1;
        }
    }
    assert!(included > 10, "found the sources' included files ({included})");
    let user = stages[1].lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(stages[1].contains("HEALTHCHECK") && stages[1].contains("http://127.0.0.1:8117/health"));
    let config_path = root().join("deploy/docker/config.json");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["api"]["port"], 8117);
    assert_eq!(config["api"]["bindIp"], "0.0.0.0", "reachable from the other containers");
    assert_eq!(config["redis"]["host"], "redis", "the compose service");
    let out = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["check-config", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = dockerfile.lines().find(|l| l.starts_with("CMD ")).unwrap();
    assert_eq!(cmd, "CMD [\"run\", \"--config\", \"/etc/pastella-pool/config.json\"]");
}

/// The `.rs` files under `dir`, recursively.
fn rust_sources(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Waits until the pool's `/metrics` satisfies `check`; the scrape.
async fn metrics_until(api: u64, what: &str, check: impl Fn(&str) -> bool) -> String {
    get_until(&format!("http://127.0.0.1:{api}/metrics"), what, check).await
}

/// The value of an unlabelled gauge in a scrape.
fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A devnet driven across three RandomX epoch changes (seed heights 2048, 4096, 6144: the seed
/// switches at 2113, 4161, 6209; the daemon announces it one block ahead, the pool looks it up
/// 64 blocks ahead). The pool binary, in light mode, holds the current seed's cache only, plus
/// the next one's from 64 blocks before the switch (in fast mode its dataset is built then), plus
/// the previous one until the next template; never a third, never a dataset. Before the fix the
/// engine kept max(seeds + 1, 3) seeds: three caches (fast mode: three 2 GiB datasets) from the
/// second epoch change on, and built the next seed only one block ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomx_memory_stays_bounded_across_epoch_changes() {
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let config = pool_config_json(&redis, &devnet, &[(free_port(), 1000)], json!({}));
    let api = config["api"]["port"].as_u64().unwrap();
    let _pool = PoolBinary::start("epochs", &config, &["--module", "stratum", "--module", "api"]);
    let mut checked = Vec::new();
    for switch in [2113u64, 4161, 6209] {
        // (template height, seeds kept): before the next seed's block, 60 blocks and one block
        // before the switch, the switch, one block later.
        let stages = [(switch - 65, 1.0), (switch - 60, 2.0), (switch - 1, 2.0), (switch, 2.0), (switch + 1, 1.0)];
        for (height, seeds) in stages {
            let count = devnet.block_count();
            devnet.mine(height - count);
            let what = format!("template height {height}: {seeds} seeds, as many caches, no dataset");
            let scrape = metrics_until(api, &what, |m| {
                gauge(m, "pastella_pool_network_height") == Some(height as f64)
                    && gauge(m, "pastella_pool_randomx_seeds") == Some(seeds)
                    && gauge(m, "pastella_pool_randomx_caches") == Some(seeds)
            })
            .await;
            assert_eq!(gauge(&scrape, "pastella_pool_randomx_datasets"), Some(0.0), "light mode");
            checked.push((height, seeds));
        }
    }
    assert_eq!(checked.len(), 15);
}

/// A process whose open-file limit is below `poolServer.maxConnections` says how many miners it
/// can hold and how to raise it: in its log, on `/health` (with the connections open now) and
/// as a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reports_its_session_capacity() {
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let port = free_port();
    let config = pool_config_json(&redis, &devnet, &[(port, 1000)], json!({"logging": {"level": "info"}}));
    let api = config["api"]["port"].as_u64().unwrap();
    let pool = PoolBinary::start_with_open_files("capacity", &config, 1000);
    let _ = get_when_up(&format!("http://127.0.0.1:{api}/stats")).await;
    let log = pool.log();
    assert!(
        log.contains("Session capacity: 744 miners (the open-file limit 1000 less 256") && log.contains("LimitNOFILE="),
        "{log}"
    );
    let mut miner = TestMiner::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    miner.login(MINER_A, "rig").await;
    let health: Value = serde_json::from_str(&get_when_up(&format!("http://127.0.0.1:{api}/health")).await).unwrap();
    let sessions = &health["sessions"];
    assert_eq!(sessions["capacity"], 744, "{health}");
    assert_eq!(sessions["connected"], 1, "{health}");
    assert_eq!(sessions["openFileLimit"], 1000, "{health}");
    assert_eq!(sessions["limitedBy"], "openFileLimit", "{health}");
    assert!(sessions["howToRaise"].as_str().unwrap().contains("LimitNOFILE="), "{health}");
    let scrape =
        metrics_until(api, "the capacity gauge", |s| gauge(s, "pastella_pool_session_capacity").is_some()).await;
    assert_eq!(gauge(&scrape, "pastella_pool_session_capacity"), Some(744.0), "{scrape}");
    assert_eq!(gauge(&scrape, "pastella_pool_open_files_limit"), Some(1000.0), "{scrape}");
}
