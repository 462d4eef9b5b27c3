//! A loopback TCP proxy that can take a server away: in front of a real server, it forwards
//! bytes both ways until told (or until a byte budget runs out) to go down, when it cuts every
//! open connection and closes new ones at once, as a crashed or unreachable server would look to
//! a client. `up` brings it back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: u16,
    down: AtomicBool,
    /// Client-to-server bytes left before the proxy goes down by itself (u64::MAX: never).
    budget: AtomicU64,
    /// Go down instead of forwarding a client chunk holding this pattern, after letting
    /// `.1` such chunks through.
    trap: Mutex<Option<(Vec<u8>, u64)>>,
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream,
            down: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
            trap: Mutex::new(None),
            open: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", s.upstream)) else {
                    continue;
                };
                {
                    let mut open = s.open.lock().unwrap();
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                let (s1, s2) = (s.clone(), s.clone());
                let (c2, sv2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                std::thread::spawn(move || pump(client, server, &s1, true));
                std::thread::spawn(move || pump(sv2, c2, &s2, false));
            }
        });
        Proxy { port, shared }
    }

    /// Go down after this many more bytes from clients.
    pub fn down_after(&self, bytes: u64) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
    }

    /// Go down when a client sends `pattern` for the `(skip + 1)`-th time, before it reaches
    /// the server (e.g. a COMMIT message: the server never sees it).
    pub fn down_at(&self, pattern: &[u8], skip: u64) {
        *self.shared.trap.lock().unwrap() = Some((pattern.to_vec(), skip));
    }

    pub fn down(&self) {
        self.shared.cut();
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    pub fn up(&self) {
        self.shared.budget.store(u64::MAX, Ordering::SeqCst);
        *self.shared.trap.lock().unwrap() = None;
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        url.replace(&format!(":{}/", self.shared.upstream), &format!(":{}/", self.port))
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, metered: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if s.down.load(Ordering::SeqCst) {
            break;
        }
        if metered {
            let mut trap = s.trap.lock().unwrap();
            if let Some((pattern, skip)) = trap.as_mut()
                && buf[..n].windows(pattern.len()).any(|w| w == &pattern[..])
            {
                if *skip == 0 {
                    *trap = None;
                    drop(trap);
                    s.cut();
                    break;
                }
                *skip -= 1;
            }
            drop(trap);
            let left = s.budget.load(Ordering::SeqCst);
            if left != u64::MAX {
                if (n as u64) >= left {
                    s.cut();
                    break;
                }
                s.budget.fetch_sub(n as u64, Ordering::SeqCst);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
