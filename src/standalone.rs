//! `idagent gateway --listen ADDR`: the gateway alone on a host, the topology of the original
//! brief. An iptables `REDIRECT` rule sends a client's connections to the listener; the
//! original destination comes from `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6).
//! Connections made straight to the listener (no REDIRECT) are explicit-proxy clients.
//!
//! Owns: the accept loop and the original-destination lookup. Everything else is the same
//! `Gateway::serve_flow` the sandbox uses, so the audit events are the same.

use crate::gateway::Gateway;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Most connections served at once; over it, new ones wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Accepts until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS));
    let local = listener.local_addr()?;
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = &mut stop => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let dst = original_dst(&stream).unwrap_or(local);
        let mut meta = gw.open_flow(peer, dst);
        // Not redirected: the client dialled us on purpose, as its HTTP(S) proxy.
        meta.proxy = dst == local || (dst.port() == local.port() && local.ip().is_unspecified());
        let gw = gw.clone();
        tokio::spawn(async move {
            gw.serve_flow(stream, meta).await;
            drop(permit);
        });
    }
}

/// The destination the client dialled before netfilter redirected it.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).ok().map(|a| {
            SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst).ok().map(|a| {
            SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }),
    }
}
