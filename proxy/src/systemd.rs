//! systemd integration without libsystemd: readiness and state over `NOTIFY_SOCKET`
//! (sd_notify(3): one datagram of `KEY=VALUE` lines), and listening sockets passed by socket
//! activation (`LISTEN_PID`, `LISTEN_FDS`, descriptors from 3; sd_listen_fds(3)).

use std::net::SocketAddr;

/// Sends `state` (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=...`) to the service
/// manager when it asked for notifications; nothing otherwise. Errors are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        // An abstract socket ("@name").
        Some(b'@') => UnixAddr::from_abstract_name(&bytes[1..])?,
        _ => UnixAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.send_to(state.as_bytes(), path)?;
    Ok(())
}

/// The TCP listening sockets systemd passed (socket activation), with their addresses; empty
/// when the process was not socket-activated.
pub fn inherited_listeners() -> Result<Vec<(SocketAddr, std::net::TcpListener)>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => {
                let addr = l
                    .local_addr()
                    .map_err(|e| format!("socket activation: descriptor {}: {e}", i + 3))?;
                l.set_nonblocking(true)
                    .map_err(|e| format!("socket activation: {addr}: {e}"))?;
                out.push((addr, l));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "socket activation: descriptor {} is not a TCP listening socket: {e}",
                    i + 3
                ));
            }
        }
    }
    Ok(out)
}
