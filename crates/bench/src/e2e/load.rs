//! The two clients that write the same resets: straight to the DC over LDAPS, and
//! through writeback's public gRPC API. Both run a closed loop of `workers`
//! concurrent resets over the domain's users in turn, each with a new password,
//! and keep only the resets that finish inside the measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, ldap_escape};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use writeback_identity::{tls, transport};
use writeback_proto::v1 as pb;

use writeback_testkit::unicode_pwd;

use crate::stack::Domain;

/// When to measure: after `warmup`, for `window`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub window: Duration,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Sample {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub window: Duration,
}

impl Sample {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies, milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return f64::NAN;
        }
        let at = ((l.len() - 1) as f64 * q).round() as usize;
        l[at.min(l.len() - 1)].as_secs_f64() * 1000.0
    }

    fn merge(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Passwords never repeat within a run (and pass the default complexity rule).
static PASSWORDS: AtomicUsize = AtomicUsize::new(0);

fn next_password() -> String {
    format!("Bench-{:08}-Pw!", PASSWORDS.fetch_add(1, Ordering::Relaxed))
}

/// The measured interval, the same for every worker of a run (so no worker runs
/// alone, and faster, at either end).
#[derive(Debug, Clone, Copy)]
struct Schedule {
    measure_from: Instant,
    end: Instant,
    window: Duration,
}

impl Window {
    /// Starting now: warm up, then measure.
    fn schedule(self) -> Schedule {
        let measure_from = Instant::now() + self.warmup;
        Schedule {
            measure_from,
            end: measure_from + self.window,
            window: self.window,
        }
    }
}

/// One closed-loop worker: `op(user index)` back to back until the window ends;
/// only resets that start and finish inside it count.
async fn worker<F, Fut>(next: Arc<AtomicUsize>, users: usize, w: Schedule, mut op: F) -> Sample
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let Schedule {
        measure_from, end, ..
    } = w;
    let mut sample = Sample {
        window: w.window,
        ..Sample::default()
    };
    while Instant::now() < end {
        let user = next.fetch_add(1, Ordering::Relaxed) % users;
        let began = Instant::now();
        let result = op(user).await;
        let done = Instant::now();
        if began < measure_from || done > end {
            continue;
        }
        match result {
            Ok(()) => sample.latencies.push(done - began),
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    sample
}

async fn gather(
    handles: Vec<tokio::task::JoinHandle<Sample>>,
    w: Schedule,
) -> anyhow::Result<Sample> {
    let mut total = Sample {
        window: w.window,
        ..Sample::default()
    };
    for h in handles {
        total.merge(h.await?);
    }
    Ok(total)
}

/// Resets written straight to the DC: each worker keeps one connection bound as
/// the agents' service account and, per reset, looks the user up by UPN and
/// replaces `unicodePwd` — the two requests any LDAP client needs.
pub async fn raw(
    domain: &Domain,
    svc_password: &str,
    workers: usize,
    w: Window,
) -> anyhow::Result<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let upns: Arc<Vec<String>> = Arc::new(domain.users.iter().map(|(u, _)| u.clone()).collect());
    let base = domain.dc.base_dn();
    // Every connection is up and bound before anyone starts.
    let mut connections = Vec::with_capacity(workers);
    for _ in 0..workers {
        let settings = LdapConnSettings::new().set_config(domain.dc.tls_config());
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(settings, &domain.dc.ldaps_url()).await?;
        ldap3::drive!(conn);
        ldap.simple_bind(&domain.svc_upn, svc_password)
            .await?
            .success()
            .context("the raw client's bind")?;
        connections.push(ldap);
    }
    let w = w.schedule();
    let mut handles = Vec::new();
    for ldap in connections {
        let (next, upns, base) = (Arc::clone(&next), Arc::clone(&upns), base.clone());
        handles.push(tokio::spawn(async move {
            let count = upns.len();
            worker(next, count, w, move |i| {
                let mut ldap = ldap.clone();
                let upn = upns[i].clone();
                let base = base.clone();
                async move {
                    let filter = format!("(userPrincipalName={})", ldap_escape(upn.as_str()));
                    let (found, _) = ldap
                        .search(&base, Scope::Subtree, &filter, vec!["1.1"])
                        .await?
                        .success()?;
                    let dn = ldap3::SearchEntry::construct(
                        found.into_iter().next().context("user not found")?,
                    )
                    .dn;
                    let pwd = unicode_pwd(&next_password());
                    ldap.modify(
                        &dn,
                        vec![Mod::Replace(
                            b"unicodePwd".as_slice(),
                            [pwd.as_slice()].into(),
                        )],
                    )
                    .await?
                    .success()?;
                    Ok(())
                }
            })
            .await
        }));
    }
    gather(handles, w).await
}

/// A bearer-authenticated channel to the control plane's API.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl Api {
    pub fn connect(
        url: &str,
        ca_file: &std::path::Path,
        token_file: &std::path::Path,
    ) -> anyhow::Result<Api> {
        let ca = std::fs::read_to_string(ca_file)?;
        let token = std::fs::read_to_string(token_file)?;
        let mut header = MetadataValue::try_from(format!("Bearer {}", token.trim()))?;
        header.set_sensitive(true);
        let config = tls::client_config(tls::roots_from_pem(&ca)?, None)?;
        Ok(Api {
            channel: transport::channel(url, config)?,
            header,
        })
    }

    async fn reset(&self, upn: &str, password: String) -> anyhow::Result<()> {
        self.reset_expecting(upn, password, "OK").await
    }

    async fn reset_expecting(
        &self,
        upn: &str,
        password: String,
        reason: &str,
    ) -> anyhow::Result<()> {
        let mut req = tonic::Request::new(pb::ResetPasswordRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn(upn.to_owned())),
            }),
            new_password: password,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        let answer = pb::password_service_client::PasswordServiceClient::new(self.channel.clone())
            .reset_password(req)
            .await;
        // A refusal arrives as a gRPC status whose details name the reason.
        let got = match answer {
            Ok(r) => r.into_inner().outcome.unwrap_or_default().reason_code,
            Err(s) if reason == "USER_NOT_FOUND" && s.code() == tonic::Code::NotFound => {
                reason.to_owned()
            }
            Err(s) => bail!("{:?}: {}", s.code(), s.message()),
        };
        if got != reason {
            bail!("expected {reason}, got {got}");
        }
        Ok(())
    }
}

/// The same resets through writeback: the control plane's `ResetPassword`, as the
/// global administrator, over one HTTP/2 connection.
pub async fn writeback(
    api: &Api,
    domain: &Domain,
    workers: usize,
    w: Window,
) -> anyhow::Result<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let upns: Arc<Vec<String>> = Arc::new(domain.users.iter().map(|(u, _)| u.clone()).collect());
    let w = w.schedule();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (next, upns, api) = (Arc::clone(&next), Arc::clone(&upns), api.clone());
        handles.push(tokio::spawn(async move {
            let count = upns.len();
            worker(next, count, w, move |i| {
                let api = api.clone();
                let upn = upns[i].clone();
                async move { api.reset(&upn, next_password()).await }
            })
            .await
        }));
    }
    gather(handles, w).await
}

/// The pipeline without the DC's work: resets of a user that does not exist, one
/// at a time, answered `USER_NOT_FOUND` after the agent's one search.
pub async fn floor(api: &Api, domain: &Domain, w: Window) -> anyhow::Result<Sample> {
    let upn = Arc::new(format!("no-such-user@{}", domain.dc.domain()));
    let w = w.schedule();
    let api = api.clone();
    let sample = worker(Arc::new(AtomicUsize::new(0)), 1, w, move |_| {
        let (api, upn) = (api.clone(), Arc::clone(&upn));
        async move {
            api.reset_expecting(&upn, next_password(), "USER_NOT_FOUND")
                .await
        }
    })
    .await;
    Ok(sample)
}

/// One reset through writeback and a bind with the new password: the resets
/// really reach the directory.
pub async fn verify(api: &Api, domain: &Domain) -> anyhow::Result<()> {
    let (upn, _) = domain.users.first().context("no users")?;
    let password = next_password();
    api.reset(upn, password.clone()).await?;
    if !domain.dc.try_bind(upn, &password).await? {
        bail!("{upn} cannot bind with the password writeback just set");
    }
    Ok(())
}
