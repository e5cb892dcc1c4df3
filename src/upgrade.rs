//! Zero-downtime upgrade: the running pool hands its listening sockets to a new process.
//!
//! `pastella-pool upgrade --config <file>` asks the running pool over its unix control socket
//! (`upgrade.socket`). The running pool starts the binary on disk (the file an upgrade replaced)
//! as its child with one end of a socket pair, and sends over it every listening socket it has
//! (stratum ports, API, metrics) with `SCM_RIGHTS`, each labelled with its kind and configured
//! port. The child serves on them (the kernel's accept queue is shared: no connection is
//! refused), tells systemd it is the service's main process (`MAINPID`, `READY`), binds the
//! control socket and answers `serving`. The old process then stops calling accept, closes its
//! miners gradually over `upgrade.drainSeconds` (each after its last submit is answered), and
//! does what a shutdown does: submit gate, in-flight verifications, ledger and candidate
//! flush, lease resigned. If the child exits or fails before `serving`, the old process goes on
//! as before and the command says why.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::config::Module;

/// The environment variable naming the inherited socket-pair fd of a process started by an
/// upgrade.
pub const HANDOVER_FD_ENV: &str = "PASTELLA_POOL_HANDOVER_FD";

/// How long the old process waits for the new one to serve (Redis retries take 30 s).
const START_LIMIT: Duration = Duration::from_secs(300);

/// At most this many listeners in one handover (the kernel's limit per message is 253).
const MAX_LISTENERS: usize = 200;

/// What went wrong in a handover or an upgrade request.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The other side broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The running pool refused or the new process failed.
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpgradeError {
    let what = what.into();
    move |source| UpgradeError::Io { what, source }
}

/// Which listener a passed socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// A stratum port.
    Stratum,
    /// The HTTP API.
    Api,
    /// The separate `/metrics` listener.
    Metrics,
}

#[derive(Debug, Serialize, Deserialize)]
struct Label {
    kind: ListenerKind,
    /// The port as configured (0 = any).
    port: u16,
}

/// A listening socket and what it is.
#[derive(Debug)]
pub struct Listener {
    /// Its kind.
    pub kind: ListenerKind,
    /// Its configured port.
    pub port: u16,
    /// A duplicate of the socket (close-on-exec).
    pub fd: OwnedFd,
}

impl Listener {
    /// A duplicate of `socket`'s fd, labelled, to hand over later.
    pub fn dup(kind: ListenerKind, port: u16, socket: BorrowedFd<'_>) -> std::io::Result<Listener> {
        Ok(Listener { kind, port, fd: socket.try_clone_to_owned()? })
    }

    /// Duplicates of `listeners` as they are now (a reload may add or remove ports later).
    pub fn snapshot(listeners: &std::sync::Mutex<Vec<Listener>>) -> std::io::Result<Vec<Listener>> {
        let listeners = listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.iter().map(|l| Listener::dup(l.kind, l.port, l.fd.as_fd())).collect()
    }
}

/// Sends `listeners` over `stream` in one message: the labels as a JSON line, the fds as
/// `SCM_RIGHTS`.
pub fn send_listeners(stream: &UnixStream, listeners: &[Listener]) -> Result<(), UpgradeError> {
    if listeners.len() > MAX_LISTENERS {
        return Err(UpgradeError::Protocol(format!("{} listeners, at most {MAX_LISTENERS}", listeners.len())));
    }
    let labels: Vec<Label> = listeners.iter().map(|l| Label { kind: l.kind, port: l.port }).collect();
    let mut header = serde_json::to_vec(&labels).expect("labels serialize");
    header.push(b'\n');
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&header)], &cmsgs, MsgFlags::empty(), None)
        .map_err(|e| UpgradeError::Io { what: "sending the listening sockets".into(), source: e.into() })?;
    if sent != header.len() {
        return Err(UpgradeError::Protocol(format!("sent {sent} of {} header bytes", header.len())));
    }
    Ok(())
}

/// Receives what [`send_listeners`] sent.
pub fn receive_listeners(stream: &UnixStream) -> Result<Vec<Listener>, UpgradeError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; MAX_LISTENERS]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| UpgradeError::Io { what: "receiving the listening sockets".into(), source: e.into() })?;
        let mut fds = Vec::new();
        let cmsgs = msg.cmsgs().map_err(|e| UpgradeError::Protocol(format!("control message: {e}")))?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these fds in this process; nothing else owns them.
                fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    let header = &buf[..bytes];
    if header.last() != Some(&b'\n') {
        return Err(UpgradeError::Protocol("the listener labels were cut short".into()));
    }
    let labels: Vec<Label> = serde_json::from_slice(&header[..bytes - 1])
        .map_err(|e| UpgradeError::Protocol(format!("the listener labels: {e}")))?;
    if labels.len() != fds.len() {
        return Err(UpgradeError::Protocol(format!("{} labels for {} sockets", labels.len(), fds.len())));
    }
    Ok(labels.into_iter().zip(fds).map(|(l, fd)| Listener { kind: l.kind, port: l.port, fd }).collect())
}

/// The listeners handed to this process at start (none for a normal start), and the channel
/// to the process it takes over from.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: Vec<Listener>,
    parent: Option<UnixStream>,
}

impl Inherited {
    /// Reads the handover when this process was started by an upgrade
    /// ([`HANDOVER_FD_ENV`] set), else nothing.
    pub fn from_env() -> Result<Inherited, UpgradeError> {
        let Some(value) = std::env::var_os(HANDOVER_FD_ENV) else { return Ok(Inherited::default()) };
        std::env::remove_var(HANDOVER_FD_ENV);
        let fd: RawFd = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .filter(|fd| *fd > 2)
            .ok_or_else(|| UpgradeError::Protocol(format!("{HANDOVER_FD_ENV}={value:?} is not an fd number")))?;
        // Fails if the fd is not open; close-on-exec again so no grandchild inherits it.
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(|e| UpgradeError::Io { what: format!("{HANDOVER_FD_ENV}={fd}"), source: e.into() })?;
        // SAFETY: the parent left exactly this fd open for us (checked open above) and nothing
        // else in this process refers to it.
        let parent = unsafe { UnixStream::from_raw_fd(fd) };
        parent.set_read_timeout(Some(Duration::from_secs(30))).map_err(io("the handover socket"))?;
        let listeners = receive_listeners(&parent)?;
        Ok(Inherited { listeners, parent: Some(parent) })
    }

    /// True when this process takes over from another one.
    pub fn is_upgrade(&self) -> bool {
        self.parent.is_some()
    }

    /// The inherited listener for `kind` and `port`, if the old process had one.
    pub fn take(&mut self, kind: ListenerKind, port: u16) -> Option<std::net::TcpListener> {
        let index = self.listeners.iter().position(|l| l.kind == kind && l.port == port)?;
        Some(std::net::TcpListener::from(self.listeners.swap_remove(index).fd))
    }

    /// The process serves: tells systemd it is the main process now and ready, then tells the
    /// old process, which starts draining. Listeners the new config no longer has are closed.
    /// A failure is logged: this process serves either way.
    pub fn serving(&mut self) {
        self.listeners.clear();
        let pid = std::process::id();
        if self.parent.is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::MainPid(pid), sd_notify::NotifyState::Ready]);
        } else {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
        if let Some(mut parent) = self.parent.take() {
            if let Err(e) = writeln!(parent, "serving {pid}") {
                tracing::error!("[Upgrade] cannot tell the old process that this one serves ({e}); it serves on too");
            }
        }
    }
}

/// One line of the control protocol, from the running pool to `pastella-pool upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// The new process was started.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// The new process serves; the old one drains.
    Serving {
        /// The new process's pid.
        pid: u32,
        /// Sessions the old process is closing.
        sessions: usize,
        /// Over how long.
        drain_seconds: u64,
    },
    /// The old process drained, flushed and is exiting.
    Done {
        /// The new process's pid.
        pid: u32,
        /// Sessions closed.
        sessions: usize,
    },
    /// Nothing changed: the old process serves as before.
    Failed {
        /// Why.
        error: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// The config file the new process runs with (absolute).
    config: PathBuf,
}

/// The running pool's side: the control socket and how to start the new process.
pub struct Control {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    binary: PathBuf,
    modules: Vec<Module>,
}

/// A new process serves; `report` tells the command how the drain goes.
pub struct Handover {
    /// The new process's pid.
    pub pid: u32,
    /// The command's connection.
    pub report: Reporter,
}

/// Writes [`Event`]s to the `upgrade` command (errors ignored: the command may be gone).
pub struct Reporter(tokio::net::UnixStream);

impl Reporter {
    /// Sends one event.
    pub async fn send(&mut self, event: &Event) {
        let mut line = serde_json::to_string(event).expect("events serialize");
        line.push('\n');
        let _ = self.0.write_all(line.as_bytes()).await;
    }
}

/// The binary an upgrade starts: `upgrade.binary`, else the path this process was started from,
/// resolved now (once the file is replaced, `/proc/self/exe` names a deleted file).
pub fn resolve_binary(configured: Option<&Path>) -> std::io::Result<PathBuf> {
    match configured {
        Some(path) => Ok(path.to_path_buf()),
        None => std::env::current_exe(),
    }
}

impl Control {
    /// Binds the control socket, replacing a stale one, or the one of the process this one
    /// `taking_over` from (that process hears the outcome over the socket pair). A socket that
    /// another running pool answers on is not taken.
    pub fn bind(
        path: &Path,
        binary: PathBuf,
        modules: Vec<Module>,
        taking_over: bool,
    ) -> Result<Control, UpgradeError> {
        if !taking_over && UnixStream::connect(path).is_ok() {
            return Err(UpgradeError::Failed(format!(
                "another running pool answers on the control socket {} (upgrade.socket), and keeps it; give this \
                 pool its own upgrade.socket",
                path.display()
            )));
        }
        let listener = bind_unix(path)?;
        Ok(Control { listener, path: path.to_path_buf(), binary, modules })
    }

    /// Serves upgrade requests until one hands over; a failed one leaves everything as it was.
    pub async fn next_upgrade(&mut self, listeners: &std::sync::Mutex<Vec<Listener>>) -> Handover {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket {}: accept failed: {e}", self.path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut report = Reporter(stream);
            let attempt = match Listener::snapshot(listeners) {
                Ok(listeners) => self.attempt(&mut report, &listeners).await,
                Err(e) => Err(io("duplicating the listening sockets")(e)),
            };
            match attempt {
                Ok(pid) => return Handover { pid, report },
                Err(error) => {
                    tracing::error!("[Upgrade] failed, this process serves on as before: {error}");
                    report.send(&Event::Failed { error: error.to_string() }).await;
                    // The new process may have replaced the socket file before it failed.
                    match bind_unix(&self.path) {
                        Ok(listener) => self.listener = listener,
                        Err(e) => tracing::error!("[Upgrade] cannot bind the control socket again: {e}"),
                    }
                }
            }
        }
    }

    async fn attempt(&self, report: &mut Reporter, listeners: &[Listener]) -> Result<u32, UpgradeError> {
        let mut line = String::new();
        {
            let (read, _) = report.0.split();
            let mut read = tokio::io::BufReader::new(read);
            tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line))
                .await
                .map_err(|_| UpgradeError::Protocol("no request within 10 s".into()))?
                .map_err(io("reading the upgrade request"))?;
        }
        let request: Request = serde_json::from_str(line.trim())
            .map_err(|e| UpgradeError::Protocol(format!("bad upgrade request {line:?}: {e}")))?;
        tracing::info!(
            binary = %self.binary.display(),
            config = %request.config.display(),
            "[Upgrade] starting the new process and handing it {} listening socket(s)",
            listeners.len()
        );
        let (ours, theirs) = UnixStream::pair().map_err(io("creating the handover socket pair"))?;
        // The child inherits its end: not close-on-exec (only this one fd).
        nix::fcntl::fcntl(theirs.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .map_err(|e| UpgradeError::Io { what: "the handover socket".into(), source: e.into() })?;
        let mut command = tokio::process::Command::new(&self.binary);
        command.arg("run").arg("--config").arg(&request.config);
        for module in &self.modules {
            command.arg("--module").arg(module.name());
        }
        command.env(HANDOVER_FD_ENV, theirs.as_raw_fd().to_string()).stdin(std::process::Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| UpgradeError::Failed(format!("cannot start {}: {e}", self.binary.display())))?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        report.send(&Event::Started { pid }).await;
        send_listeners(&ours, listeners)?;
        ours.set_nonblocking(true).map_err(io("the handover socket"))?;
        let ours = tokio::net::UnixStream::from_std(ours).map_err(io("the handover socket"))?;
        let mut answer = String::new();
        let mut reader = tokio::io::BufReader::new(ours);
        tokio::select! {
            read = tokio::time::timeout(START_LIMIT, reader.read_line(&mut answer)) => {
                match read {
                    Ok(Ok(_)) if answer.trim() == format!("serving {pid}") => Ok(pid),
                    Ok(_) => {
                        // The child closed its end: it exited, or is about to.
                        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                        Err(UpgradeError::Failed(match status {
                            Ok(Ok(status)) => format!(
                                "the new process (pid {pid}) exited with {status} before serving; its error is in the log"
                            ),
                            _ => format!("the new process (pid {pid}) closed the handover without serving"),
                        }))
                    }
                    Err(_) => {
                        let _ = child.kill().await;
                        Err(UpgradeError::Failed(format!(
                            "the new process (pid {pid}) did not serve within {} s and was killed",
                            START_LIMIT.as_secs()
                        )))
                    }
                }
            }
            status = child.wait() => Err(UpgradeError::Failed(match status {
                Ok(status) => format!("the new process (pid {pid}) exited with {status} before serving; its error is in the log"),
                Err(e) => format!("the new process (pid {pid}): {e}"),
            })),
        }
    }
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, UpgradeError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing the old control socket {}", path.display()))(e)),
    }
    tokio::net::UnixListener::bind(path)
        .map_err(io(format!("binding the control socket {} (upgrade.socket)", path.display())))
}

/// How many of `total` sessions should have been asked to close `elapsed` into a drain over
/// `over`: evenly spread, all of them at the end.
pub fn due(total: usize, elapsed: Duration, over: Duration) -> usize {
    if elapsed >= over || over.is_zero() {
        return total;
    }
    let scaled = total as u128 * elapsed.as_nanos();
    scaled.div_ceil(over.as_nanos()) as usize
}

/// The `upgrade` command: asks the pool listening on `socket` to upgrade to a new process
/// running `config`, prints each step with `say`, and returns the new process's pid once the old
/// one drained and flushed.
pub fn request(socket: &Path, config: &Path, mut say: impl FnMut(&Event)) -> Result<u32, UpgradeError> {
    let stream = UnixStream::connect(socket).map_err(|e| UpgradeError::Io {
        what: format!(
            "no running pool answers on {} (upgrade.socket; a relative path is relative to the pool's working directory)",
            socket.display()
        ),
        source: e,
    })?;
    let config = std::path::absolute(config).map_err(io(format!("{}", config.display())))?;
    let mut line = serde_json::to_string(&Request { config }).expect("requests serialize");
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io("sending the upgrade request"))?;
    let mut served = None;
    for line in BufReader::new(&stream).lines() {
        let line = line.map_err(io("reading the running pool's answer"))?;
        let event: Event = serde_json::from_str(&line)
            .map_err(|e| UpgradeError::Protocol(format!("unexpected answer {line:?}: {e}")))?;
        say(&event);
        match event {
            Event::Serving { pid, .. } => served = Some(pid),
            Event::Done { pid, .. } => return Ok(pid),
            Event::Failed { error } => return Err(UpgradeError::Failed(error)),
            Event::Started { .. } => {}
        }
    }
    Err(UpgradeError::Failed(match served {
        Some(pid) => format!(
            "the old process closed the control connection before it finished draining; the new process (pid {pid}) serves"
        ),
        None => "the running pool closed the control connection without an answer".into(),
    }))
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_drain_closes_sessions_evenly_and_all_by_the_end() {
        let over = Duration::from_secs(60);
        assert_eq!(due(10, Duration::ZERO, over), 0);
        assert_eq!(due(10, Duration::from_secs(6), over), 1);
        assert_eq!(due(10, Duration::from_millis(6001), over), 2);
        assert_eq!(due(10, Duration::from_secs(30), over), 5);
        assert_eq!(due(10, Duration::from_secs(59), over), 10);
        assert_eq!(due(10, over, over), 10);
        assert_eq!(due(3, Duration::from_secs(120), over), 3);
        assert_eq!(due(0, Duration::from_secs(1), over), 0);
        // One session goes at the first step, not at the end.
        assert_eq!(due(1, Duration::from_millis(1), over), 1);
    }

    #[test]
    fn listeners_cross_a_socket_pair_with_their_labels() {
        let (a, b) = UnixStream::pair().unwrap();
        let stratum = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sent = vec![
            Listener::dup(ListenerKind::Stratum, 3333, stratum.as_fd()).unwrap(),
            Listener::dup(ListenerKind::Api, 0, api.as_fd()).unwrap(),
        ];
        send_listeners(&a, &sent).unwrap();
        let mut inherited = Inherited { listeners: receive_listeners(&b).unwrap(), parent: None };
        assert!(inherited.take(ListenerKind::Metrics, 0).is_none());
        let received = inherited.take(ListenerKind::Stratum, 3333).unwrap();
        // The same socket: a connection to the original address is accepted on the copy.
        assert_eq!(received.local_addr().unwrap(), stratum.local_addr().unwrap());
        let _client = std::net::TcpStream::connect(stratum.local_addr().unwrap()).unwrap();
        let (_, peer) = received.accept().unwrap();
        assert!(peer.ip().is_loopback());
        let received_api = inherited.take(ListenerKind::Api, 0).unwrap();
        assert_eq!(received_api.local_addr().unwrap(), api.local_addr().unwrap());
    }

    #[test]
    fn events_are_one_json_object_per_line() {
        let event = Event::Serving { pid: 7, sessions: 3, drain_seconds: 60 };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(line, r#"{"event":"serving","pid":7,"sessions":3,"drain_seconds":60}"#);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }
}
