//! API conventions: gRPC health and reflection answer, and every list
//! pages with `next_page_token`.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Options, TestCp, reason_in_details};

const SERVICES: [&str; 8] = [
    "writeback.v1.SettingsService",
    "writeback.v1.DomainService",
    "writeback.v1.AgentService",
    "writeback.v1.EnrollmentService",
    "writeback.v1.PasswordService",
    "writeback.v1.AuditService",
    "writeback.v1.TokenService",
    "writeback.v1.DirectoryService",
];

async fn health_answers_for_the_server_and_every_service(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let mut health = HealthClient::new(t.anonymous().channel);
    for service in std::iter::once("").chain(SERVICES) {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "writeback.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_lists_and_describes_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let db = TestDb::sqlite();
    let t = TestCp::start(&db, Options::default()).await;
    let mut reflection = ServerReflectionClient::new(t.anonymous().channel);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "writeback.v1.TokenService".into(),
            )),
        },
    ];
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for s in SERVICES.iter().copied().chain(["grpc.health.v1.Health"]) {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor");
    };
    let described = files
        .file_descriptor_proto
        .iter()
        .any(|f| f.windows(b"CreateToken".len()).any(|w| w == b"CreateToken"));
    assert!(described, "TokenService is described");

    // grpcurl and older tools ask v1alpha.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = Alpha::new(t.anonymous().channel);
    let mut answers = alpha
        .server_reflection_info(futures::stream::iter(vec![
            tonic_reflection::pb::v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(AlphaRequest::ListServices(String::new())),
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no v1alpha service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "writeback.v1.PasswordService")
    );
}

async fn domain_and_agent_lists_page_with_next_page_tokens(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();
    for i in 0..7 {
        admin.add_domain(&format!("d{i}.example.test")).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = admin
            .domains()
            .list_domains(pb::ListDomainsRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.domains.len());
        names.extend(page.domains.into_iter().map(|d| d.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "ordered, no repeats");

    for _ in 0..3 {
        t.enroll_agent("d1.example.test", "0.1.0").await;
    }
    t.enroll_agent("d2.example.test", "0.1.0").await;
    let mut agents = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .agents()
            .list_agents(pb::ListAgentsRequest {
                domain: "D1.example.test".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, agents.len()), (2, 3));
    assert!(
        agents
            .iter()
            .all(|a| a.domain == "d1.example.test" && !a.online)
    );

    // A token from another list, or garbage, is refused with a stable code.
    let domains_token = admin
        .domains()
        .list_domains(pb::ListDomainsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let err = admin
        .agents()
        .list_agents(pb::ListAgentsRequest {
            page_token: domains_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::InvalidArgument);
    assert!(!err.message().is_empty());

    // writebackctl follows every page.
    let (r, out) = support::ctl(&t, &t.admin_token, &["domain", "list"]).await;
    r.unwrap();
    assert_eq!(out.lines().count(), 7, "{out}");
    let (r, out) = support::ctl(&t, &t.admin_token, &["agent", "list"]).await;
    r.unwrap();
    assert_eq!(out.lines().count(), 4, "{out}");
}

both_backends!(
    health_answers_for_the_server_and_every_service,
    domain_and_agent_lists_page_with_next_page_tokens,
);
