use std::path::Path;
use std::time::Instant;

use ldap3::{LdapConnAsync, LdapConnSettings};
use writeback_testkit::{SambaDc, TestkitError};

use crate::init_tracing;

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Exercise one DC the way writeback tests will: create a user, bind and kinit with
/// the right and the wrong password, read attributes back.
async fn exercise(dc: &SambaDc, sam: &str, password: &str) {
    let dn = dc.create_user(sam, password).await.unwrap();
    assert_eq!(dn, format!("CN={sam},CN=Users,{}", dc.base_dn()));
    let upn = format!("{sam}@{}", dc.domain());

    assert!(dc.try_bind(&upn, password).await.unwrap(), "bind by UPN");
    assert!(dc.try_bind(&dn, password).await.unwrap(), "bind by DN");
    assert!(!dc.try_bind(&upn, "Wrong-Passw0rd!").await.unwrap());

    assert!(
        dc.kinit(sam, password).await.unwrap(),
        "kinit right password"
    );
    assert!(!dc.kinit(sam, "Wrong-Passw0rd!").await.unwrap());
    assert!(dc.kinit(&upn, password).await.unwrap(), "kinit user@domain");
    let unknown = dc.kinit("nobody-here", password).await.unwrap_err();
    assert!(matches!(unknown, TestkitError::Kinit { .. }), "{unknown}");
    let empty = dc.try_bind(&dn, "").await.unwrap_err();
    assert!(matches!(empty, TestkitError::InvalidInput(_)), "{empty}");

    let attrs = dc
        .read_attrs(
            &dn,
            &["userPrincipalName", "sAMAccountName", "userAccountControl"],
        )
        .await
        .unwrap();
    assert_eq!(attrs["userPrincipalName"], vec![upn]);
    assert_eq!(attrs["sAMAccountName"], vec![sam.to_string()]);
    assert_eq!(attrs["userAccountControl"], vec!["512".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_domain_controllers_run_side_by_side() {
    init_tracing();
    let started = Instant::now();
    let (contoso, fabrikam) = tokio::try_join!(
        SambaDc::start("contoso.test"),
        SambaDc::start("fabrikam.test")
    )
    .unwrap();
    eprintln!("two DCs ready in {:?}", started.elapsed());

    assert_ne!(contoso.ip(), fabrikam.ip());
    assert_ne!(contoso.dir(), fabrikam.dir());
    assert_eq!(contoso.realm(), "CONTOSO.TEST");
    assert_eq!(contoso.netbios(), "CONTOSO");
    assert_eq!(fabrikam.netbios(), "FABRIKAM");
    assert_eq!(contoso.base_dn(), "DC=contoso,DC=test");
    assert_eq!(
        contoso.admin_dn(),
        "CN=Administrator,CN=Users,DC=contoso,DC=test"
    );
    assert_eq!(contoso.ldaps_url(), format!("ldaps://{}:636", contoso.ip()));
    assert_ne!(contoso.admin_password(), fabrikam.admin_password());

    tokio::join!(
        exercise(&contoso, "alice", "Alice-Passw0rd!"),
        exercise(&fabrikam, "bob", "Bob-Passw0rd!"),
    );

    // The directories are separate: alice exists only in contoso.
    assert!(
        !fabrikam
            .try_bind("alice@contoso.test", "Alice-Passw0rd!")
            .await
            .unwrap()
    );
    assert!(
        contoso
            .try_bind("alice@contoso.test", "Alice-Passw0rd!")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn certificate_is_verified_against_the_dc_own_ca_only() {
    init_tracing();
    let (a, b) = tokio::try_join!(
        SambaDc::start("verify-a.test"),
        SambaDc::start("verify-b.test")
    )
    .unwrap();

    // a's trust store does not contain b's CA: the TLS handshake must fail.
    let settings = LdapConnSettings::new().set_config(a.tls_config());
    let wrong_ca = LdapConnAsync::with_settings(settings, &b.ldaps_url()).await;
    let err = wrong_ca
        .err()
        .expect("handshake with an untrusted CA must fail");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "unexpected error: {err}"
    );

    // And with its own CA it binds.
    assert!(b.try_bind(&b.admin_dn(), b.admin_password()).await.unwrap());
    assert!(b.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn drop_stops_samba_and_removes_the_directory() {
    init_tracing();
    let dc = SambaDc::start("contoso.test").await.unwrap();
    let dir = dc.dir().to_path_buf();
    let pid = dc.pid().unwrap();
    let ip = dc.ip();
    assert!(dir.join("etc/smb.conf").exists());
    assert!(process_exists(pid));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let stopped = Instant::now();
    drop(dc);
    eprintln!("dc stopped and removed in {:?}", stopped.elapsed());

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!process_exists(pid), "samba pid {pid} still alive");
    let refused = std::net::TcpStream::connect((ip, 636));
    assert!(refused.is_err(), "something still listens on {ip}:636");
}

#[tokio::test]
async fn users_in_an_ou_password_settings_and_samba_tool() {
    init_tracing();
    let dc = SambaDc::start("fabrikam.test").await.unwrap();

    dc.set_password_settings(&["--complexity=off", "--min-pwd-length=3", "--min-pwd-age=0"])
        .await
        .unwrap();
    let show = dc
        .samba_tool(&["domain", "passwordsettings", "show"])
        .await
        .unwrap();
    assert!(show.contains("Password complexity: off"), "{show}");

    let ou = dc.create_ou("Staff").await.unwrap();
    assert_eq!(ou, format!("OU=Staff,{}", dc.base_dn()));
    // Accepted only because complexity is off now.
    let dn = dc.create_user_in(&ou, "carol", "simple").await.unwrap();
    assert_eq!(dn, format!("CN=carol,{ou}"));
    assert!(dc.try_bind("carol@fabrikam.test", "simple").await.unwrap());

    // Samba's errors arrive typed, with the directory's text.
    let err = dc.create_user_in(&ou, "carol", "simple").await.unwrap_err();
    assert!(
        matches!(err, TestkitError::LdapResult { rc: 68, .. }),
        "expected entryAlreadyExists, got {err}"
    );
    let err = dc
        .samba_tool(&["user", "show", "nobody-here"])
        .await
        .unwrap_err();
    assert!(matches!(err, TestkitError::Command { .. }), "{err}");
}
