//! Hostile connections: silent and slow clients, many idle connections,
//! floods of the unauthenticated routes. Every test uses loopback only and
//! short, configured timeouts.

use std::time::{Duration, Instant};

use assessment_control_plane::config::Limits;
use assessment_control_plane::server::ConnectionLimits;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Options, Server, expect_error};

fn address(server: &Server) -> String {
    let port = server.url.rsplit(':').next().unwrap();
    format!("127.0.0.1:{port}")
}

/// Waits (at most `within`) until the server closes `stream`; returns how
/// long that took and what it sent before.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + within),
            stream.read(&mut buffer),
        )
        .await
        .expect("the server closes the connection in time");
        match read {
            Ok(0) | Err(_) => {
                return (started.elapsed(), String::from_utf8_lossy(&received).into());
            }
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

fn short_timeouts() -> ConnectionLimits {
    ConnectionLimits {
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    }
}

#[tokio::test]
async fn healthz_stays_fast_while_300_silent_connections_are_open() {
    let server = Server::start_tls().await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(address(&server)).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), server.get("/healthz").send())
        .await
        .expect("healthz answers")
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "healthz took {:?}",
        started.elapsed()
    );
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn silent_and_slow_clients_are_disconnected_after_the_header_timeout() {
    let server = Server::start_with(Options {
        connections: short_timeouts(),
        ..Options::default()
    })
    .await;
    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let (took, _) = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    // Slowloris: a header line now and then, never the end of the headers.
    let mut slow = TcpStream::connect(address(&server)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await
            && !matches!(read, Ok(n) if n > 0)
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slow header sender is still connected after 3 s");
    // A kept-alive connection that goes idle is closed too.
    let mut idle = TcpStream::connect(address(&server)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, answer) = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_body_gets_408_after_the_request_timeout() {
    let server = Server::start_with(Options {
        connections: short_timeouts(),
        ..Options::default()
    })
    .await;
    let mut slow = TcpStream::connect(address(&server)).await.unwrap();
    slow.write_all(
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"tok",
    )
    .await
    .unwrap();
    let (took, answer) = closed_within(&mut slow, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("{\"errors\":{\"message\":"), "{answer}");
    assert!(
        took >= Duration::from_millis(800),
        "answered after {took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_silent_tls_client_is_disconnected_after_the_handshake_timeout() {
    let server = Server::start_tls_with(Options {
        connections: short_timeouts(),
        ..Options::default()
    })
    .await;
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let (took, _) = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_one() {
    let server = Server::start_with(Options {
        connections: ConnectionLimits {
            max_connections: 4,
            ..short_timeouts()
        },
        ..Options::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(address(&server)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let health = server.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Served only once the header timeout freed a slot.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "served after {:?} although 4 connections were open",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_routes_are_rate_limited_per_source() {
    let server = Server::start_with(Options {
        limits: Limits {
            auth_burst: 3,
            auth_per_minute: 1,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    for _ in 0..3 {
        let refused = server.token_response(&id, "wrong").await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = server.token_response(&id, "wrong").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let message = expect_error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(message.contains("too many requests"), "{message}");
    let limited = server
        .post("/v1/enroll")
        .json(&serde_json::json!({ "token": "x", "name": "y" }))
        .send()
        .await
        .unwrap();
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Other routes are not limited.
    let health = server.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.admin_get("/v1/admin/runtimes").await;
    server.stop().await;
}
