//! A loopback TCP proxy that injects network faults in front of a real server. It forwards bytes
//! both ways until told otherwise:
//!
//! - **down** (`down`, `down_after`, `down_at`): every open connection is cut and new ones are
//!   closed at once, as a crashed or unreachable server looks to a client; `up` brings it back;
//! - **reset** (`reset_after`): one connection is aborted with a TCP RST part way through a
//!   request (the proxy stays up: a retry reaches the server);
//! - **delay** (`delay`): every chunk, either way, waits before it is forwarded (a slow link);
//! - **truncate** (`truncate_after`): the server's answer is cut off after some bytes and that
//!   connection closed (the request may well have been applied);
//! - **blackhole** (`blackhole`): connections are accepted and read, but nothing is forwarded
//!   and nothing comes back, as a hung server or a partitioned network looks; `up` ends it,
//!   cutting the connections that fell in.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

/// u64::MAX in a byte budget: never.
const NEVER: u64 = u64::MAX;

struct Shared {
    upstream: u16,
    down: AtomicBool,
    blackhole: AtomicBool,
    /// Client-to-server bytes left before the proxy goes down by itself.
    budget: AtomicU64,
    /// Client-to-server bytes left before the connection carrying them is reset.
    reset_budget: AtomicU64,
    /// Client-to-server bytes left before the proxy turns into a blackhole.
    hole_budget: AtomicU64,
    /// Server-to-client bytes left before the answer carrying them is cut off.
    truncate_budget: AtomicU64,
    delay_ms: AtomicU64,
    /// What to do at a client chunk holding a pattern (after letting some such chunks through).
    trap: Mutex<Option<Trap>>,
    open: Mutex<Vec<TcpStream>>,
    /// Faults injected so far (resets, truncations, connections swallowed by the blackhole).
    faults: AtomicU64,
}

struct Trap {
    pattern: Vec<u8>,
    /// Chunks holding the pattern to let through first.
    skip: u64,
    action: Sprung,
}

#[derive(Clone, Copy, PartialEq)]
enum Sprung {
    /// Go down (for good, until `up`) instead of forwarding the chunk.
    Down,
    /// Reset the connection instead of forwarding the chunk.
    Reset,
    /// Forward the chunk, then reset the connection: the request lands, its answer is lost.
    ResetAfter,
}

impl Shared {
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut_open();
    }

    fn cut_open(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Take `n` from `budget`; when that runs it out, it is disarmed and the bytes it had left
    /// are returned. One atomic step: the pumps of several connections spend the same budget, and
    /// exactly one of them sees it run out.
    fn spend(budget: &AtomicU64, n: u64) -> Option<u64> {
        let mut ran_out = None;
        let _ = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            ran_out = None;
            if left == NEVER {
                None
            } else if n >= left {
                ran_out = Some(left);
                Some(NEVER)
            } else {
                Some(left - n)
            }
        });
        ran_out
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream,
            down: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            budget: AtomicU64::new(NEVER),
            reset_budget: AtomicU64::new(NEVER),
            hole_budget: AtomicU64::new(NEVER),
            truncate_budget: AtomicU64::new(NEVER),
            delay_ms: AtomicU64::new(0),
            trap: Mutex::new(None),
            open: Mutex::new(Vec::new()),
            faults: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if s.blackhole.load(Ordering::SeqCst) {
                    s.faults.fetch_add(1, Ordering::SeqCst);
                    s.open.lock().unwrap().push(client.try_clone().expect("clone"));
                    std::thread::spawn(move || swallow(client));
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
                let reset = Arc::new(AtomicBool::new(false));
                let r2 = reset.clone();
                std::thread::spawn(move || pump(client, server, &s1, true, &reset));
                std::thread::spawn(move || pump(sv2, c2, &s2, false, &r2));
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
        self.trap(pattern, skip, Sprung::Down);
    }

    /// Reset the connection carrying the next client chunk that holds `pattern` (after letting
    /// `skip` such chunks through), before that chunk reaches the server or, when `delivered`,
    /// just after. Once; the proxy stays up.
    pub fn reset_at(&self, pattern: &[u8], skip: u64, delivered: bool) {
        self.trap(
            pattern,
            skip,
            if delivered { Sprung::ResetAfter } else { Sprung::Reset },
        );
    }

    fn trap(&self, pattern: &[u8], skip: u64, action: Sprung) {
        *self.shared.trap.lock().unwrap() = Some(Trap {
            pattern: pattern.to_vec(),
            skip,
            action,
        });
    }

    pub fn down(&self) {
        self.shared.cut();
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Reset (RST) the connection carrying the client's byte this many bytes from now; the
    /// bytes of that chunk never reach the server. Once.
    pub fn reset_after(&self, bytes: u64) {
        self.shared.reset_budget.store(bytes, Ordering::SeqCst);
    }

    /// Cut off the server's answer this many bytes from now, closing that connection. Once.
    pub fn truncate_after(&self, bytes: u64) {
        self.shared.truncate_budget.store(bytes, Ordering::SeqCst);
    }

    /// Hold every chunk, either way, this long before forwarding it.
    pub fn delay(&self, by: Duration) {
        self.shared.delay_ms.store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Swallow everything from now on: nothing forwarded, nothing answered, nothing closed.
    pub fn blackhole(&self) {
        self.shared.blackhole.store(true, Ordering::SeqCst);
    }

    /// Turn into a blackhole this many client bytes from now (that chunk is swallowed).
    pub fn blackhole_after(&self, bytes: u64) {
        self.shared.hole_budget.store(bytes, Ordering::SeqCst);
    }

    /// Resets, truncations and swallowed connections so far.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::SeqCst)
    }

    /// Back to forwarding everything at once; connections a blackhole swallowed are cut.
    pub fn up(&self) {
        let s = &self.shared;
        for b in [&s.budget, &s.reset_budget, &s.hole_budget, &s.truncate_budget] {
            b.store(NEVER, Ordering::SeqCst);
        }
        s.delay_ms.store(0, Ordering::SeqCst);
        *s.trap.lock().unwrap() = None;
        if s.blackhole.swap(false, Ordering::SeqCst) {
            s.cut_open();
        }
        s.down.store(false, Ordering::SeqCst);
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        url.replace(&format!(":{}/", self.shared.upstream), &format!(":{}/", self.port))
    }
}

/// Read and drop whatever arrives until the connection is cut.
fn swallow(mut from: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Abort `client`'s connection with a RST: with a zero linger, closing it discards what is
/// unsent and resets. Waking the pumps with a read-side shutdown keeps them from sending a FIN
/// first; the last descriptor closing sends the RST.
/// Counted as a fault; `was_reset` tells the other pump of the connection.
fn reset(client: &TcpStream, server: &TcpStream, s: &Shared, was_reset: &AtomicBool) {
    was_reset.store(true, Ordering::SeqCst);
    s.faults.fetch_add(1, Ordering::SeqCst);
    let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
    let _ = client.shutdown(Shutdown::Read);
    let _ = server.shutdown(Shutdown::Both);
    let mut open = s.open.lock().unwrap();
    let fd = |t: &TcpStream| t.local_addr().ok().zip(t.peer_addr().ok());
    let mine = fd(client);
    open.retain(|t| fd(t) != mine);
}

/// Forward `from` to `to`; `was_reset` is shared by a connection's two pumps, so the one that
/// did not reset it does not close it politely either.
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, from_client: bool, was_reset: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if s.down.load(Ordering::SeqCst) {
            break;
        }
        if s.blackhole.load(Ordering::SeqCst) {
            s.faults.fetch_add(1, Ordering::SeqCst);
            swallow(from);
            return;
        }
        let delay = s.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if from_client {
            let mut trap = s.trap.lock().unwrap();
            if let Some(t) = trap.as_mut()
                && buf[..n].windows(t.pattern.len()).any(|w| w == &t.pattern[..])
            {
                if t.skip == 0 {
                    let action = t.action;
                    *trap = None;
                    drop(trap);
                    match action {
                        Sprung::Down => {
                            s.cut();
                            break;
                        }
                        Sprung::Reset | Sprung::ResetAfter => {
                            // From here on the server's answers are dropped (see below).
                            was_reset.store(true, Ordering::SeqCst);
                            if action == Sprung::ResetAfter {
                                let _ = to.write_all(&buf[..n]);
                                let _ = to.flush();
                                // Let the server read it before the connection goes.
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            reset(&from, &to, s, was_reset);
                            return;
                        }
                    }
                }
                t.skip -= 1;
            }
            drop(trap);
            if Shared::spend(&s.budget, n as u64).is_some() {
                s.cut();
                break;
            }
            if Shared::spend(&s.hole_budget, n as u64).is_some() {
                s.blackhole.store(true, Ordering::SeqCst);
                s.faults.fetch_add(1, Ordering::SeqCst);
                swallow(from);
                return;
            }
            if Shared::spend(&s.reset_budget, n as u64).is_some() {
                reset(&from, &to, s, was_reset);
                return;
            }
        } else {
            if was_reset.load(Ordering::SeqCst) {
                // The connection is being reset: no answer gets through any more.
                return;
            }
            if let Some(left) = Shared::spend(&s.truncate_budget, n as u64) {
                s.faults.fetch_add(1, Ordering::SeqCst);
                let _ = to.write_all(&buf[..(left as usize).min(n)]);
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if was_reset.load(Ordering::SeqCst) {
        return;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
