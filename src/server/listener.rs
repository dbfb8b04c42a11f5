//! The acceptor: one std thread that accepts connections and starts a
//! reader thread for each.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{reader, Farm};
use crate::protocol::{encode_error, ErrorCode};
use crate::transport::Transport;

/// Stack size of per-connection reader threads. Parsing is depth-limited
/// (serde_json stops at 128 levels), so this is plenty even in debug builds,
/// and it is only reserved address space: 1,000 idle connections cost little
/// real memory.
const READER_STACK: usize = 1024 * 1024;

/// Accepts connections until `stop` is set (and a wake-up connection arrives;
/// see [`super::ShutdownHandle::trigger`]).
pub(super) fn accept_loop(listener: TcpListener, farm: Arc<Farm>, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically EMFILE (out of file descriptors). Back off instead
                // of spinning; existing connections keep being served.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        // Replies are small and latency matters: do not let Nagle's algorithm
        // hold them back waiting for more bytes.
        let _ = stream.set_nodelay(true);
        if farm.connections.len() >= farm.config.max_connections {
            tracing::warn!(%peer, max = farm.config.max_connections, "too many connections; refusing one");
            farm.stats.connection_rejected();
            let message = format!(
                "the server is at its connection limit ({}, --max-connections); try again later",
                farm.config.max_connections
            );
            refuse(&farm, &stream, &message);
            continue;
        }
        // One client address may not take every slot: the per-address cap
        // keeps room for everyone else.
        if let Some(cap) = farm.config.max_connections_per_ip {
            if farm.connections.open_from(peer.ip()) >= cap {
                tracing::warn!(%peer, cap, "too many connections from one address; refusing one");
                farm.stats.connection_rejected_per_ip();
                let message = format!(
                    "{} already holds {cap} connections, the most one address may (--max-connections-per-ip); \
                     close some or try again later",
                    peer.ip()
                );
                refuse(&farm, &stream, &message);
                continue;
            }
        }
        // One socket, shared by the table, the reader and the writer; with
        // TLS, a session of its own (the handshake runs in the reader).
        let stream = match &farm.tls {
            None => Transport::Plain(stream),
            Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                Ok(session) => Transport::tls(stream, session),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot start a TLS session; dropping the connection");
                    farm.stats.connection_tls_failed();
                    continue;
                }
            },
        };
        let stream = Arc::new(stream);
        let conn_id = farm.connections.add(Arc::clone(&stream), Some(peer.ip()));
        farm.stats.connection_opened();
        let farm_for_thread = Arc::clone(&farm);
        let spawned = thread::Builder::new()
            .name(format!("conn-{conn_id}"))
            .stack_size(READER_STACK)
            .spawn(move || reader::handle_connection(farm_for_thread, conn_id, stream));
        if let Err(e) = spawned {
            tracing::warn!(%peer, error = %e, "cannot start a thread for the connection; dropping it");
            farm.connections.remove(conn_id);
            farm.stats.connection_closed();
        }
    }
    tracing::debug!("acceptor stopped");
}

/// Tells a connection over a connection cap why it is being closed.
fn refuse(farm: &Farm, stream: &TcpStream, message: &str) {
    farm.stats.error(ErrorCode::Busy);
    // A short timeout: a client that does not read must not stall the acceptor.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    // A TLS client could not read a plain frame: it just sees the close.
    if farm.tls.is_none() {
        let mut stream = stream;
        let _ = stream.write_all(&encode_error(None, ErrorCode::Busy, message));
    }
}
