//! Tests of the admin protocol: request and response shapes, and a server in front of a
//! one-site group (malformed and over-long lines, the engine's answers, a stopped node).

use crate::admin::*;
use replication::site::{RequestError, RoleKind};
use replication::SiteAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn requests_read_as_documented() {
    let cases = [
        (r#"{"op":"status"}"#, AdminRequest::Status),
        (
            r#"{"op":"put","key":"k","value":"v"}"#,
            AdminRequest::Put {
                key: "k".into(),
                value: "v".into(),
            },
        ),
        (
            r#"{"op":"get","key":"k"}"#,
            AdminRequest::Get {
                key: "k".into(),
                leased: false,
            },
        ),
        (
            r#"{"op":"step_down","to":"h:1"}"#,
            AdminRequest::StepDown { to: "h:1".into() },
        ),
        (
            r#"{"op":"remove","site":"h:1"}"#,
            AdminRequest::Remove { site: "h:1".into() },
        ),
        (
            r#"{"op":"archive","keep_records":10}"#,
            AdminRequest::Archive { keep_records: 10 },
        ),
        (
            r#"{"op":"open_file","name":"log.2"}"#,
            AdminRequest::OpenFile {
                name: "log.2".into(),
            },
        ),
        (
            r#"{"op":"read_file","handle":1,"offset":12,"max_bytes":4096}"#,
            AdminRequest::ReadFile {
                handle: 1,
                offset: 12,
                max_bytes: 4096,
            },
        ),
        (
            r#"{"op":"close_file","handle":1}"#,
            AdminRequest::CloseFile { handle: 1 },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(
            serde_json::from_str::<AdminRequest>(line).unwrap(),
            expected
        );
    }
}

#[test]
fn unknown_ops_and_fields_are_not_requests() {
    for line in [
        r#"{"op":"drop_all"}"#,
        r#"{"op":"get","key":"k","extra":1}"#,
        r#"{"op":"put","key":"k"}"#,
        r#"{"key":"k"}"#,
        "[1,2]",
    ] {
        assert!(
            serde_json::from_str::<AdminRequest>(line).is_err(),
            "{line}"
        );
    }
}

#[test]
fn responses_round_trip_with_their_ok_flag() {
    let responses = [
        AdminResponse::answer(Answer::Committed { lsn: 4 }),
        AdminResponse::answer(Answer::Value(None)),
        AdminResponse::answer(Answer::Value(Some("v".into()))),
        AdminResponse::answer(Answer::Error(
            RequestError::NotMaster {
                master: Some(SiteAddr::new("h:1")),
            }
            .into(),
        )),
    ];
    for response in responses {
        let line = serde_json::to_string(&response).unwrap();
        assert_eq!(line.contains("\"ok\":true"), response.ok, "{line}");
        let back: AdminResponse = serde_json::from_str(&line).unwrap();
        assert_eq!(back, response);
    }
    let line = serde_json::to_string(&AdminResponse::answer(Answer::Error(
        RequestError::NotMaster {
            master: Some(SiteAddr::new("h:1")),
        }
        .into(),
    )))
    .unwrap();
    assert!(
        line.contains(r#""kind":"not_master""#) && line.contains(r#""master":"h:1""#),
        "{line}"
    );
}

/// A one-site group (its creator, master at once) with its admin server on loopback.
async fn one_site_group() -> (Server, std::net::SocketAddr) {
    use replication::node::{self, MonotonicClock, NodeConfig};
    use replication::site::Config;
    use replication::storage::MemStorage;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = NodeConfig::new(Config::group_creator(port.to_string().as_str()), "g", "s");
    let (node, mut events) =
        node::start(cfg, MemStorage::new(), Arc::new(MonotonicClock::new()), 1)
            .await
            .unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    for _ in 0..200 {
        if node.stats().await.unwrap().site.role == RoleKind::Master {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = Server::new(node, vec![], std::env::temp_dir());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

async fn exchange(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    request: &[u8],
) -> Option<AdminResponse> {
    write.write_all(request).await.unwrap();
    let line = lines.next_line().await.unwrap()?;
    Some(serde_json::from_str(&line).unwrap())
}

fn error_kind(response: &AdminResponse) -> Option<ErrorKind> {
    match &response.answer {
        Answer::Error(e) => Some(e.kind),
        _ => None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_malformed_line_is_answered_counted_and_the_connection_stays_usable() {
    let (server, addr) = one_site_group().await;
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut lines = BufReader::new(read).lines();
    for garbage in [&b"not json\n"[..], b"{\"op\":\"explode\"}\n", b"\xff\xfe\n"] {
        let response = exchange(&mut lines, &mut write, garbage).await.unwrap();
        assert!(!response.ok);
        assert_eq!(error_kind(&response), Some(ErrorKind::BadRequest));
    }
    let response = exchange(&mut lines, &mut write, b"{\"op\":\"status\"}\n")
        .await
        .unwrap();
    let Answer::Status(status) = response.answer else {
        panic!("{response:?}")
    };
    assert_eq!(status.admin.bad_requests, 3);
    assert_eq!(status.admin.requests, 4);
    assert_eq!(server.counters.get().bad_requests, 3);
    assert_eq!(status.role, RoleKind::Master);
}

#[tokio::test(flavor = "current_thread")]
async fn an_over_long_line_is_answered_then_the_connection_closes() {
    let (server, addr) = one_site_group().await;
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut lines = BufReader::new(read).lines();
    let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
    long.push(b'\n');
    let response = exchange(&mut lines, &mut write, &long).await.unwrap();
    assert_eq!(error_kind(&response), Some(ErrorKind::BadRequest));
    assert!(lines.next_line().await.unwrap_or(None).is_none(), "closed");
    assert_eq!(server.counters.get().bad_requests, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn put_commits_on_the_master_and_get_reads_it_back() {
    let (server, _) = one_site_group().await;
    let put = server
        .answer_line(
            br#"{"op":"put","key":"k","value":"v"}"#,
            &mut server.open_files(),
        )
        .await;
    assert!(matches!(put.answer, Answer::Committed { .. }), "{put:?}");
    let get = server
        .answer_line(br#"{"op":"get","key":"k"}"#, &mut server.open_files())
        .await;
    assert_eq!(get.answer, Answer::Value(Some("v".into())));
    let missing = server
        .answer_line(br#"{"op":"get","key":"nope"}"#, &mut server.open_files())
        .await;
    assert_eq!(missing.answer, Answer::Value(None));
    let archive = server
        .answer_line(
            br#"{"op":"archive","keep_records":0}"#,
            &mut server.open_files(),
        )
        .await;
    assert!(
        matches!(archive.answer, Answer::Archived { .. }),
        "{archive:?}"
    );
    // The engine's refusals come back as typed errors.
    let remove = server
        .answer_line(
            format!(r#"{{"op":"remove","site":"{}"}}"#, server.node.addr()).as_bytes(),
            &mut server.open_files(),
        )
        .await;
    assert_eq!(error_kind(&remove), Some(ErrorKind::CannotRemoveMaster));
}

#[tokio::test(flavor = "current_thread")]
async fn a_stopped_node_answers_stopping() {
    let (server, _) = one_site_group().await;
    server.node.shutdown().await.unwrap().unwrap();
    let response = server
        .answer_line(br#"{"op":"status"}"#, &mut server.open_files())
        .await;
    assert_eq!(error_kind(&response), Some(ErrorKind::Stopping));
}
