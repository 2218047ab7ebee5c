//! A TCP proxy on loopback that injects network faults between the runtime
//! and the control plane, for real: it sits on the byte stream (TLS passes
//! through it untouched unless a fault says otherwise).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does to each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward, holding every chunk from the server back this long.
    Delay(Duration),
    /// Accept and close at once, sending nothing.
    Drop,
    /// Forward the client's bytes; of the server's, forward the first `n`
    /// and then close both sides (an answer cut short, after the server
    /// may have acted on the request).
    TruncateResponse(usize),
    /// Accept, leave the client's bytes unread and close: the kernel
    /// answers with a reset.
    Reset,
    /// Forward, flipping one bit of every server chunk.
    Corrupt,
    /// Accept and never answer.
    Blackhole,
}

/// A running proxy to `upstream`; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connections accepted so far.
    pub connections: Arc<Mutex<usize>>,
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(0));
        let thread = {
            let (fault, stop, connections) = (fault.clone(), stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            *connections.lock().unwrap() += 1;
                            let fault = *fault.lock().unwrap();
                            let stop = stop.clone();
                            std::thread::spawn(move || handle(client, upstream, fault, stop));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Proxy {
            addr,
            fault,
            stop,
            thread: Some(thread),
            connections,
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault for connections accepted from now on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(client: TcpStream, upstream: SocketAddr, fault: Fault, stop: Arc<AtomicBool>) {
    match fault {
        Fault::Drop => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Reset => {
            // Wait for the client's first bytes, leave them unread, close.
            std::thread::sleep(Duration::from_millis(50));
            drop(client);
            return;
        }
        Fault::Blackhole => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (client_r, server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || pump(client_r, server_w, |_| Step::Forward));
    let mut sent = 0usize;
    pump(server, client, move |chunk: &mut Vec<u8>| match fault {
        Fault::Delay(d) => {
            std::thread::sleep(d);
            Step::Forward
        }
        Fault::TruncateResponse(n) => {
            if sent + chunk.len() >= n {
                chunk.truncate(n - sent);
                Step::ForwardThenClose
            } else {
                sent += chunk.len();
                Step::Forward
            }
        }
        Fault::Corrupt => {
            let middle = chunk.len() / 2;
            chunk[middle] ^= 0x40;
            Step::Forward
        }
        _ => Step::Forward,
    });
    let _ = up.join();
}

enum Step {
    Forward,
    ForwardThenClose,
}

fn pump(mut from: TcpStream, mut to: TcpStream, mut step: impl FnMut(&mut Vec<u8>) -> Step) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        let close = matches!(step(&mut chunk), Step::ForwardThenClose);
        if to.write_all(&chunk).is_err() || close {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
