//! The error model as integrators see it: a Python client generated from
//! `proto/` (grpcio, grpcio-status, grpcio-reflection — `grpc_client.py`, run
//! from the environment `scripts/python-env.sh` builds) calls the control plane
//! and decodes every error with the standard library, not with our code; it
//! also lists every service through server reflection and calls each with
//! descriptors fetched by reflection alone, as grpcurl does.

use std::path::PathBuf;
use std::process::Command;

use writeback_testkit::stack::Stack;

/// The Python of the tests' virtual environment; fails loudly when it is missing.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("WRITEBACK_VENV").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/writeback/venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (scripts/python-env.sh)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_decodes_every_error_with_the_standard_libraries() {
    writeback_identity::install_crypto_provider();
    let stack = Stack::start("t1", 1).await.unwrap();
    stack.register_domain("contoso.test").await.unwrap();
    let ca = stack.dir.path().join("cp-ca.pem");
    std::fs::write(&ca, stack.cp.ca.cert_pem()).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = stack.cp_url.trim_start_matches("https://").to_owned();
    let token = stack.admin_token_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv_python())
            .arg(root.join("it/grpc_client.py"))
            .arg(root.join("../proto"))
            .arg(target)
            .arg(ca)
            .arg(token)
            .output()
            .unwrap()
    });
    let out = out.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let cases: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c["case"] == name)
            .unwrap_or_else(|| panic!("no case {name} in {stdout}"))
            .clone()
    };
    let standard = |name: &str, grpc: &str, reason: &str| {
        let c = case(name);
        assert_eq!(c["grpc_code"], grpc, "{c}");
        assert_eq!(c["reason"], reason, "{c}");
        assert_eq!(c["domain"], "writeback.v1", "{c}");
        assert_eq!(
            c["detail_types"][0], "type.googleapis.com/google.rpc.ErrorInfo",
            "{c}"
        );
        c
    };
    standard("no_user", "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    standard("unknown_domain", "NOT_FOUND", "DOMAIN_NOT_FOUND");
    standard("bad_token", "UNAUTHENTICATED", "UNAUTHENTICATED");
    for i in 1..=5 {
        let c = standard(&format!("reset_{i}"), "UNAVAILABLE", "NO_AGENT_ONLINE");
        assert!(
            c["metadata"]["operation_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36),
            "a recorded operation names its id: {c}"
        );
    }
    let throttled = standard("reset_6", "RESOURCE_EXHAUSTED", "THROTTLED");
    let delay = throttled["retry_delay_seconds"].as_i64().unwrap();
    assert!((3_590..=3_600).contains(&delay), "{throttled}");
    assert_eq!(
        throttled["metadata"]["retry_after_seconds"],
        delay.to_string(),
        "{throttled}"
    );
    let services = case("reflection")["services"].clone();
    for s in [
        "writeback.v1.PasswordService",
        "writeback.v1.SettingsService",
        "writeback.v1.DomainService",
        "writeback.v1.AgentService",
        "writeback.v1.AuditService",
    ] {
        assert!(
            services.as_array().unwrap().iter().any(|v| v == s),
            "{s} not listed by reflection: {services}"
        );
    }
    // Only what the control plane serves is advertised.
    for s in ["writeback.v1.AgentTunnel", "writeback.v1.RelayDispatch"] {
        assert!(
            !services.as_array().unwrap().iter().any(|v| v == s),
            "{s} is not served by the control plane but listed: {services}"
        );
    }
    // Every listed service called with descriptors from reflection alone:
    // an answer, or a refusal in the standard error model, never
    // UNIMPLEMENTED or an undecodable error.
    for s in services
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
    {
        if s.starts_with("grpc.reflection.") {
            continue;
        }
        let c = cases
            .iter()
            .find(|c| c["case"] == "generic_call" && c["service"] == s)
            .unwrap_or_else(|| panic!("{s} was not called generically: {stdout}"));
        match c["grpc_code"].as_str() {
            Some("OK") => {}
            Some(code) if code != "UNIMPLEMENTED" && code != "UNKNOWN" => {
                assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
                assert_eq!(
                    c["detail_types"][0], "type.googleapis.com/google.rpc.ErrorInfo",
                    "{c}"
                );
            }
            _ => panic!("{s} did not answer a generic call: {c}"),
        }
    }
    let domains = cases
        .iter()
        .find(|c| c["case"] == "generic_call" && c["service"] == "writeback.v1.DomainService")
        .unwrap();
    assert_eq!(domains["method"], "ListDomains", "{domains}");
    assert_eq!(domains["grpc_code"], "OK", "{domains}");
    assert!(
        domains["response"].to_string().contains("contoso.test"),
        "the reflected response decodes: {domains}"
    );
    drop(stack);
}
