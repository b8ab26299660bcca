//! Hostile HTTP clients against a real node: slowloris connections are closed by the header
//! timeout while other clients are served, and a flood of connections beyond the open-files
//! limit is shed without bringing the process down.

use causeway_e2e::{Cluster, Opts, client};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The node's header read timeout (docs/limits.md).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A `/healthz` probe on a fresh connection; returns its latency when it answered 200.
fn probe(url: &str) -> Option<Duration> {
    let started = Instant::now();
    let r = client()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    (r.status() == 200).then(|| started.elapsed())
}

/// True when the server closed `s` (a read returns end of stream or an error).
fn closed_by_server(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slowloris_connections_are_closed_by_the_header_timeout() {
    let c = Cluster::start("slowloris", 1, 1, &[]);
    let addr = c.addrs[0].clone();
    let mut conns: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connecting");
            s.write_all(b"GET /healthz HTTP/1.1\r\n")
                .expect("first bytes");
            s
        })
        .collect();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    // Dribble a header byte on every connection twice a second, probing in between.
    while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(3) {
        for s in &mut conns {
            let _ = s.write_all(b"X");
        }
        let latency = probe(&c.url(0)).expect("the probe is served during the slowloris");
        worst = worst.max(latency);
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("slowloris: worst probe latency {worst:?}");
    assert!(worst < Duration::from_secs(1), "probe took {worst:?}");
    let open = conns.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(open, 0, "{open} of 300 slowloris connections still open");
}

#[test]
fn a_connection_flood_past_the_open_files_limit_is_shed() {
    let opts = Opts {
        nofile: Some(1024),
        ..Opts::default()
    };
    let mut c = Cluster::start_with("conn-flood", 1, 1, &[], opts);
    let addr = c.addrs[0].clone();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n");
                held.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.is_running(0), "the node survived 2,000 connections");
    let shed = held.iter().filter(|s| closed_by_server(s)).count();
    eprintln!(
        "flood: {refused} refused, {shed} shed at once, {} held",
        held.len() - shed
    );
    assert!(
        refused + shed >= 2000 - 1024,
        "the excess was refused or shed: {refused} refused, {shed} shed"
    );
    // The held connections time out; the node serves again, and was never down.
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(5);
    while probe(&c.url(0)).is_none() {
        assert!(
            Instant::now() < deadline,
            "the node serves again after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.is_running(0), "the node is still up");
    drop(held);
    assert!(probe(&c.url(0)).is_some());
}
