use std::net::IpAddr;

use writeback_testkit::TestCa;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

#[test]
fn server_certificate_has_the_requested_sans_and_chains_to_the_ca() {
    let ca = TestCa::new("it test ca").unwrap();
    let ip: IpAddr = "127.0.0.42".parse().unwrap();
    let (cert_pem, _key_pem) = ca
        .issue_server(&["dc1.example.test".to_string()], &[ip])
        .unwrap();

    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::IPAddress(b) => format!("ip:{b:?}"),
            other => format!("other:{other:?}"),
        })
        .collect();
    assert_eq!(names, vec!["dns:dc1.example.test", "ip:[127, 0, 0, 42]"]);
    assert!(!cert.is_ca());

    let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
    let ca_cert = ca_pem.parse_x509().unwrap();
    assert!(ca_cert.is_ca());
    assert_eq!(cert.issuer(), ca_cert.subject());
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
}
