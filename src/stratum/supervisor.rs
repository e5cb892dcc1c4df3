//! The PortSupervisor actor: one per configured stratum port. It accepts connections, enforces
//! the connection caps, starts each session on the next arbiter (one per core), keeps the
//! registry of its sessions and fans every new template out to them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream;
use tokio::net::{TcpListener, TcpSocket};

use super::delivery::{self, Fanout, Group};
use super::session::{Accepted, MinerSession, Retire, Tick};
use super::transport::{canonical_ip, Access, MinerStream, Refusal};
use super::StratumContext;
use crate::config::PortConfig;
use crate::jobs::NewTemplate;

/// A session started (sent by the session).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Session id.
    pub id: u64,
    /// Its address.
    pub addr: Addr<MinerSession>,
}

/// A session logged in (for the connection counts the API shows).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionLoggedIn {
    /// Session id.
    pub id: u64,
    /// `address~worker`.
    pub worker_key: String,
    /// Solo miner.
    pub solo: bool,
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// Session id.
    pub id: u64,
}

/// Stops accepting connections (shutdown); open sessions end with their arbiter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Asks for the port's connection figures.
#[derive(Message)]
#[rtype(result = "PortStats")]
pub struct GetPortStats;

/// A port's connection figures.
#[derive(Debug, Clone, Default, MessageResponse)]
pub struct PortStats {
    /// The port.
    pub port: u16,
    /// Open connections.
    pub connections: usize,
    /// Logged-in sessions by `address~worker` and solo flag.
    pub workers: HashMap<(String, bool), u64>,
}

struct Entry {
    addr: Addr<MinerSession>,
    login: Option<(String, bool)>,
    /// Asked to close (upgrade drain).
    retired: bool,
}

/// Every port supervisor of this process: those of the start and those a reload added. Shared
/// by the pool (connection counts, drain, shutdown), the reloader (which adds to it) and the
/// API (`/admin_ports`).
#[derive(Clone, Default)]
pub struct PortSupervisors(Arc<Mutex<Vec<Addr<PortSupervisor>>>>);

impl PortSupervisors {
    /// Adds a port's supervisor.
    pub fn push(&self, supervisor: Addr<PortSupervisor>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(supervisor);
    }

    /// The supervisors now.
    pub fn snapshot(&self) -> Vec<Addr<PortSupervisor>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Supervises one stratum port.
pub struct PortSupervisor {
    port: PortConfig,
    shared: Arc<StratumContext>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    next_arbiter: usize,
    /// This supervisor's sessions on every arbiter (job delivery).
    group: Group,
    listener: Option<TcpListener>,
    sessions: HashMap<u64, Entry>,
    tick_every: Duration,
    /// The accept loop, cancelled when a reload removes the port.
    accepting: Option<SpawnHandle>,
    /// Removed by a reload: accepts nothing and stops once its last session ended.
    retiring: bool,
}

/// Listen backlog: a farm reconnecting after a pool restart arrives all at once.
const BACKLOG: u32 = 8192;

impl PortSupervisor {
    /// Binds the port now (so a port in use is a start-up error, not a log line later).
    pub fn bind(ip: IpAddr, port: u16) -> std::io::Result<TcpListener> {
        let addr = SocketAddr::new(ip, port);
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    }

    /// A listening socket inherited from the process this one upgrades (fd passing): the
    /// kernel's accept queue is shared, so no connection is refused during the handover.
    pub fn inherit(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    /// A supervisor for `port` accepting on `listener`.
    pub fn new(
        port: PortConfig,
        listener: TcpListener,
        shared: Arc<StratumContext>,
        arbiters: Arc<Vec<ArbiterHandle>>,
    ) -> PortSupervisor {
        let tick_every = Duration::from_secs(shared.config.load().var_diff.retarget_time.clamp(1, 15));
        PortSupervisor {
            port,
            shared,
            arbiters,
            next_arbiter: 0,
            group: Group::new(),
            listener: Some(listener),
            sessions: HashMap::new(),
            tick_every,
            accepting: None,
            retiring: false,
        }
    }

    fn accept(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr, ctx: &mut Context<Self>) {
        let peer_ip = canonical_ip(peer.ip());
        let port = self.port.port;
        let mode = self.port.tls;
        let shared = self.shared.clone();
        // Without PROXY protocol the socket's address is the client's: policy and caps apply
        // here, before any byte is read. Behind a load balancer they wait for the header.
        let proxied = shared.transport.reads_proxy_header();
        if !proxied && !admit(&shared, peer_ip, port) {
            return;
        }
        let _ = stream.set_nodelay(true);
        let release = move |shared: &StratumContext| {
            if !proxied {
                shared.limits.release(peer_ip, shared.exempt(peer_ip));
            }
        };
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(_) => {
                release(&shared);
                return;
            }
        };
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let supervisor = ctx.address();
        let port_difficulty = self.port.diff;
        let group = self.group;
        let at = Instant::now();
        let task_shared = shared.clone();
        let spawned = arbiter.spawn(async move {
            let shared = task_shared;
            // Re-register the socket with this arbiter's reactor.
            let Ok(mut stream) = tokio::net::TcpStream::from_std(std_stream) else {
                release(&shared);
                return;
            };
            if !shared.transport.needs_handshake(mode) {
                let stream = MinerStream::Plain(stream);
                MinerSession::start(
                    Accepted { stream, ip: peer_ip, port, port_difficulty, at, group },
                    shared,
                    supervisor,
                );
                return;
            }
            let ip = if proxied {
                match shared.transport.identify(&mut stream, peer_ip).await {
                    Ok(ip) if admit(&shared, ip, port) => ip,
                    Ok(_) => return,
                    Err(refusal) => return refused(refusal, peer_ip, port),
                }
            } else {
                peer_ip
            };
            // From here the connection holds a slot for `ip`: a TLS handshake counts too.
            match shared.transport.secure(stream, mode).await {
                Ok(stream) => {
                    MinerSession::start(Accepted { stream, ip, port, port_difficulty, at, group }, shared, supervisor);
                }
                Err(refusal) => {
                    shared.limits.release(ip, shared.exempt(ip));
                    refused(refusal, ip, port);
                }
            }
        });
        if !spawned {
            release(&shared);
        }
    }

    /// Cancels the accept loop, which drops its listener: this process accepts nothing more
    /// on the port (a reload removed it, or an upgrade's new process serves it).
    fn stop_listening(&mut self, ctx: &mut Context<Self>) {
        if let Some(accepting) = self.accepting.take() {
            ctx.cancel_future(accepting);
        }
    }

    /// One task per arbiter, which serves this port's sessions living there (see
    /// [`delivery`]).
    fn fan_out(&mut self, msg: NewTemplate) {
        let fanout = Fanout::new(self.port.port, self.arbiters.len(), Instant::now());
        for arbiter in self.arbiters.iter() {
            let (job, share, group) = (msg.0.clone(), fanout.share(), self.group);
            // A stopped arbiter drops the task, and with it the share.
            arbiter.spawn(async move { delivery::deliver_here(group, &job, share) });
        }
        fanout.done();
    }
}

/// Applies `poolServer.deny` and the connection caps to a client address; true when the
/// connection may go on (it then holds a slot in [`StratumContext::limits`]).
fn admit(shared: &StratumContext, ip: IpAddr, port: u16) -> bool {
    if shared.transport.access(ip) == Access::Denied {
        refused(Refusal::Denied, ip, port);
        return false;
    }
    if let Err(reason) = shared.limits.acquire(ip, shared.exempt(ip)) {
        crate::metrics::connection_refused(reason);
        tracing::info!(%ip, port, reason, "[Pool] connection refused ({reason})");
        return false;
    }
    true
}

/// Counts and logs a connection the transport refused.
fn refused(refusal: Refusal, ip: IpAddr, port: u16) {
    crate::metrics::connection_refused(refusal.reason());
    let reason = refusal.reason();
    if refusal == Refusal::Closed {
        // Port scanners and TCP health checks: counted, not worth an info line each.
        tracing::debug!(%ip, port, reason, "[Pool] connection refused ({reason})");
    } else {
        tracing::info!(%ip, port, reason, "[Pool] connection refused ({reason})");
    }
}

impl Actor for PortSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(listener) = self.listener.take() {
            let accepts = stream::unfold(listener, |listener| async move {
                let result = listener.accept().await;
                if let Err(e) = &result {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some((result, listener))
            });
            self.accepting = Some(ctx.add_stream(accepts));
        }
        tracing::info!(
            "[Pool] Started on port {} ({}), difficulty {}, TLS {}",
            self.port.port,
            self.port.desc,
            self.port.diff,
            self.port.tls.as_str()
        );
        ctx.run_interval(self.tick_every, |act, _| {
            act.shared.bans.sweep();
            for entry in act.sessions.values() {
                entry.addr.do_send(Tick);
            }
        });
    }
}

impl StreamHandler<std::io::Result<(tokio::net::TcpStream, SocketAddr)>> for PortSupervisor {
    fn handle(&mut self, item: std::io::Result<(tokio::net::TcpStream, SocketAddr)>, ctx: &mut Context<Self>) {
        if let Ok((stream, peer)) = item {
            self.accept(stream, peer, ctx);
        }
    }
}

impl Handler<NewTemplate> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, msg: NewTemplate, _: &mut Context<Self>) {
        self.fan_out(msg);
    }
}

impl Handler<Register> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.sessions.insert(msg.id, Entry { addr: msg.addr, login: None, retired: false });
    }
}

impl Handler<SessionLoggedIn> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, msg: SessionLoggedIn, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&msg.id) {
            entry.login = Some((msg.worker_key, msg.solo));
        }
    }
}

impl Handler<Unregister> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        self.sessions.remove(&msg.id);
        if self.retiring && self.sessions.is_empty() {
            tracing::info!("[Pool] Port {} removed by a reload: its last session ended", self.port.port);
            ctx.stop();
        }
    }
}

impl Handler<GetPortStats> for PortSupervisor {
    type Result = PortStats;
    fn handle(&mut self, _: GetPortStats, _: &mut Context<Self>) -> PortStats {
        let mut workers: HashMap<(String, bool), u64> = HashMap::new();
        for (key, solo) in self.sessions.values().filter_map(|e| e.login.as_ref()) {
            *workers.entry((key.clone(), *solo)).or_default() += 1;
        }
        PortStats { port: self.port.port, connections: self.sessions.len(), workers }
    }
}

impl Handler<StopAccepting> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, _: StopAccepting, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A reload changed this port's settings (`diff`, `desc`): new connections get them, open
/// sessions keep the difficulty they were given.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyPort(pub PortConfig);

impl Handler<ApplyPort> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ApplyPort, _: &mut Context<Self>) {
        self.port = msg.0;
    }
}

/// A reload removed this port: it closes its listening socket and accepts nothing more, its
/// sessions go on (jobs included) until their miners leave, then the supervisor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetirePort;

impl Handler<RetirePort> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, _: RetirePort, ctx: &mut Context<Self>) {
        self.stop_listening(ctx);
        self.retiring = true;
        tracing::info!(
            "[Pool] Port {} removed by a reload: no longer accepting, {} session(s) left to finish",
            self.port.port,
            self.sessions.len()
        );
        if self.sessions.is_empty() {
            ctx.stop();
        }
    }
}

/// Stops calling accept (upgrade: the new process serves the shared socket); the sessions and
/// the job fan-out go on. This process's copy of the listening socket is closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopListening;

impl Handler<StopListening> for PortSupervisor {
    type Result = ();
    fn handle(&mut self, _: StopListening, ctx: &mut Context<Self>) {
        self.stop_listening(ctx);
    }
}

/// Asks up to `.0` more sessions to close once their submits are answered (upgrade drain);
/// answers how many it asked.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RetireSessions(pub usize);

impl Handler<RetireSessions> for PortSupervisor {
    type Result = usize;
    fn handle(&mut self, msg: RetireSessions, _: &mut Context<Self>) -> usize {
        let mut asked = 0;
        for entry in self.sessions.values_mut().filter(|e| !e.retired).take(msg.0) {
            entry.retired = true;
            entry.addr.do_send(Retire);
            asked += 1;
        }
        asked
    }
}
