//! The service account's rights and connectivity: insufficient access (and which
//! right), inheritance disabled, a wrong service-account password, failover, no DC,
//! and an untrusted certificate.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use writeback_agent::directory::{DirectoryError, ResetOptions, Right};
use writeback_core::ReasonCode;
use writeback_testkit::{SambaDc, TestCa};

use crate::{admin_config, config_as, directory, pw, refused, show_attr, start_dc, upn};

/// Reset Password on descendant user objects of OU=Staff (what the permission setup
/// grants), nothing else.
const RESET_PASSWORD: &str = "00299570-246d-11d0-a768-00aa006e0529";
const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_are_named_and_connectivity_is_classified() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let staff = dc.create_ou("Staff").await.unwrap();
    let ivan = dc
        .create_user_in(&staff, "ivan", "Start-Passw0rd!")
        .await
        .unwrap();
    let judy = dc
        .create_user_in(&staff, "judy", "Start-Passw0rd!")
        .await
        .unwrap();
    dc.create_user("plain", "Plain-Passw0rd!").await.unwrap();
    dc.create_user("svc-writeback", "Svc-Passw0rd-1!")
        .await
        .unwrap();
    let reset = ResetOptions::default();

    // An ordinary account as the agent: no Reset Password right anywhere.
    let plain = directory(config_as(&dc, "plain@contoso.test", "Plain-Passw0rd!"));
    let e = refused(
        plain
            .reset_password(&upn(&dc, "ivan"), &pw("Ivan-Passw0rd-1"), reset)
            .await,
        ReasonCode::InsufficientAccess,
    );
    assert!(
        matches!(&e, DirectoryError::InsufficientAccess { missing, .. } if missing == &[Right::ResetPassword]),
        "{e:?}"
    );
    assert!(e.public_message().contains("Reset Password right"), "{e}");
    let e = refused(
        plain.unlock(&upn(&dc, "ivan")).await,
        ReasonCode::InsufficientAccess,
    );
    assert!(e.public_message().contains("lockoutTime"), "{e}");

    // Delegated Reset Password on OU=Staff: resets work, must-change names pwdLastSet.
    let sid = show_attr(&dc, "svc-writeback", "objectSid").await;
    dc.samba_tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={staff}"),
        &format!("--sddl=(OA;CIIO;CR;{RESET_PASSWORD};{USER_CLASS};{sid})"),
    ])
    .await
    .unwrap();
    let svc = directory(config_as(
        &dc,
        "svc-writeback@contoso.test",
        "Svc-Passw0rd-1!",
    ));
    svc.reset_password(&upn(&dc, "ivan"), &pw("Ivan-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(dc.try_bind(&ivan, "Ivan-Passw0rd-1").await.unwrap());
    let must = ResetOptions {
        must_change_at_next_logon: true,
        unlock: false,
    };
    let e = refused(
        svc.reset_password(&upn(&dc, "ivan"), &pw("Ivan-Passw0rd-2"), must)
            .await,
        ReasonCode::InsufficientAccess,
    );
    assert!(e.public_message().contains("write pwdLastSet"), "{e}");
    assert!(
        dc.try_bind(&ivan, "Ivan-Passw0rd-1").await.unwrap(),
        "the refused reset wrote nothing"
    );
    assert_ne!(crate::attr(&dc, &ivan, "pwdLastSet").await, "0");
    // Outside the delegated OU.
    refused(
        svc.reset_password(&upn(&dc, "plain"), &pw("Plain-Passw0rd-2"), reset)
            .await,
        ReasonCode::InsufficientAccess,
    );

    // Inheritance disabled on judy: the OU's delegation no longer reaches her.
    disable_inheritance(&dc, &judy).await;
    let e = refused(
        svc.reset_password(&upn(&dc, "judy"), &pw("Judy-Passw0rd-1"), reset)
            .await,
        ReasonCode::InheritanceDisabled,
    );
    assert!(e.public_message().contains("re-enable inheritance"), "{e}");

    // Wrong service-account password: AGENT_BIND_FAILED, also in the health check.
    let wrong = directory(config_as(
        &dc,
        "svc-writeback@contoso.test",
        "Wrong-Passw0rd!",
    ));
    refused(
        wrong.unlock(&upn(&dc, "ivan")).await,
        ReasonCode::AgentBindFailed,
    );
    let health = wrong.check_reachable().await;
    assert_eq!(health.len(), 1);
    assert_eq!(
        health[0].1.as_ref().unwrap_err().reason(),
        ReasonCode::AgentBindFailed
    );

    // Failover: a closed port first, then the DC.
    let closed = format!("ldaps://{}:1", dc.ip());
    let mut cfg = admin_config(&dc);
    cfg.urls = vec![closed.clone(), dc.ldaps_url()];
    let failover = directory(cfg.clone());
    failover.unlock(&upn(&dc, "ivan")).await.unwrap();
    let health = failover.check_reachable().await;
    assert_eq!(health[0].0, closed);
    assert_eq!(
        health[0].1.as_ref().unwrap_err().reason(),
        ReasonCode::DcUnreachable
    );
    assert!(health[1].1.is_ok(), "{:?}", health[1]);

    // StartTLS on 389 works, verified against the same CA.
    let mut starttls = admin_config(&dc);
    starttls.urls = vec![format!("ldap://{}", dc.ip())];
    directory(starttls).unlock(&upn(&dc, "ivan")).await.unwrap();

    // Nothing answers: DC_UNREACHABLE (a refused port and a black-holed address).
    let mut none = cfg.clone();
    none.urls = vec![closed.clone(), "ldaps://192.0.2.1:636".to_string()];
    none.timeout = Duration::from_secs(1);
    let e = refused(
        directory(none).unlock(&upn(&dc, "ivan")).await,
        ReasonCode::DcUnreachable,
    );
    assert!(
        matches!(&e, DirectoryError::Unreachable { attempts } if attempts.len() == 2),
        "{e:?}"
    );

    // Something accepts TCP but never speaks TLS: the per-step timeout ends the wait
    // and the next URL is used.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut stalled = cfg.clone();
    stalled.urls = vec![
        format!("ldaps://127.0.0.1:{}", silent.local_addr().unwrap().port()),
        dc.ldaps_url(),
    ];
    stalled.timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    directory(stalled.clone())
        .unlock(&upn(&dc, "ivan"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    stalled.urls.truncate(1);
    refused(
        directory(stalled).unlock(&upn(&dc, "ivan")).await,
        ReasonCode::DcUnreachable,
    );
    drop(silent);

    // A DC certificate from another CA: TLS_FAILURE, over LDAPS and StartTLS.
    let other = TestCa::new("some other CA").unwrap();
    let mut untrusted = cfg.clone();
    untrusted.urls = vec![dc.ldaps_url()];
    untrusted.ca_pem = other.cert_pem();
    let e = refused(
        directory(untrusted.clone()).unlock(&upn(&dc, "ivan")).await,
        ReasonCode::TlsFailure,
    );
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    untrusted.urls = vec![format!("ldap://{}", dc.ip())];
    refused(
        directory(untrusted).unlock(&upn(&dc, "ivan")).await,
        ReasonCode::TlsFailure,
    );

    // Plain LDAP is refused outright.
    let mut plain_ldap = cfg;
    plain_ldap.urls = vec![format!("ldapi:///{base}")];
    assert!(matches!(
        writeback_agent::directory::Directory::new(plain_ldap),
        Err(DirectoryError::Config(_))
    ));
}

/// Set SE_DACL_PROTECTED on `dn` and drop its inherited ACEs, as "Disable
/// inheritance > Remove all inherited permissions" does, over LDAPS as Administrator.
pub async fn disable_inheritance(dc: &SambaDc, dn: &str) {
    // DACL_SECURITY_INFORMATION only.
    let sd_flags = RawControl {
        ctype: "1.2.840.113556.1.4.801".to_string(),
        crit: true,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x04]),
    };
    let settings = LdapConnSettings::new().set_config(dc.tls_config());
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dc.ldaps_url())
        .await
        .unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&dc.admin_dn(), dc.admin_password())
        .await
        .unwrap()
        .success()
        .unwrap();
    let (entries, _) = ldap
        .with_controls(sd_flags.clone())
        .search(
            dn,
            Scope::Base,
            "(objectClass=*)",
            vec!["nTSecurityDescriptor"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let entry = SearchEntry::construct(entries.into_iter().next().unwrap());
    let sd = &entry.bin_attrs["nTSecurityDescriptor"][0];
    let protected = protect_dacl(sd);
    ldap.with_controls(sd_flags)
        .modify(
            dn,
            vec![Mod::Replace(
                b"nTSecurityDescriptor".as_slice(),
                HashSet::from([protected.as_slice()]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = ldap.unbind().await;
}

/// A DACL-only self-relative descriptor with SE_DACL_PROTECTED set and every
/// INHERITED_ACE removed.
fn protect_dacl(sd: &[u8]) -> Vec<u8> {
    let dacl_at = u32::from_le_bytes(sd[16..20].try_into().unwrap()) as usize;
    assert!(dacl_at >= 20, "descriptor without a DACL");
    let count = u16::from_le_bytes([sd[dacl_at + 4], sd[dacl_at + 5]]);
    let mut aces = Vec::new();
    let mut kept = 0u16;
    let mut at = dacl_at + 8;
    for _ in 0..count {
        let size = usize::from(u16::from_le_bytes([sd[at + 2], sd[at + 3]]));
        const INHERITED_ACE: u8 = 0x10;
        if sd[at + 1] & INHERITED_ACE == 0 {
            aces.extend_from_slice(&sd[at..at + size]);
            kept += 1;
        }
        at += size;
    }
    const SE_DACL_PROTECTED: u16 = 0x1000;
    let control = u16::from_le_bytes([sd[2], sd[3]]) | SE_DACL_PROTECTED;
    let mut out = vec![sd[0], sd[1]];
    out.extend_from_slice(&control.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // no owner, group or SACL
    out.extend_from_slice(&20u32.to_le_bytes()); // the DACL follows the header
    out.extend_from_slice(&[sd[dacl_at], 0]);
    out.extend_from_slice(&u16::try_from(8 + aces.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&kept.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&aces);
    out
}
