//! `EnrollmentService`: an agent's first contact (`Enroll`, authenticated
//! by its one-time enrollment token) and its certificate renewals
//! (`RenewCertificate`, authenticated by the agent's current certificate
//! rather than a bearer token; see ARCHITECTURE's "Superseded
//! certificates").

use super::*;

/// The largest CSR `Enroll` parses (an ECDSA or RSA-4096 CSR is well under).
const MAX_CSR_BYTES: usize = 16 * 1024;

#[tonic::async_trait]
impl EnrollmentService for Api {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = peer_of(&req);
        let r = req.into_inner();
        // A refused token is a security event (its id when it parsed, never
        // its secret).
        let refused = |token_id: Option<&str>, s: Status| -> Status {
            let reason = writeback_core::failure_of(&s).reason;
            self.cp
                .security
                .enrollment_refused(token_id, reason, s.message(), peer);
            s
        };
        let token = EnrollmentToken::parse(&r.token).map_err(|_| {
            refused(
                None,
                status(
                    ReasonCode::EnrollmentTokenInvalid,
                    "the enrollment token is malformed",
                ),
            )
        })?;
        if token.ca_fingerprint != self.cp.ca.fingerprint() {
            return Err(refused(
                Some(&token.token_id),
                status(
                    ReasonCode::CaMismatch,
                    "the enrollment token pins another CA than this control plane's",
                ),
            ));
        }
        let token_refused = |e: StoreError| {
            let internal = matches!(
                e.reason_code(),
                ReasonCode::Internal | ReasonCode::Unavailable
            );
            let s = store_status(e);
            if internal {
                s
            } else {
                refused(Some(&token.token_id), s)
            }
        };
        // The token first: a caller without a valid one gets no CSR parsed,
        // let alone signed (one indexed read, and the token stays unused).
        self.cp
            .store
            .check_enrollment_token(
                &token.token_id,
                &token.secret_hash(),
                self.cp.store.now_ms(),
            )
            .await
            .map_err(token_refused)?;
        if r.envelope_public_key.len() != 32 {
            return Err(status(
                ReasonCode::InvalidArgument,
                "the envelope public key must be 32 bytes (X25519)",
            ));
        }
        if writeback_envelope::signing::TrustedKey::new(&r.result_signing_public_key).is_err() {
            return Err(status(
                ReasonCode::InvalidArgument,
                "the result-signing public key must be 32 bytes (Ed25519); upgrade the agent",
            ));
        }
        if r.csr_pem.len() > MAX_CSR_BYTES {
            return Err(status(
                ReasonCode::InvalidArgument,
                format!("the certificate signing request is larger than {MAX_CSR_BYTES} bytes"),
            ));
        }
        // Check the CSR before spending the token, without signing anything:
        // the CA signs only after the token is spent.
        let agent_id = format!("agent-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        writeback_identity::Ca::check_csr(&r.csr_pem).map_err(|_| {
            status(
                ReasonCode::InvalidArgument,
                "the certificate signing request is not valid PEM PKCS#10",
            )
        })?;
        let (tenant, domain) = self
            .cp
            .store
            .consume_enrollment_token(
                &token.token_id,
                &token.secret_hash(),
                self.cp.store.now_ms(),
            )
            .await
            .map_err(token_refused)?;
        let id = SpiffeId::agent(&tenant, &domain, &agent_id).map_err(|_| {
            status(
                ReasonCode::Internal,
                "the domain name cannot appear in an identity",
            )
        })?;
        let (cert, fingerprint) = self.issue_agent_certificate(&r.csr_pem, &id)?;
        let agent = store::NewAgent {
            tenant: tenant.clone(),
            domain: domain.clone(),
            agent_id: agent_id.clone(),
            hostname: r.hostname.chars().take(255).collect(),
            version: r.agent_version.chars().take(64).collect(),
            envelope_public_key: r.envelope_public_key,
            cert_fingerprint: fingerprint,
            result_signing_key: r.result_signing_public_key,
        };
        self.cp
            .store
            .insert_agent(&agent)
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %tenant, domain = %domain, agent_id = %agent_id, "agent enrolled");
        self.audit_enrollment(&agent, &token.token_id, peer).await;
        Ok(Response::new(pb::EnrollResponse {
            tenant,
            domain,
            agent_id,
            certificate_pem: cert,
            ca_pem: self.cp.ca.cert_pem().to_owned(),
            relay_urls: self.cp.config.agent_relay_urls(),
            operation_signing_keys: self.cp.operation_signing_keys(),
            result_signing_key_registered: true,
            signing_key_endorsements: self.cp.signing_key_endorsements(),
        }))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let peer = req
            .extensions()
            .get::<writeback_identity::PeerInfo>()
            .cloned();
        // The identity is the verified certificate's, never the request's.
        let Some(SpiffeId::Agent {
            tenant,
            domain,
            agent_id,
        }) = peer.as_ref().and_then(|p| p.identity.clone())
        else {
            return Err(status(
                ReasonCode::Unauthenticated,
                "renewing a certificate needs the agent's current, unexpired certificate \
                 (mutual TLS); an agent whose certificate expired must be enrolled again",
            ));
        };
        let r = req.into_inner();
        let agent = self
            .cp
            .store
            .get_agent(&tenant, &agent_id)
            .await
            .map_err(store_status)?;
        let refused_revoked = || {
            tracing::warn!(tenant = %tenant, domain = %domain, agent_id = %agent_id,
                "certificate renewal refused: the agent is revoked");
            status(
                ReasonCode::AgentRevoked,
                format!(
                    "agent {agent_id} was revoked; it gets no new certificate \
                     (enroll a new agent with a fresh token)"
                ),
            )
        };
        // Only the certificate the control plane last issued renews: an
        // older one (a backup of `agent.key`, a copy an attacker kept) was
        // superseded by that renewal and gets nothing.
        let presented = peer
            .as_ref()
            .and_then(|p| p.cert_fingerprint.clone())
            .unwrap_or_default();
        let refused_superseded = || {
            tracing::warn!(tenant = %tenant, domain = %domain, agent_id = %agent_id,
                presented_cert_fingerprint = %presented,
                "certificate renewal refused: the agent presented a superseded certificate");
            let message = format!(
                "this certificate of agent {agent_id} was superseded by a later renewal; only \
                 the agent's current certificate renews (if this host is the agent, its state \
                 directory was restored from an old backup: enroll it again with a fresh token)"
            );
            self.cp.security.renewal_refused(
                &tenant,
                &domain,
                &agent_id,
                &message,
                &presented,
                peer.as_ref().map(|p| p.remote_addr),
            );
            status(ReasonCode::CertificateSuperseded, message)
        };
        match &agent {
            None => {
                return Err(status(
                    ReasonCode::Unauthenticated,
                    format!("agent {agent_id} is not enrolled with this control plane"),
                ));
            }
            Some(a) if a.is_revoked() => return Err(refused_revoked()),
            Some(a) if !a.domain.eq_ignore_ascii_case(&domain) => {
                return Err(status(
                    ReasonCode::Unauthenticated,
                    format!(
                        "agent {agent_id}'s certificate names another domain than its enrollment"
                    ),
                ));
            }
            // The previous certificate may ask again for the answer it never
            // got, for the same key (the store checks the key once issued).
            Some(a)
                if a.cert_fingerprint != presented
                    && (a.previous_cert_fingerprint.is_empty()
                        || a.previous_cert_fingerprint != presented) =>
            {
                return Err(refused_superseded());
            }
            Some(_) => {}
        }
        if r.csr_pem.len() > MAX_CSR_BYTES {
            return Err(status(
                ReasonCode::InvalidArgument,
                format!("the certificate signing request is larger than {MAX_CSR_BYTES} bytes"),
            ));
        }
        let id = SpiffeId::Agent {
            tenant: tenant.clone(),
            domain: domain.clone(),
            agent_id: agent_id.clone(),
        };
        let (cert, fingerprint) = self.issue_agent_certificate(&r.csr_pem, &id)?;
        let issued = store::IssuedCertificate {
            fingerprint: fingerprint.clone(),
            key_fingerprint: writeback_identity::key_fingerprint_of_pem(&cert)
                .map_err(|_| status(ReasonCode::Internal, "cannot fingerprint the certificate"))?,
        };
        let version: String = r.agent_version.chars().take(64).collect();
        // The superseded certificate expires within the longest lifetime an
        // agent certificate is issued for; until then relays refuse it.
        let longest = self
            .cp
            .config
            .agent_certificate_validity()
            .max(writeback_identity::ca::LEAF_VALIDITY);
        let superseded_expires_at_ms = self
            .cp
            .store
            .now_ms()
            .saturating_add(i64::try_from(longest.whole_milliseconds()).unwrap_or(i64::MAX));
        let renewed = self
            .cp
            .store
            .renew_agent_certificate(
                &tenant,
                &agent_id,
                &presented,
                &issued,
                &version,
                superseded_expires_at_ms,
            )
            .await
            .map_err(store_status)?;
        match renewed {
            store::CertificateRenewal::Renewed => {}
            store::CertificateRenewal::Reissued => {
                tracing::info!(tenant = %tenant, domain = %domain, agent_id = %agent_id,
                    "a renewal asked again with the previous certificate for the same key; \
                     the certificate it never received is superseded");
            }
            // Revoked between the read and the update.
            store::CertificateRenewal::Revoked => return Err(refused_revoked()),
            // Another renewal with the same certificate won the race.
            store::CertificateRenewal::Superseded => return Err(refused_superseded()),
        }
        // Relays learn at once that the old certificate is superseded
        // (refused from now on, an open tunnel on it closed); one that
        // cannot be reached now gets it before the next operation goes
        // through it (the renewal bumped the revocation version).
        if let Err(f) = self.cp.dispatcher.sync_revocations(&tenant).await {
            tracing::warn!(tenant = %tenant, reason = %f.reason,
                "the superseded certificate could not be sent to the relays now");
        }
        let registration = self
            .register_result_key(&tenant, &domain, &agent_id, &r.result_signing_public_key)
            .await?;
        tracing::info!(tenant = %tenant, domain = %domain, agent_id = %agent_id,
            cert_fingerprint = %fingerprint, "agent certificate renewed");
        let recorded = self
            .cp
            .store
            .record_admin_event(
                &tenant,
                store::NewAdminEvent {
                    principal: &format!("agent:{agent_id}"),
                    client_app: "agent",
                    action: "agent.renew_certificate",
                    object: &format!("agent:{agent_id}"),
                    details: serde_json::json!({
                        "domain": domain,
                        "version": version,
                        "cert_fingerprint": fingerprint,
                        "result_signing_key": registration.word(),
                        "operation_signing_key_ids": self
                            .cp
                            .operation_signing_keys()
                            .iter()
                            .map(|k| writeback_envelope::signing::key_id_of(k))
                            .collect::<Vec<_>>(),
                        "source": peer.map(|p| p.remote_addr.ip().to_string()),
                    }),
                },
            )
            .await;
        // Best effort, like enrollment: the certificate is issued and
        // recorded on the agent's row by now.
        if let Err(e) = recorded {
            tracing::error!(tenant = %tenant, agent_id = %agent_id, error = %e,
                "an agent's certificate was renewed but the administrative trail could not record it");
        }
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: cert,
            ca_pem: self.cp.ca.cert_pem().to_owned(),
            operation_signing_keys: self.cp.operation_signing_keys(),
            result_signing_key_registered: registration.holds_key(),
            signing_key_endorsements: self.cp.signing_key_endorsements(),
        }))
    }
}

impl Api {
    /// Registers the result-signing key a renewal brought (an agent
    /// enrolled before results were signed gets it recorded now); a
    /// different key than the recorded one is refused as a security event,
    /// the renewal itself goes on.
    async fn register_result_key(
        &self,
        tenant: &str,
        domain: &str,
        agent_id: &str,
        key: &[u8],
    ) -> Result<store::KeyRegistration, Status> {
        if !key.is_empty() && writeback_envelope::signing::TrustedKey::new(key).is_err() {
            return Err(status(
                ReasonCode::InvalidArgument,
                "the result-signing public key must be 32 bytes (Ed25519)",
            ));
        }
        let registration = self
            .cp
            .store
            .register_result_key(tenant, agent_id, key)
            .await
            .map_err(store_status)?;
        let key_id = writeback_envelope::signing::key_id_of(key);
        match registration {
            store::KeyRegistration::Registered => {
                tracing::info!(tenant, domain, agent_id, result_signing_key_id = %key_id,
                    "agent's result-signing key registered");
            }
            store::KeyRegistration::Conflict => {
                tracing::warn!(tenant, domain, agent_id, result_signing_key_id = %key_id,
                    "a renewal brought another result-signing key than the recorded one; kept the recorded one");
                self.cp
                    .security
                    .result_key_refused(tenant, domain, agent_id, &key_id, None);
            }
            store::KeyRegistration::Missing => {
                tracing::warn!(
                    tenant,
                    domain,
                    agent_id,
                    "the agent renewed without a result-signing key (upgrade it): its results are refused"
                );
            }
            store::KeyRegistration::Unchanged => {}
        }
        Ok(registration)
    }

    /// Signs `csr_pem` for `id` for `agent_certificate_validity_seconds`;
    /// returns the certificate and its fingerprint.
    fn issue_agent_certificate(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
    ) -> Result<(String, String), Status> {
        let cert = self
            .cp
            .ca
            .sign_agent_csr_valid_for(csr_pem, id, self.cp.config.agent_certificate_validity())
            .map_err(|_| {
                status(
                    ReasonCode::InvalidArgument,
                    "the certificate signing request is not valid PEM PKCS#10",
                )
            })?;
        let fingerprint = writeback_identity::fingerprint_of_pem(&cert)
            .map_err(|_| status(ReasonCode::Internal, "cannot fingerprint the certificate"))?;
        Ok((cert, fingerprint))
    }
}
