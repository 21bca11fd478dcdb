//! A minimal blocking UDP driver for the stub, to try it with real clients
//! (`dig`, `dnsperf`) before the helper's driver exists. One socket serves
//! clients and talks to the upstream: datagrams from the upstream address
//! are upstream replies, everything else is a query. Not the helper's
//! driver: no TCP, one thread.
//!
//! Run: `cargo run --release -p warren-dns --example serve -- 127.0.0.1:5354
//! [--upstream 127.0.0.1:53] [NAME=ADDR[,ADDR...]]...`

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use warren_dns::{Config, Outcome, Stub, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or("usage: serve LISTEN ...")?.parse()?;
    let mut upstream: Option<SocketAddr> = None;
    let mut names: Vec<(String, Vec<IpAddr>)> = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--upstream" {
            upstream = Some(args.next().ok_or("--upstream needs an address")?.parse()?);
        } else {
            let (name, addrs) = arg.split_once('=').ok_or("expected NAME=ADDR")?;
            let addrs = addrs
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<IpAddr>, _>>()?;
            names.push((name.to_string(), addrs));
        }
    }
    let mut config = Config::new("warren");
    config.upstreams = upstream.map(|u| vec![u]);
    // Forward for clients on the listening address's machine only.
    config.local_addresses = vec![listen.ip()];
    let mut stub = Stub::new(config)?;
    for (name, err) in stub.set_names(names) {
        eprintln!("skipped {name}: {err}");
    }

    let socket = UdpSocket::bind(listen)?;
    eprintln!("serving {} names on {listen}", stub.name_count());
    let mut buf = vec![0u8; 65535];
    loop {
        // Wake for the next forward deadline, or block.
        let wait = stub.poll_timeout().map(|t| {
            t.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        socket.set_read_timeout(wait)?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let now = Instant::now();
                if Some(from) == upstream {
                    if let Some(reply) = stub.handle_upstream(now, from, &buf[..len]) {
                        socket.send_to(&reply.bytes, reply.client)?;
                    }
                } else if let Outcome::Reply(reply) =
                    stub.handle_query(now, &buf[..len], Transport::Udp, from)
                {
                    socket.send_to(&reply, from)?;
                }
                while let Some(tx) = stub.poll_transmit() {
                    socket.send_to(&tx.bytes, tx.to)?;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
        stub.handle_timeout(Instant::now());
    }
}
