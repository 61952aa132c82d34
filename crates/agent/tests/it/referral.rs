//! A domain controller that answers the agent's in-chain membership check with a
//! referral (#25, item 5), as a DC that does not hold the user would: a man in the
//! middle that terminates the agent's TLS with a certificate of its own CA, opens
//! LDAPS to a real Samba DC, and relays LDAP messages one by one — except a search
//! whose base is `<GUID=…>` and whose filter uses `LDAP_MATCHING_RULE_IN_CHAIN`
//! (only the protected-account check sends one), which it answers itself with
//! `searchResultDone` result code 10 and a referral URL, never passing it on.
//!
//! The agent sends one request at a time on a connection and waits for its answer,
//! so the relay reads one request from the agent, then the DC's messages up to the
//! one that ends that request (anything but an entry, a continuation reference or
//! an intermediate response). Blocking threads, one per connection: the test binary
//! ends them when it exits.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use writeback_testkit::{SambaDc, TestCa};

/// `LDAP_MATCHING_RULE_IN_CHAIN`, as it appears in the filter's bytes.
const IN_CHAIN: &[u8] = b"1.2.840.113556.1.4.1941";
/// Where the referral points.
pub const REFERRAL_URL: &str = "ldap://dc.elsewhere.test/DC=elsewhere,DC=test";

/// LDAP protocol-op tags.
const UNBIND_REQUEST: u8 = 0x42;
const SEARCH_REQUEST: u8 = 0x63;
const SEARCH_RESULT_ENTRY: u8 = 0x64;
const SEARCH_RESULT_DONE: u8 = 0x65;
const ABANDON_REQUEST: u8 = 0x50;
const SEARCH_RESULT_REFERENCE: u8 = 0x73;
const INTERMEDIATE_RESPONSE: u8 = 0x79;

/// The man in the middle.
pub struct ReferringDc {
    ip: Ipv4Addr,
    port: u16,
    ca_pem: String,
    referrals: Arc<AtomicUsize>,
}

impl ReferringDc {
    /// Listen on the DC's own address, port chosen by the OS.
    pub fn start(dc: &SambaDc) -> ReferringDc {
        let ip = dc.ip();
        let ca = TestCa::new("referring dc").unwrap();
        let (cert, key) = ca.issue_server(&[], &[IpAddr::V4(ip)]).unwrap();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let client = dc.tls_config();
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let referrals = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&referrals);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (server, client, counted) = (
                    Arc::clone(&server),
                    Arc::clone(&client),
                    Arc::clone(&counted),
                );
                std::thread::spawn(move || {
                    let _ = relay(conn, ip, server, client, &counted);
                });
            }
        });
        ReferringDc {
            ip,
            port,
            ca_pem: ca.cert_pem(),
            referrals,
        }
    }

    /// `ldaps://<ip>:<port>`.
    pub fn url(&self) -> String {
        format!("ldaps://{}:{}", self.ip, self.port)
    }

    /// The CA that issued its certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// How many requests it answered with a referral.
    pub fn referrals(&self) -> usize {
        self.referrals.load(Ordering::SeqCst)
    }
}

fn relay(
    agent: TcpStream,
    ip: Ipv4Addr,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    referrals: &AtomicUsize,
) -> std::io::Result<()> {
    let mut down = rustls::StreamOwned::new(
        rustls::ServerConnection::new(server).map_err(std::io::Error::other)?,
        agent,
    );
    let name = ServerName::IpAddress(IpAddr::V4(ip).into());
    let mut up = rustls::StreamOwned::new(
        rustls::ClientConnection::new(client, name).map_err(std::io::Error::other)?,
        TcpStream::connect((ip, 636))?,
    );
    loop {
        let Some(request) = read_message(&mut down)? else {
            return Ok(());
        };
        let (id, op) = head(&request).ok_or_else(|| std::io::Error::other("bad message"))?;
        if op == SEARCH_REQUEST && is_in_chain_guid_search(&request) {
            referrals.fetch_add(1, Ordering::SeqCst);
            down.write_all(&referral_done(id))?;
            down.flush()?;
            continue;
        }
        up.write_all(&request)?;
        up.flush()?;
        if op == UNBIND_REQUEST {
            return Ok(());
        }
        if op == ABANDON_REQUEST {
            continue;
        }
        loop {
            let Some(response) = read_message(&mut up)? else {
                return Ok(());
            };
            down.write_all(&response)?;
            down.flush()?;
            let (_, op) = head(&response).ok_or_else(|| std::io::Error::other("bad message"))?;
            if !matches!(
                op,
                SEARCH_RESULT_ENTRY | SEARCH_RESULT_REFERENCE | INTERMEDIATE_RESPONSE
            ) {
                break;
            }
        }
    }
}

/// One BER element (tag, length, contents) from `r`; `None` at a clean end.
fn read_message(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag)? == 0 {
        return Ok(None);
    }
    let mut out = vec![tag[0]];
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    out.push(first[0]);
    let len = if first[0] < 0x80 {
        usize::from(first[0])
    } else {
        let mut bytes = vec![0u8; usize::from(first[0] & 0x7f)];
        r.read_exact(&mut bytes)?;
        out.extend_from_slice(&bytes);
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let start = out.len();
    out.resize(start + len, 0);
    r.read_exact(&mut out[start..])?;
    Ok(Some(out))
}

/// The length of the tag-and-length header at the start of `b`.
fn header_len(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    Some(if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    })
}

/// The element at the start of `b`: (its contents, its whole length).
fn element(b: &[u8]) -> Option<(&[u8], usize)> {
    let h = header_len(b)?;
    let first = *b.get(1)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        b.get(2..h)?
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
    };
    Some((b.get(h..h + len)?, h + len))
}

/// An LDAPMessage's message id (the INTEGER's contents) and protocol-op tag.
fn head(message: &[u8]) -> Option<(Vec<u8>, u8)> {
    let (body, _) = element(message)?;
    let (id, id_len) = element(body)?;
    Some((id.to_vec(), *body.get(id_len)?))
}

/// A search request whose base is `<GUID=…>` and whose filter uses the in-chain rule.
fn is_in_chain_guid_search(message: &[u8]) -> bool {
    let Some((body, _)) = element(message) else {
        return false;
    };
    let Some((_, id_len)) = element(body) else {
        return false;
    };
    let Some((search, _)) = body.get(id_len..).and_then(element) else {
        return false;
    };
    let Some((base, _)) = element(search) else {
        return false;
    };
    base.starts_with(b"<GUID=") && search.windows(IN_CHAIN.len()).any(|w| w == IN_CHAIN)
}

/// `tag`, a BER length, `contents`.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// `searchResultDone` with result code 10 (referral) for message `id`.
fn referral_done(id: Vec<u8>) -> Vec<u8> {
    let mut result = tlv(0x0a, &[10]);
    result.extend(tlv(0x04, b""));
    result.extend(tlv(
        0x04,
        b"0000202B: RefErr: DSID-0310084A, data 0, 1 access points",
    ));
    result.extend(tlv(0xa3, &tlv(0x04, REFERRAL_URL.as_bytes())));
    let mut message = tlv(0x02, &id);
    message.extend(tlv(SEARCH_RESULT_DONE, &result));
    tlv(0x30, &message)
}

#[test]
fn the_relay_reads_what_it_answers() {
    let done = referral_done(vec![7]);
    assert_eq!(head(&done), Some((vec![7], SEARCH_RESULT_DONE)));
    assert_eq!(element(&done).map(|(_, len)| len), Some(done.len()));
    // A search of `<GUID=…>` with an in-chain filter (extensibleMatch [9]), and the
    // same search of a DN.
    let search = |base: &str| {
        let mut req = tlv(0x04, base.as_bytes());
        req.extend(tlv(0x0a, &[0]));
        let mut rule = tlv(0x81, IN_CHAIN);
        rule.extend(tlv(0x82, b"memberOf"));
        rule.extend(tlv(
            0x83,
            "CN=Domain Admins,CN=Users,DC=contoso,DC=test"
                .repeat(4)
                .as_bytes(),
        ));
        req.extend(tlv(0xa9, &rule));
        let mut message = tlv(0x02, &[1, 2]);
        message.extend(tlv(SEARCH_REQUEST, &req));
        tlv(0x30, &message)
    };
    let by_guid = search("<GUID=5f0c2b1e-0000-4000-8000-000000000001>");
    assert!(by_guid.len() > 0x80, "long form lengths are exercised");
    assert_eq!(head(&by_guid), Some((vec![1, 2], SEARCH_REQUEST)));
    assert!(is_in_chain_guid_search(&by_guid));
    assert!(!is_in_chain_guid_search(&search(
        "CN=Administrator,CN=Users,DC=contoso,DC=test"
    )));
    let mut read = by_guid.as_slice();
    assert_eq!(read_message(&mut read).unwrap(), Some(by_guid.clone()));
    assert_eq!(read_message(&mut read).unwrap(), None);
}
