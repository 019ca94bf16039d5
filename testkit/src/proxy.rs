//! A TCP proxy that breaks connections on demand: cut (both ends closed at
//! once) or frozen (bytes swallowed, nothing closed: a half-open link).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One proxied connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    frozen: Arc<AtomicBool>,
}

/// A proxy on a loopback port in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    /// Frozen connections, kept open until the proxy goes.
    frozen: Mutex<Vec<Link>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, stopping) = (links.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                // The server may be restarting: the agency sees a refused
                // connection as it would without the proxy.
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let frozen = Arc::new(AtomicBool::new(false));
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to, frozen) =
                        (from.try_clone().unwrap(), to.try_clone().unwrap(), frozen.clone());
                    std::thread::spawn(move || pump(from, to, &frozen));
                }
                let mut links = accepted.lock().unwrap();
                links.retain(|l| l.client.peer_addr().is_ok());
                links.push(Link { client, server, frozen });
            }
        });
        Proxy { addr, links, frozen: Mutex::default(), stop }
    }

    /// Closes every connection now, both ends; returns how many.
    pub fn cut_all(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap());
        for link in &links {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        links.len()
    }

    /// From now on, every open connection swallows what it gets and
    /// closes nothing; returns how many.
    pub fn freeze_all(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap());
        links.iter().for_each(|l| l.frozen.store(true, Ordering::Release));
        let count = links.len();
        self.frozen.lock().unwrap().extend(links);
        count
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut_all();
        let frozen = std::mem::take(&mut *self.frozen.lock().unwrap());
        for link in frozen {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Copies `from` to `to` until either closes, or swallows once frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    let copied = (|| -> io::Result<()> {
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if !frozen.load(Ordering::Acquire) {
                to.write_all(&buf[..n])?;
            }
        }
    })();
    if copied.is_ok() && !frozen.load(Ordering::Acquire) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
