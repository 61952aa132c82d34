//! `SettingsService`: the tenant's three toggles and `GetStatus` — per
//! domain, whether the agent set-up is complete, with every problem and
//! warning (agents online, their versions, health and DC reachability, the
//! password policy's pitfalls). The agents' health comes from a fan-out
//! cached for a few seconds and shared by concurrent callers
//! ([`crate::health_cache`]).

use super::*;

#[tonic::async_trait]
impl SettingsService for Api {
    async fn get_settings(
        &self,
        req: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let s = self
            .cp
            .store
            .settings(&caller.tenant)
            .await
            .map_err(store_status)?;
        Ok(Response::new(settings_pb(&s)))
    }

    async fn update_settings(
        &self,
        req: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let u = req.into_inner();
        // Read first so the trail says old → new (a concurrent change in
        // between would show as an old value that was already replaced).
        let old = self
            .cp
            .store
            .settings(&caller.tenant)
            .await
            .map_err(store_status)?;
        let s = self
            .cp
            .store
            .update_settings(
                &caller.tenant,
                store::SettingsUpdate {
                    cloud_sync_writeback: u.cloud_sync_writeback,
                    sspr_writeback: u.sspr_writeback,
                    unlock_without_reset: u.unlock_without_reset,
                },
            )
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %caller.tenant, principal = %caller.principal,
            cloud_sync_writeback = s.cloud_sync_writeback, sspr_writeback = s.sspr_writeback,
            unlock_without_reset = s.unlock_without_reset, "settings changed");
        self.audit_admin(
            &caller,
            "settings.update",
            "settings",
            serde_json::json!({
                "cloud_sync_writeback":
                    { "old": old.cloud_sync_writeback, "new": s.cloud_sync_writeback },
                "sspr_writeback": { "old": old.sspr_writeback, "new": s.sspr_writeback },
                "unlock_without_reset":
                    { "old": old.unlock_without_reset, "new": s.unlock_without_reset },
            }),
        )
        .await?;
        Ok(Response::new(settings_pb(&s)))
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let settings = self
            .cp
            .store
            .settings(&caller.tenant)
            .await
            .map_err(store_status)?;
        let mut domains = Vec::new();
        let mut token = None;
        loop {
            let (rows, next) = self
                .cp
                .store
                .list_domains(&caller.tenant, Page { size: 1000, token })
                .await
                .map_err(store_status)?;
            for d in rows {
                domains.push(self.domain_status(&caller.tenant, &d.name).await?);
            }
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        Ok(Response::new(pb::StatusResponse {
            settings: Some(settings_pb(&settings)),
            domains,
        }))
    }
}

impl Api {
    /// Whether `domain`'s agent set-up is complete (the tutorial's "verify
    /// the cloud sync agent set-up is complete"): agents enrolled and online,
    /// each answering a health probe with a recent enough version, reachable
    /// domain controllers and verified permissions. Problems block writeback
    /// and say what to do in plain words; warnings do not block.
    async fn domain_status(&self, tenant: &str, domain: &str) -> Result<pb::DomainStatus, Status> {
        let mut agents = Vec::new();
        let mut token = None;
        loop {
            let (rows, next) = self
                .cp
                .store
                .list_agents(tenant, Some(domain), Page { size: 1000, token })
                .await
                .map_err(store_status)?;
            agents.extend(rows.into_iter().filter(|a| !a.is_revoked()));
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        let online = self.cp.dispatcher.online_agents(tenant, domain);
        let online_count = agents
            .iter()
            .filter(|a| online.contains(&a.agent_id))
            .count();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        if agents.is_empty() {
            problems.push(format!(
                "no agent is enrolled for this domain; create an enrollment token with \
                 `writebackctl agent enroll-token --domain {domain}` and enroll an agent"
            ));
        } else if online_count == 0 {
            problems.push(format!(
                "none of the {} enrolled agents is connected to a relay; check that the agents \
                 are running and can reach the relay (their logs say why not)",
                agents.len()
            ));
        } else {
            for a in agents.iter().filter(|a| !online.contains(&a.agent_id)) {
                warnings.push(format!(
                    "agent {} on {} is enrolled but not connected to a relay",
                    a.agent_id, a.hostname
                ));
            }
            if online_count == 1 {
                warnings.push(
                    "only one agent is online, so there is no failover; enroll another agent on \
                     a second server"
                        .to_owned(),
                );
            }
        }
        // Agents enrolled before results were signed: the control plane
        // refuses their results until a renewal registers their key.
        let unregistered: Vec<_> = agents
            .iter()
            .filter(|a| a.result_signing_key.is_empty())
            .collect();
        let unsigned_why = "its results are refused until it registers its result-signing key: \
                            upgrade the agent (it renews its certificate at start, which \
                            registers the key) or run `writeback-agent renew`";
        if !agents.is_empty() && unregistered.len() == agents.len() {
            problems.push(format!(
                "no agent of this domain has registered a result-signing key (they enrolled \
                 before results were signed); each agent's {unsigned_why}"
            ));
        } else {
            for a in unregistered {
                warnings.push(format!(
                    "agent {} on {} enrolled before results were signed; {unsigned_why}",
                    a.agent_id, a.hostname
                ));
            }
        }
        if online_count > 0 {
            let min = &self.cp.config.min_agent_version;
            let mut policy_warnings = Vec::new();
            // Shared and cached briefly: a burst of GetStatus calls makes each
            // agent check its DCs once (see `health_cache`).
            let key = (tenant.to_owned(), domain.to_owned());
            let health = self
                .cp
                .health
                .get_or_compute(&key, || {
                    self.cp.dispatcher.probe(tenant, domain, PROBE_TIMEOUT)
                })
                .await;
            for h in health {
                let id = h.identity.map(|i| i.agent_id).unwrap_or_default();
                let Some(r) = h.report else {
                    problems.push(format!(
                        "agent {id} did not answer the health check in time"
                    ));
                    continue;
                };
                if !version_at_least(&r.agent_version, min) {
                    problems.push(format!(
                        "agent {id} runs version {}, older than the minimum version {min}; upgrade it",
                        if r.agent_version.is_empty() { "unknown" } else { &r.agent_version }
                    ));
                }
                if !r.permissions_ok {
                    problems.push(format!(
                        "agent {id} has not verified its service account's permissions; it needs \
                         Reset Password, write lockoutTime and write pwdLastSet on user objects \
                         and Unexpire Password on the domain root, applied to this object and \
                         all descendant objects"
                    ));
                }
                if let Some(offset) = r.clock_offset_ms
                    && r.max_clock_offset_ms > 0
                    && offset.unsigned_abs() > r.max_clock_offset_ms
                {
                    problems.push(format!(
                        "agent {id}'s clock is {:.1} s {} its relay's, more than the {} s it \
                         tolerates, so it refuses every operation; synchronise the clocks (NTP) \
                         of the agent's and the relay's hosts",
                        offset.unsigned_abs() as f64 / 1000.0,
                        if offset > 0 { "ahead of" } else { "behind" },
                        r.max_clock_offset_ms / 1000
                    ));
                }
                if let Some(line) = certificate_words(&id, r.certificate_not_after.as_ref()) {
                    warnings.push(line);
                }
                let unreachable: Vec<_> = r
                    .domain_controllers
                    .iter()
                    .filter(|d| !d.reachable)
                    .collect();
                let all_down = !r.domain_controllers.is_empty()
                    && unreachable.len() == r.domain_controllers.len();
                for dc in unreachable {
                    let line = format!(
                        "agent {id} cannot use the domain controller {}: {}",
                        dc.url,
                        dc_problem_words(&dc.reason_code)
                    );
                    if all_down {
                        problems.push(line);
                    } else {
                        warnings.push(line);
                    }
                }
                if r.domain_controllers.is_empty() {
                    problems.push(format!("agent {id} has no domain controller configured"));
                }
                for w in r.policy_warnings {
                    if !policy_warnings.contains(&w) {
                        policy_warnings.push(w);
                    }
                }
            }
            warnings.extend(policy_warnings);
        }
        Ok(pb::DomainStatus {
            domain: domain.to_owned(),
            agents_enrolled: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            agents_online: u32::try_from(online_count).unwrap_or(u32::MAX),
            setup_complete: online_count > 0 && problems.is_empty(),
            problems,
            warnings,
        })
    }
}

/// How long `status` waits for agents' health answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A DC reachability reason code in words.
fn dc_problem_words(code: &str) -> &'static str {
    match ReasonCode::parse(code) {
        Some(ReasonCode::DcUnreachable) => {
            "it does not answer on the network (check the URL, DNS and firewalls)"
        }
        Some(ReasonCode::TlsFailure) => {
            "the TLS handshake failed (check its certificate and the agent's ca_file)"
        }
        Some(ReasonCode::AgentBindFailed) => {
            "the service account cannot sign in (check bind_dn and its password)"
        }
        Some(ReasonCode::Timeout) => "it did not answer in time",
        _ => "it cannot be used (the agent's log has the details)",
    }
}

/// Compares dotted numeric versions (`1.2.3`, missing parts are 0); a
/// pre-release (`1.2.3-rc1`) is older than its release, and an unparsable
/// version is older than anything.
fn version_at_least(v: &str, min: &str) -> bool {
    fn parse(s: &str) -> Option<(Vec<u64>, bool)> {
        let s = s.trim().trim_start_matches('v');
        let s = s.split('+').next().unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, _)) => (c, true),
            None => (s, false),
        };
        let parts = core
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some((parts, pre))
    }
    let (Some((mut a, a_pre)), Some((mut b, b_pre))) = (parse(v), parse(min)) else {
        return false;
    };
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    match a.cmp(&b) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => !a_pre || b_pre,
    }
}

/// Below this many days left, an agent's certificate is a warning: it
/// renews with a third of a year left, so it has been failing for months.
const CERTIFICATE_WARNING_DAYS: i64 = 30;

/// A warning when an agent's certificate (`not_after`) expires within
/// [`CERTIFICATE_WARNING_DAYS`].
fn certificate_words(id: &str, not_after: Option<&prost_types::Timestamp>) -> Option<String> {
    let not_after = not_after?;
    let left = not_after.seconds - time::OffsetDateTime::now_utc().unix_timestamp();
    if left >= CERTIFICATE_WARNING_DAYS * 86_400 {
        return None;
    }
    let date = time::OffsetDateTime::from_unix_timestamp(not_after.seconds)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    Some(format!(
        "agent {id}'s certificate expires in {} days (on {date}) and has not been renewed: \
         the agent renews it by itself while it can reach the control plane; see the agent's \
         log, or run `writeback-agent renew` on its host. Once it has expired the agent must \
         be enrolled again",
        left.max(0) / 86_400
    ))
}

#[cfg(test)]
mod tests {
    use super::version_at_least;

    #[test]
    fn versions_compare_numerically_and_pre_releases_are_older() {
        assert!(version_at_least("0.10.0", "0.2.0"));
        assert!(version_at_least("0.2.0", "0.2.0"));
        assert!(version_at_least("0.2", "0.2.0"));
        assert!(version_at_least("v1.0.0", "0.2.0"));
        assert!(version_at_least("0.2.0+build.5", "0.2.0"));
        assert!(!version_at_least("0.2.0-rc1", "0.2.0"));
        assert!(!version_at_least("0.1.9", "0.2.0"));
        assert!(!version_at_least("", "0.1.0"));
        assert!(!version_at_least("latest", "0.1.0"));
    }
}
