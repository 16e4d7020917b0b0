//! A DNS responder on loopback UDP for tests: answers A and AAAA queries for any name with the
//! addresses it is given (TTL 0), or fails (SERVFAIL) or stays silent when told to. Speaks the
//! wire format (RFC 1035 header, question, answer records with a compression pointer), so the
//! `dns` resolver's real client (hickory) talks to it as to any nameserver.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Answer,
    ServFail,
    Silent,
}

#[derive(Clone)]
pub struct FakeDns {
    pub addr: SocketAddr,
    state: Arc<Mutex<(Vec<IpAddr>, Mode)>>,
    pub queries: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeDns {
    pub async fn start(answers: Vec<IpAddr>) -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let dns = FakeDns {
            addr: socket.local_addr().expect("local addr"),
            state: Arc::new(Mutex::new((answers, Mode::Answer))),
            queries: Arc::default(),
        };
        let d = dns.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                d.queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (answers, mode) = d.state.lock().unwrap().clone();
                if mode == Mode::Silent {
                    continue;
                }
                if let Some(reply) = reply(&buf[..n], &answers, mode == Mode::ServFail) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        dns
    }

    pub fn set(&self, answers: Vec<IpAddr>) {
        *self.state.lock().unwrap() = (answers, Mode::Answer);
    }

    pub fn mode(&self, mode: Mode) {
        self.state.lock().unwrap().1 = mode;
    }
}

/// The reply to one query: its id and question echoed, the matching records answered.
fn reply(query: &[u8], answers: &[IpAddr], servfail: bool) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question_end = at + 5;
    let records: Vec<&IpAddr> = answers
        .iter()
        .filter(|ip| match ip {
            IpAddr::V4(_) => qtype == 1,
            IpAddr::V6(_) => qtype == 28,
        })
        .collect();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 1;
    out.push(0x84 | rd); // QR, AA, RD as asked
    out.push(if servfail { 0x82 } else { 0x80 }); // RA; rcode 2 = SERVFAIL
    out.extend_from_slice(&1u16.to_be_bytes()); // one question
    let count = if servfail { 0 } else { records.len() as u16 };
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    out.extend_from_slice(query.get(12..question_end)?);
    if servfail {
        return Some(out);
    }
    for ip in records {
        out.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: ask again every time
        match ip {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(out)
}
