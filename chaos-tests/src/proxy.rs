//! A fault-injecting TCP proxy between the clients and the server: each
//! connection is cut, at a random moment, with a probability, either with a
//! reset (RST) or a plain close, in the middle of requests and streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::Schedule;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Connections cut by the proxy.
    pub cuts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on the current tokio runtime: each
    /// connection is cut after a random 5–2,005 ms with probability
    /// `cut_percent` / 100.
    pub async fn start(
        upstream: SocketAddr,
        seed: u64,
        cut_percent: u64,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, cut, stopped) = (
            Arc::clone(&connections),
            Arc::clone(&cuts),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut schedule = Schedule::new(seed);
            while !stopped.load(Ordering::SeqCst) {
                let Ok(Ok((client, _))) =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let fault = (schedule.below(100) < cut_percent).then(|| {
                    (
                        Duration::from_millis(5 + schedule.below(2000)),
                        schedule.below(2) == 0,
                    )
                });
                let cut = Arc::clone(&cut);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    pump(client, server, fault, &cut).await;
                });
            }
        });
        Ok(Proxy {
            address,
            connections,
            cuts,
            stop,
        })
    }

    /// The endpoint URI clients use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops accepting (open connections end with their peers).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies both ways; with a fault, cuts the connection after its delay, with
/// a reset (`true`: SO_LINGER 0) or a plain close.
async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    fault: Option<(Duration, bool)>,
    cuts: &AtomicU64,
) {
    let Some((after, reset)) = fault else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = tokio::time::sleep(after) => {
            cuts.fetch_add(1, Ordering::SeqCst);
            if reset {
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
            }
        }
    }
}
