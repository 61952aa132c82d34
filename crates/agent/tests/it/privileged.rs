//! Accounts as powerful as administrators that no protected group names (#25,
//! item 4): who holds a replication right on the domain (DCSync) — directly or
//! through nested groups —, members of DnsAdmins, Group Policy Creator Owners and
//! Cert Publishers, another writeback agent's service account (granted by
//! `permissions grant` like this one) and an account that may change the agent's
//! own service account. An agent bound as its least-privilege service account
//! (rights from `permissions grant`), with the whole domain in scope, refuses each
//! of them — with `tokenGroups` readable and through the in-chain fallback when it
//! is not — still writes an ordinary user, and `permissions check` lists them.

use writeback_agent::directory::{ProtectedBy, ResetOptions};
use writeback_agent::permissions;
use writeback_testkit::SambaDc;

use crate::permissions::{SVC_PASSWORD, agent_cli, write_config};
use crate::{admin_config, config_as, directory, protected_by, pw, show_attr, start_dc, upn};

const OLD: &str = "Start-Passw0rd!";
const GET_CHANGES: &str = "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2";
const GET_CHANGES_ALL: &str = "1131f6ad-9c07-11d1-f79f-00c04fc2dcd2";
const GET_CHANGES_IN_FILTERED_SET: &str = "89e95b76-444d-4c62-991a-0facbeda640c";
/// schemaIDGUID of `tokenGroups`.
const TOKEN_GROUPS: &str = "b7c69e6d-2cc7-11d2-854e-00a0c983f608";

async fn samba(dc: &SambaDc, args: &[&str]) {
    dc.samba_tool(args).await.unwrap();
}

/// Add `sddl` (one ACE) to the DACL of `dn`.
async fn add_ace(dc: &SambaDc, dn: &str, sddl: &str) {
    samba(
        dc,
        &[
            "dsacl",
            "set",
            &format!("--objectdn={dn}"),
            &format!("--sddl={sddl}"),
        ],
    )
    .await;
}

async fn group_sid(dc: &SambaDc, name: &str) -> String {
    let out = dc
        .samba_tool(&["group", "show", name, "--attributes=objectSid"])
        .await
        .unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("objectSid: "))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_accounts_beyond_the_protected_groups_are_refused_and_reported() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(&dc, tmp.path());
    let svc_dn = dc.create_user("svc-writeback", SVC_PASSWORD).await.unwrap();
    let admin = directory(admin_config(&dc));
    let granted = permissions::grant(&admin, "svc-writeback@contoso.test")
        .await
        .unwrap();
    assert!(granted.report.rights_ok(), "{}", granted.render());
    let mut dns = std::collections::HashMap::new();
    for sam in [
        "plain", "sync", "filtered", "carol", "dina", "gpo", "pki", "agent2", "helper",
    ] {
        dns.insert(sam, dc.create_user(sam, OLD).await.unwrap());
    }

    // sync: DCSync granted to the account itself, as to a sync service.
    let sid = show_attr(&dc, "sync", "objectSid").await;
    for right in [GET_CHANGES, GET_CHANGES_ALL] {
        add_ace(&dc, &base, &format!("(OA;;CR;{right};;{sid})")).await;
    }
    let sid = show_attr(&dc, "filtered", "objectSid").await;
    add_ace(
        &dc,
        &base,
        &format!("(OA;;CR;{GET_CHANGES_IN_FILTERED_SET};;{sid})"),
    )
    .await;
    // carol: through Sync Operators, nested in Sync Services, which holds it.
    samba(&dc, &["group", "add", "Sync Services"]).await;
    samba(&dc, &["group", "add", "Sync Operators"]).await;
    samba(
        &dc,
        &["group", "addmembers", "Sync Services", "Sync Operators"],
    )
    .await;
    samba(&dc, &["group", "addmembers", "Sync Operators", "carol"]).await;
    let sid = group_sid(&dc, "Sync Services").await;
    add_ace(&dc, &base, &format!("(OA;;CR;{GET_CHANGES_ALL};;{sid})")).await;
    // dina: DnsAdmins, which has no well-known RID. The test DC is provisioned
    // without DNS (`--dns-backend=NONE`), so create it as DNS provisioning does: a
    // domain-local security group of that name in CN=Users.
    samba(
        &dc,
        &[
            "group",
            "add",
            "DnsAdmins",
            "--group-scope=Domain",
            "--group-type=Security",
        ],
    )
    .await;
    samba(&dc, &["group", "addmembers", "DnsAdmins", "dina"]).await;
    // gpo: Group Policy Creator Owners (RID 520).
    samba(
        &dc,
        &["group", "addmembers", "Group Policy Creator Owners", "gpo"],
    )
    .await;
    // pki: through PKI Ops, nested in Cert Publishers (RID 517).
    samba(&dc, &["group", "add", "PKI Ops"]).await;
    samba(&dc, &["group", "addmembers", "PKI Ops", "pki"]).await;
    samba(&dc, &["group", "addmembers", "Cert Publishers", "PKI Ops"]).await;
    // agent2: another agent's service account, granted the same way.
    permissions::grant(&admin, "agent2@contoso.test")
        .await
        .unwrap();
    // helper: may rewrite the permissions of this agent's service account.
    let sid = show_attr(&dc, "helper", "objectSid").await;
    add_ace(&dc, &svc_dn, &format!("(A;;WD;;;{sid})")).await;

    let cases = [
        ("sync", ProtectedBy::Replication),
        ("filtered", ProtectedBy::Replication),
        ("carol", ProtectedBy::Replication),
        ("dina", ProtectedBy::Group("DnsAdmins")),
        ("gpo", ProtectedBy::Group("Group Policy Creator Owners")),
        ("pki", ProtectedBy::Group("Cert Publishers")),
        ("agent2", ProtectedBy::PasswordResetter),
        ("helper", ProtectedBy::ServiceAccountWriter),
    ];
    let svc = || directory(config_as(&dc, "svc-writeback@contoso.test", SVC_PASSWORD));
    let reset = ResetOptions::default();
    let check = |label: &'static str| {
        let d = svc();
        let cases = cases.clone();
        let dc = &dc;
        async move {
            for (sam, why) in cases {
                let target = upn(dc, sam);
                let e = d
                    .reset_password(&target, &pw("Chosen-Passw0rd-1"), reset)
                    .await;
                assert_eq!(protected_by(e), why, "{label}: {sam}");
                assert_eq!(protected_by(d.unlock(&target).await), why, "{label}: {sam}");
                let who = format!("{sam}@{}", dc.domain());
                assert!(
                    dc.try_bind(&who, OLD).await.unwrap(),
                    "{label}: {sam} unchanged"
                );
            }
        }
    };
    check("tokenGroups").await;
    // An ordinary user is still written back.
    let d = svc();
    d.reset_password(&upn(&dc, "plain"), &pw("Plain-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(
        dc.try_bind("plain@contoso.test", "Plain-Passw0rd-1")
            .await
            .unwrap()
    );

    // The permission check lists them, with the groups' members however nested.
    let report = permissions::check(&d, true).await.unwrap();
    let privileged = report.privileged.as_deref().unwrap();
    assert!(report.rights_ok(), "{}", report.render());
    let listed = |name: &str| {
        privileged
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", report.render()))
    };
    assert_eq!(listed(&dns["sync"]).by, ProtectedBy::Replication);
    assert_eq!(listed(&dns["filtered"]).by, ProtectedBy::Replication);
    assert_eq!(listed(&dns["agent2"]).by, ProtectedBy::PasswordResetter);
    assert_eq!(listed(&dns["helper"]).by, ProtectedBy::ServiceAccountWriter);
    let sync_services = listed(&format!("CN=Sync Services,CN=Users,{base}"));
    assert!(sync_services.group);
    assert_eq!(sync_services.by, ProtectedBy::Replication);
    assert_eq!(sync_services.members, vec![dns["carol"].clone()]);
    let dns_admins = listed(&format!("CN=DnsAdmins,CN=Users,{base}"));
    assert_eq!(dns_admins.members, vec![dns["dina"].clone()]);
    let cert_publishers = listed(&format!("CN=Cert Publishers,CN=Users,{base}"));
    assert_eq!(cert_publishers.members, vec![dns["pki"].clone()]);
    let gpco = listed(&format!("CN=Group Policy Creator Owners,CN=Users,{base}"));
    assert!(gpco.members.contains(&dns["gpo"]), "{gpco:?}");
    assert!(
        !privileged.iter().any(|p| p.name == dns["plain"]
            || p.members.contains(&dns["plain"])
            || p.name.eq_ignore_ascii_case(&svc_dn)),
        "{}",
        report.render()
    );
    // The command prints them and still passes.
    let out = agent_cli(&config, &["permissions", "check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("privileged accounts, never written back"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  {}: holds a replication right on the domain",
            dns["sync"]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("    {}", dns["carol"])),
        "{stdout}"
    );

    // tokenGroups unreadable to the service account: the in-chain fallback finds
    // the same accounts (their own SIDs directly, the groups in chain).
    let svc_sid = show_attr(&dc, "svc-writeback", "objectSid").await;
    add_ace(&dc, &base, &format!("(OD;CI;RP;{TOKEN_GROUPS};;{svc_sid})")).await;
    check("in chain").await;
    svc()
        .reset_password(&upn(&dc, "plain"), &pw("Plain-Passw0rd-2"), reset)
        .await
        .unwrap();
    assert!(
        dc.try_bind("plain@contoso.test", "Plain-Passw0rd-2")
            .await
            .unwrap()
    );
}
