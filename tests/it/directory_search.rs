//! The help desk's "find a user" end to end: `DirectoryService.SearchUsers`
//! through the control plane, a relay and an agent scoped to one OU, to a
//! real Samba DC. Prefixes of display names, surnames and UPNs find users of
//! the scope only (an OU, then an OU and a group); protected, deny-group and
//! disabled accounts are listed as not eligible with the reason; a locked-out account says so; the limit holds
//! and says "more"; filter syntax in the query is only text; end users are
//! refused; `writebackctl user search` prints the same.

use std::collections::HashSet;

use clap::Parser;
use ldap3::Mod;
use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::{Client, Stack};

const PASSWORD: &str = "Qx7-Start-Vk29!";
/// More than the largest page, so the default limit is exercised.
const BULK: usize = 27;

struct World {
    dc: SambaDc,
    stack: Stack,
    admin: Client,
    staff: String,
}

async fn world() -> World {
    writeback_identity::install_crypto_provider();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.set_password_settings(&["--account-lockout-threshold=3"])
        .await
        .unwrap();
    let staff = dc.create_ou("Staff").await.unwrap();
    for (sam, display, given, sn) in [
        ("asmith", "Alison Smith", "Alison", "Smith"),
        ("aladmin", "Alistair Admin", "Alistair", "Admin"),
        ("alidis", "Alice Disabled", "Alice", "Disabled"),
        ("jdoe", "Jane Doe", "Jane", "Doe"),
    ] {
        let dn = dc.create_user_in(&staff, sam, PASSWORD).await.unwrap();
        dc.set_names(&dn, display, given, sn).await.unwrap();
    }
    // Out of the agent's scope: CN=Users.
    let outside = dc.create_user("alien", PASSWORD).await.unwrap();
    dc.set_names(&outside, "Alison Outside", "Alison", "Outside")
        .await
        .unwrap();
    for i in 1..=BULK {
        let sam = format!("bulk{i:02}");
        let dn = dc.create_user_in(&staff, &sam, PASSWORD).await.unwrap();
        dc.set_names(&dn, &format!("Bulk User {i:02}"), "Bulk", "User")
            .await
            .unwrap();
    }
    // A protected account in scope, and a disabled one.
    dc.samba_tool(&["group", "addmembers", "Domain Admins", "aladmin"])
        .await
        .unwrap();
    let mut ldap = dc.ldap_admin().await.unwrap();
    ldap.modify(
        &format!("CN=alidis,{staff}"),
        vec![Mod::Replace("userAccountControl", HashSet::from(["514"]))],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let _ = ldap.unbind().await;

    let mut stack = Stack::start("t1", 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent_configured(&dc, &dc.admin_dn(), dc.admin_password(), |c| {
            c.scope_base_dns = vec![staff.clone()];
        })
        .await
        .unwrap();
    let admin = stack
        .client(
            "helpdesk@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await
        .unwrap();
    World {
        dc,
        stack,
        admin,
        staff,
    }
}

async fn search(
    c: &Client,
    query: &str,
    domain: &str,
    limit: u32,
) -> Result<pb::SearchUsersResponse, tonic::Status> {
    c.directory()
        .search_users(c.request(pb::SearchUsersRequest {
            query: query.into(),
            domain: domain.into(),
            limit,
        }))
        .await
        .map(tonic::Response::into_inner)
}

fn upns(r: &pb::SearchUsersResponse) -> Vec<&str> {
    r.users.iter().map(|u| u.upn.as_str()).collect()
}

fn user<'a>(r: &'a pb::SearchUsersResponse, upn: &str) -> &'a pb::DirectoryUser {
    r.users
        .iter()
        .find(|u| u.upn == upn)
        .unwrap_or_else(|| panic!("{upn} not in {r:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_help_desk_finds_users_of_the_scope_by_the_start_of_a_name() {
    let mut w = world().await;
    let c = &w.admin.clone();

    // A display-name prefix: three users of the scope, sorted by name; the
    // one outside the scope is not there.
    let r = search(c, "Ali", "contoso.test", 0).await.unwrap();
    assert_eq!(
        upns(&r),
        [
            "alidis@contoso.test",
            "asmith@contoso.test",
            "aladmin@contoso.test"
        ],
        "{r:?}"
    );
    assert!(!r.truncated);
    let alison = user(&r, "asmith@contoso.test");
    assert_eq!(alison.display_name, "Alison Smith");
    assert_eq!(alison.domain, "contoso.test");
    assert!(alison.enabled && !alison.locked_out && alison.eligible);
    assert!(uuid::Uuid::parse_str(&alison.object_guid).is_ok());
    let admin = user(&r, "aladmin@contoso.test");
    assert!(!admin.eligible);
    assert_eq!(admin.ineligible_reason, "PROTECTED_ACCOUNT");
    assert!(
        admin.ineligible_message.contains("Domain Admins"),
        "{admin:?}"
    );
    assert!(
        !admin.ineligible_message.contains("DC="),
        "no DN: {admin:?}"
    );
    let disabled = user(&r, "alidis@contoso.test");
    assert!(!disabled.enabled && !disabled.eligible);
    assert_eq!(disabled.ineligible_reason, "ACCOUNT_DISABLED");

    // A surname, a UPN prefix, an account name; case does not matter.
    for (query, expected) in [
        ("smi", "asmith@contoso.test"),
        ("jdoe@contoso", "jdoe@contoso.test"),
        ("JDO", "jdoe@contoso.test"),
        ("Jane D", "jdoe@contoso.test"),
    ] {
        let r = search(c, query, "contoso.test", 0).await.unwrap();
        assert_eq!(upns(&r), [expected], "{query}: {r:?}");
    }
    // Out of scope is never found, however it is asked for.
    let r = search(c, "alien", "", 0).await.unwrap();
    assert!(r.users.is_empty(), "{r:?}");

    // Filter syntax is text: no user's name starts with it.
    for query in ["**", "*)(objectClass=*", "a*", "\\2a", "Ali)"] {
        let r = search(c, query, "contoso.test", 0).await.unwrap();
        assert!(r.users.is_empty(), "{query}: {r:?}");
    }

    // The limit holds, and says there is more.
    let r = search(c, "bulk", "contoso.test", 5).await.unwrap();
    assert_eq!(r.users.len(), 5, "{r:?}");
    assert!(r.truncated);
    assert_eq!(r.users[0].display_name, "Bulk User 01");
    let r = search(c, "Bulk U", "", 0).await.unwrap();
    assert_eq!(r.users.len(), 25, "the default and largest page");
    assert!(r.truncated);
    let r = search(c, "bulk", "contoso.test", 1000).await.unwrap();
    assert_eq!(r.users.len(), 25, "clamped");
    let r = search(c, "bulk0", "contoso.test", 9).await.unwrap();
    assert_eq!(r.users.len(), 9);
    assert!(!r.truncated, "exactly nine match: {r:?}");

    // A locked-out account says so.
    for _ in 0..4 {
        let _ = w.dc.try_bind("jdoe@contoso.test", "Wrong-Passw0rd!").await;
    }
    let r = search(c, "jdoe", "contoso.test", 0).await.unwrap();
    assert!(r.users[0].locked_out, "{r:?}");
    assert!(r.users[0].eligible);

    // Refusals, each with its reason.
    for (query, domain, reason) in [
        ("a", "contoso.test", ReasonCode::QueryTooShort),
        (" * ", "", ReasonCode::QueryTooShort),
        ("al\0x", "contoso.test", ReasonCode::InvalidArgument),
        ("al", "elsewhere.test", ReasonCode::DomainNotFound),
    ] {
        let e = search(c, query, domain, 0).await.unwrap_err();
        assert_eq!(failure_of(&e).reason, reason, "{query:?}: {e:?}");
    }
    let end_user = w
        .stack
        .client("asmith@contoso.test", Role::User, ClientApp::Portal)
        .await
        .unwrap();
    let e = search(&end_user, "Ali", "contoso.test", 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(failure_of(&e).reason, ReasonCode::PermissionDenied);
    assert!(e.message().contains("administrator"), "{e:?}");

    // A domain with no agent: searching it alone fails with the reason;
    // searching every domain answers with the others and names it.
    w.stack.register_domain("fabrikam.test").await.unwrap();
    let e = search(c, "Ali", "fabrikam.test", 0).await.unwrap_err();
    assert_eq!(failure_of(&e).reason, ReasonCode::NoAgentOnline, "{e:?}");
    let r = search(c, "Ali", "", 0).await.unwrap();
    assert_eq!(r.users.len(), 3, "{r:?}");
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert_eq!(r.problems[0].domain, "fabrikam.test");
    assert_eq!(r.problems[0].reason_code, "NO_AGENT_ONLINE");

    // An agent scoped to a group too, with a deny group: only the group's
    // members are found, and the deny group's member is listed as not
    // eligible with the reason.
    for (group, members) in [
        ("Writeback-Scope", ["asmith", "aladmin", "jdoe"].as_slice()),
        ("No-Writeback", ["jdoe"].as_slice()),
    ] {
        w.dc.samba_tool(&["group", "add", group]).await.unwrap();
        let mut args = vec!["group", "addmembers", group];
        let list = members.join(",");
        args.push(&list);
        w.dc.samba_tool(&args).await.unwrap();
    }
    let users = format!("CN=Users,{}", w.dc.base_dn());
    w.stack.stop_agent(0).await;
    let staff = w.staff.clone();
    w.stack
        .start_agent_configured(&w.dc, &w.dc.admin_dn(), w.dc.admin_password(), |cfg| {
            cfg.scope_base_dns = vec![staff];
            cfg.scope_group_dn = Some(format!("CN=Writeback-Scope,{users}"));
            cfg.deny_group_dns = vec![format!("CN=No-Writeback,{users}")];
        })
        .await
        .unwrap();
    let r = search(c, "Ali", "contoso.test", 0).await.unwrap();
    assert_eq!(
        upns(&r),
        ["asmith@contoso.test", "aladmin@contoso.test"],
        "the group's members only: {r:?}"
    );
    let r = search(c, "jdo", "contoso.test", 0).await.unwrap();
    assert_eq!(upns(&r), ["jdoe@contoso.test"], "{r:?}");
    assert!(!r.users[0].eligible);
    assert_eq!(r.users[0].ineligible_reason, "PROTECTED_ACCOUNT");
    assert!(
        r.users[0].ineligible_message.contains("deny group"),
        "{r:?}"
    );
    assert!(
        search(c, "bulk", "contoso.test", 0)
            .await
            .unwrap()
            .users
            .is_empty()
    );

    // writebackctl.
    let ca_file = w.stack.dir.path().join("cp").join("ca.pem");
    let cli = writeback_cli::Cli::parse_from([
        "writebackctl",
        "--control-plane",
        &w.stack.cp_url,
        "--ca-file",
        &ca_file.display().to_string(),
        "--token-file",
        &w.stack.admin_token_file.display().to_string(),
        "user",
        "search",
        "Alis",
        "--domain",
        "contoso.test",
    ]);
    let mut out = Vec::new();
    writeback_cli::run(cli, &mut std::io::Cursor::new(Vec::new()), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(
        lines[0].starts_with("asmith@contoso.test\tAlison Smith\t"),
        "{printed}"
    );
    assert!(lines[0].ends_with("\tenabled\teligible"), "{printed}");
    assert!(
        lines[1].starts_with("aladmin@contoso.test\tAlistair Admin\t")
            && lines[1].contains("not eligible: PROTECTED_ACCOUNT"),
        "{printed}"
    );
}
