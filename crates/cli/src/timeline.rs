//! `writebackctl operation show ID`: one operation's life as a help desk
//! reads it — who asked, which rule allowed it, which relay and agent
//! carried it, which domain controller answered, the outcome, and where the
//! time went, hop by hop. Each hop's time includes the hops below it, so the
//! timeline also shows each hop's own share (its time minus the next one's).

use std::io::Write;

use writeback_proto::v1 as pb;

/// Prints `r` as a timeline.
pub(crate) fn print(out: &mut dyn Write, r: &pb::OperationRecord) -> std::io::Result<()> {
    let kind = pb::OperationKind::try_from(r.kind)
        .map_or("unknown", |k| k.as_str_name())
        .trim_start_matches("OPERATION_KIND_")
        .to_ascii_lowercase();
    let app = pb::ClientApp::try_from(r.client_app)
        .map_or("unknown", |a| a.as_str_name())
        .trim_start_matches("CLIENT_APP_")
        .to_ascii_lowercase();
    let outcome = r.outcome.clone().unwrap_or_default();
    writeln!(out, "operation {}", r.operation_id)?;
    writeln!(
        out,
        "  what      {kind} of {} in {}",
        r.target,
        or_dash(&r.domain)
    )?;
    writeln!(
        out,
        "  asked     {} by {} via {app}",
        super::when(&r.created_at),
        r.principal
    )?;
    writeln!(out, "  allowed   {}", or_dash(&r.rule))?;
    if outcome.reason_code.is_empty() {
        writeln!(out, "  outcome   {}", r.state)?;
    } else {
        let (reason, message) = (&outcome.reason_code, &outcome.message);
        writeln!(out, "  outcome   {} {reason}: {message}", r.state)?;
    }
    writeln!(out, "  finished  {}", super::when(&r.finished_at))?;
    writeln!(out, "  trace     {}", or_dash(&r.trace_id))?;
    writeln!(
        out,
        "  timeline  (each hop's time includes the hops below it)"
    )?;
    for hop in hops(r) {
        writeln!(out, "    {:<34} {}", hop.who, hop.time)?;
    }
    Ok(())
}

struct Hop {
    who: String,
    time: String,
}

/// The hops from the control plane down to the DC, with what is known.
fn hops(r: &pb::OperationRecord) -> Vec<Hop> {
    let finished = r.finished_at.is_some();
    let levels: [(String, u64, bool); 4] = [
        ("control plane".to_owned(), r.duration_ms, finished),
        (
            format!("relay {}", or_dash(&r.relay_id)),
            r.relay_duration_ms,
            !r.relay_id.is_empty(),
        ),
        (
            format!("agent {}", or_dash(&r.agent_id)),
            r.agent_duration_ms,
            !r.agent_id.is_empty(),
        ),
        (
            format!("DC {}", or_dash(&r.dc_url)),
            r.directory_duration_ms,
            !r.dc_url.is_empty(),
        ),
    ];
    let mut out = Vec::new();
    for (i, (who, ms, known)) in levels.iter().enumerate() {
        if !known {
            out.push(Hop {
                who: who.clone(),
                time: "-".into(),
            });
            continue;
        }
        let below = levels
            .get(i + 1)
            .filter(|(_, _, known)| *known)
            .map(|(_, ms, _)| *ms);
        let time = match (i, below) {
            (3, _) | (_, None) => format!("{ms} ms"),
            (_, Some(b)) => format!("{ms} ms (own {} ms)", ms.saturating_sub(b)),
        };
        out.push(Hop {
            who: who.clone(),
            time,
        });
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_shows_its_own_share() {
        let r = pb::OperationRecord {
            operation_id: "op-1".into(),
            kind: pb::OperationKind::Reset as i32,
            target: "upn:alice@contoso.test".into(),
            domain: "contoso.test".into(),
            principal: "admin@writeback.test".into(),
            client_app: pb::ClientApp::Portal as i32,
            state: "succeeded".into(),
            outcome: Some(pb::OperationOutcome {
                applied: true,
                reason_code: "OK".into(),
                message: "the password was reset".into(),
            }),
            agent_id: "agent-1".into(),
            relay_id: "relay-1".into(),
            finished_at: Some(prost_types::Timestamp::default()),
            duration_ms: 150,
            relay_duration_ms: 120,
            agent_duration_ms: 90,
            directory_duration_ms: 70,
            dc_url: "ldaps://dc1.contoso.test".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            rule: "an administrator may reset".into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        print(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "control plane                      150 ms (own 30 ms)",
            "relay relay-1                      120 ms (own 30 ms)",
            "agent agent-1                      90 ms (own 20 ms)",
            "DC ldaps://dc1.contoso.test        70 ms",
            "trace     4bf92f3577b34da6a3ce929d0e0e4736",
            "allowed   an administrator may reset",
            "outcome   succeeded OK: the password was reset",
        ] {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
    }

    #[test]
    fn unknown_hops_are_dashes() {
        let r = pb::OperationRecord {
            operation_id: "op-2".into(),
            state: "failed".into(),
            finished_at: Some(prost_types::Timestamp::default()),
            duration_ms: 5,
            outcome: Some(pb::OperationOutcome {
                reason_code: "NO_AGENT_ONLINE".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        print(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("control plane                      5 ms\n"),
            "{text}"
        );
        assert!(
            text.contains("relay -                            -\n"),
            "{text}"
        );
        assert!(
            text.contains("DC -                               -\n"),
            "{text}"
        );
    }
}
