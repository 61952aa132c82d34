//! Better passwords before they reach the directory, against a real Samba DC
//! with fine-grained password policies (PSOs) on groups: each user's
//! effective policy as writeback reports it is what Samba then enforces on
//! a real reset; `ValidatePassword`'s verdict agrees with the DC's own on a
//! table of candidates (both are run and compared); the minimum age of a
//! change; banned passwords refused before dispatch.

use ldap3::Mod;
use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::{Client, Stack};

const START: &str = "Qx7-Start-Vk29!";

/// (user, group, effective source, min length, complexity)
const USERS: [(&str, Option<&str>, &str, u32, bool); 4] = [
    ("plain", None, "domain", 10, true),
    ("shorty", Some("pso-short-members"), "pso-short", 8, false),
    ("longy", Some("pso-long-members"), "pso-long", 14, true),
    ("aged", Some("pso-aged-members"), "pso-aged", 10, true),
];

struct World {
    dc: SambaDc,
    stack: Stack,
    admin: Client,
}

async fn samba(dc: &SambaDc, args: &[&str]) {
    dc.samba_tool(args)
        .await
        .unwrap_or_else(|e| panic!("samba-tool {args:?}: {e}"));
}

/// contoso.test: default policy min 10, complexity on; PSOs on groups:
/// pso-short (precedence 10: min 8, complexity off), pso-long (20: min 14),
/// pso-aged (30: min 10, minimum age 1 day). (Lengths of 8 and more keep the
/// candidates clear of the banned-password score, which refuses anything
/// under 5 characters.) `both` is in the short and long groups:
/// the lower precedence (short) wins.
async fn world() -> World {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.set_password_settings(&[
        "--complexity=on",
        "--min-pwd-length=10",
        "--min-pwd-age=0",
        "--history-length=0",
    ])
    .await
    .unwrap();
    for (group, precedence, extra) in [
        (
            "pso-short",
            "10",
            ["--min-pwd-length=8", "--complexity=off", "--min-pwd-age=0"],
        ),
        (
            "pso-long",
            "20",
            ["--min-pwd-length=14", "--complexity=on", "--min-pwd-age=0"],
        ),
        (
            "pso-aged",
            "30",
            ["--min-pwd-length=10", "--complexity=on", "--min-pwd-age=1"],
        ),
    ] {
        let members = format!("{group}-members");
        samba(&dc, &["group", "add", &members]).await;
        let mut args = vec![
            "domain",
            "passwordsettings",
            "pso",
            "create",
            group,
            precedence,
        ];
        args.extend(extra);
        args.push("--history-length=0");
        samba(&dc, &args).await;
        samba(
            &dc,
            &[
                "domain",
                "passwordsettings",
                "pso",
                "apply",
                group,
                &members,
            ],
        )
        .await;
    }
    for (user, group, ..) in USERS {
        dc.create_user(user, START).await.unwrap();
        if let Some(g) = group {
            samba(&dc, &["group", "addmembers", g, user]).await;
        }
    }
    dc.create_user("both", START).await.unwrap();
    samba(&dc, &["group", "addmembers", "pso-short-members", "both"]).await;
    samba(&dc, &["group", "addmembers", "pso-long-members", "both"]).await;
    // Many resets of one user: no throttle here.
    let mut stack = Stack::start_configured("t1", 1, None, |c| c.throttle_per_user_per_hour = 0)
        .await
        .unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
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
    World { dc, stack, admin }
}

fn upn(user: &str) -> pb::UserRef {
    pb::UserRef {
        by: Some(pb::user_ref::By::Upn(format!("{user}@contoso.test"))),
    }
}

async fn policy(c: &Client, user: &str) -> pb::PasswordPolicy {
    c.password_quality()
        .get_password_policy(c.request(pb::GetPasswordPolicyRequest {
            user: Some(upn(user)),
            domain: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
        .effective
        .unwrap()
}

async fn validate(
    c: &Client,
    user: &str,
    password: &str,
    change: bool,
) -> pb::ValidatePasswordResponse {
    c.password_quality()
        .validate_password(c.request(pb::ValidatePasswordRequest {
            user: Some(upn(user)),
            password: password.into(),
            change,
            domain: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// A reset through writeback: Ok, or the reason code.
async fn reset(c: &Client, user: &str, password: &str) -> Result<(), ReasonCode> {
    c.passwords()
        .reset_password(c.request(pb::ResetPasswordRequest {
            user: Some(upn(user)),
            new_password: password.into(),
            ..Default::default()
        }))
        .await
        .map(|_| ())
        .map_err(|s| failure_of(&s).reason)
}

fn codes(v: &pb::ValidatePasswordResponse) -> Vec<&str> {
    v.problems.iter().map(|p| p.reason_code.as_str()).collect()
}

/// A password of exactly `n` characters of mixed categories, built on no
/// dictionary word.
fn complex_of(n: usize) -> String {
    "Zq7#Wv3$Kx9!Jm4%Pb8&Rt2".chars().take(n).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn effective_policies_are_what_samba_enforces() {
    let w = world().await;
    let c = &w.admin;
    for (user, _, source, min, complexity) in USERS {
        let p = policy(c, user).await;
        assert_eq!(
            (p.source.as_str(), p.min_length, p.complexity),
            (source, min, complexity),
            "{user}"
        );
        // One character short is refused by the DC, exactly the minimum is
        // accepted; both are predicted by ValidatePassword.
        let short = complex_of(min as usize - 1);
        assert!(codes(&validate(c, user, &short, false).await).contains(&"PASSWORD_TOO_SHORT"));
        assert_eq!(
            reset(c, user, &short).await,
            Err(ReasonCode::PasswordTooShort),
            "{user}"
        );
        let exact = complex_of(min as usize);
        assert!(validate(c, user, &exact, false).await.ok, "{user}");
        assert_eq!(reset(c, user, &exact).await, Ok(()), "{user}");
        assert!(
            w.dc.try_bind(&format!("{user}@contoso.test"), &exact)
                .await
                .unwrap()
        );
        // Complexity: lower-case letters only.
        let simple: String = "qzvkxmbrtwplnhgf"
            .chars()
            .take(min.max(7) as usize)
            .collect();
        let predicted = validate(c, user, &simple, false).await;
        let applied = reset(c, user, &simple).await;
        if complexity {
            assert!(codes(&predicted).contains(&"PASSWORD_COMPLEXITY"), "{user}");
            assert_eq!(applied, Err(ReasonCode::PasswordComplexity), "{user}");
        } else {
            assert!(predicted.ok, "{user}: {predicted:?}");
            assert_eq!(applied, Ok(()), "{user}");
        }
    }
    // In two groups, the lower precedence wins.
    let both = policy(c, "both").await;
    assert_eq!((both.source.as_str(), both.min_length), ("pso-short", 8));
    assert_eq!(reset(c, "both", &complex_of(8)).await, Ok(()));

    // The domain's policies, for an administrator.
    let domain = c
        .password_quality()
        .get_password_policy(c.request(pb::GetPasswordPolicyRequest {
            user: None,
            domain: "contoso.test".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert!(domain.fine_grained_readable);
    assert_eq!(domain.domain_default.unwrap().min_length, 10);
    let names: Vec<(&str, u32, &[String])> = domain
        .fine_grained
        .iter()
        .map(|p| (p.source.as_str(), p.precedence, p.applies_to.as_slice()))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!((names[0].0, names[0].1), ("pso-short", 10));
    assert_eq!(names[0].2, ["pso-short-members".to_owned()]);

    // An end user reads their own policy, not someone else's.
    let alice = w
        .stack
        .client("plain@contoso.test", Role::User, ClientApp::Portal)
        .await
        .unwrap();
    assert_eq!(policy(&alice, "plain").await.min_length, 10);
    let err = alice
        .password_quality()
        .get_password_policy(alice.request(pb::GetPasswordPolicyRequest {
            user: Some(upn("longy")),
            domain: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(failure_of(&err).reason, ReasonCode::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_password_agrees_with_the_dc_and_banned_passwords_never_leave() {
    let w = world().await;
    let c = &w.admin;
    // A display name with tokens the complexity rule looks for.
    let mut ldap = w.dc.ldap_admin().await.unwrap();
    let dn = format!("CN=plain,CN=Users,{}", w.dc.base_dn());
    ldap.modify(
        &dn,
        vec![Mod::Replace(
            "displayName",
            ["Margaret Ovidia-Thistle"].into(),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let candidates = [
        "Zq7#Wv3$Kx",         // four categories
        "zq7wv3kxmb",         // two categories
        "ZQ7WV3KXMB",         // two categories
        "Zq7Wv3KxMb",         // three: upper, lower, digit
        "zq#wv$kx!m",         // two: lower, symbol
        "ZQ#wv$kx!m",         // three: upper, lower, symbol
        "Zq7#plainVk",        // the account name
        "Zq7#PLAINVk",        // the account name, other case
        "Zq7#MargaretV",      // a display-name token
        "Zq7#thistle9",       // a display-name token after a hyphen
        "Zq7#OvidiaK",        // a display-name token before a hyphen
        "Zq7#Ma9xKvTw",       // "Ma" only: too short a token
        "Zqéß7#Wv3Kx",        // non-ASCII letters plus four categories
        "éàüöäßçñ77",         // non-ASCII lower-case letters and digits
        "ÉÀÜÖÄ#çñ7ü",         // non-ASCII both cases
        "日本語パスワード7#", // letters without case, digit, symbol
        "Zq7#Wv",             // too short
    ];
    let mut table = Vec::new();
    for candidate in candidates {
        let predicted = validate(c, "plain", candidate, false).await;
        assert!(
            !codes(&predicted).contains(&"PASSWORD_BANNED"),
            "{candidate} is not meant to be banned: {predicted:?}"
        );
        let dc_accepts = reset(c, "plain", candidate).await;
        table.push((
            candidate,
            predicted.ok,
            dc_accepts,
            codes(&predicted).join(","),
        ));
    }
    let disagreements: Vec<_> = table
        .iter()
        .filter(|(_, predicted, dc, _)| *predicted != dc.is_ok())
        .collect();
    assert!(
        disagreements.is_empty(),
        "ValidatePassword and the DC disagree: {disagreements:#?}\nwhole table: {table:#?}"
    );
    assert!(table.iter().any(|(_, ok, ..)| *ok) && table.iter().any(|(_, ok, ..)| !*ok));

    // Banned: refused before dispatch, the directory unchanged.
    let last_good = table
        .iter()
        .rev()
        .find(|(_, ok, ..)| *ok)
        .map(|(p, ..)| *p)
        .unwrap();
    for banned in ["P@ssw0rd1!", "Welcome1!x"] {
        let v = validate(c, "plain", banned, false).await;
        assert!(codes(&v).contains(&"PASSWORD_BANNED"), "{banned}: {v:?}");
        assert!(!v.problems.iter().any(|p| p.message.contains(banned)));
        assert_eq!(
            reset(c, "plain", banned).await,
            Err(ReasonCode::PasswordBanned)
        );
    }
    assert!(
        w.dc.try_bind("plain@contoso.test", last_good)
            .await
            .unwrap()
    );

    // The same through writebackctl: every failing rule, exit status 1; the
    // effective policy in plain words.
    let global = w.stack.admin().unwrap();
    let printed = crate::oidc::ctl(
        &w.stack,
        None,
        &["password", "check", "--user", "plain@contoso.test"],
        "password\n",
    )
    .await;
    match printed {
        Err(writeback_cli::CliError::Refused(f)) => {
            assert_eq!(f.reason, ReasonCode::PasswordTooShort);
            assert!(f.message.contains("fails 3 rule(s)"), "{}", f.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let printed = crate::oidc::ctl(
        &w.stack,
        None,
        &["password", "policy", "--user", "longy@contoso.test"],
        "",
    )
    .await
    .unwrap();
    assert!(printed.contains("effective policy: pso-long"), "{printed}");
    assert!(printed.contains("minimum length:    14"), "{printed}");

    // The tenant's own terms.
    let set = global
        .password_quality()
        .set_banned_passwords(global.request(pb::SetBannedPasswordsRequest {
            terms: vec!["Contoso".into(), " fabrikam ".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.terms, ["contoso", "fabrikam"]);
    assert!(set.builtin_terms > 100);
    assert_eq!(
        reset(c, "plain", "C0ntoso#24").await,
        Err(ReasonCode::PasswordBanned)
    );
    assert_eq!(reset(c, "plain", "Contoso#Blue-Heron-Lake").await, Ok(()));

    // The minimum age of a change: predicted with the time, enforced by the DC.
    assert_eq!(reset(c, "aged", "Zq7#Wv3$Kx-old1").await, Ok(()));
    let v = validate(c, "aged", "Zq7#Wv3$Kx-new2", true).await;
    assert_eq!(codes(&v), ["PASSWORD_MIN_AGE"], "{v:?}");
    let next = v.next_change_allowed_at.unwrap().seconds;
    let in_a_day = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
    assert!((next - in_a_day).abs() < 120, "next change at {next}");
    assert!(
        validate(c, "aged", "Zq7#Wv3$Kx-new2", false).await.ok,
        "a reset has no minimum age"
    );
    let aged = w
        .stack
        .client("aged@contoso.test", Role::User, ClientApp::Portal)
        .await
        .unwrap();
    let err = aged
        .passwords()
        .change_password(aged.request(pb::ChangePasswordRequest {
            user: Some(upn("aged")),
            old_password: "Zq7#Wv3$Kx-old1".into(),
            new_password: "Zq7#Wv3$Kx-new2".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(failure_of(&err).reason, ReasonCode::PasswordTooYoung);
    assert_eq!(v.unchecked, ["history"]);
}
