//! Property tests: every message round-trips through a frame, and any byte
//! sequence decodes to a message or a typed error, never a panic.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use warren_proto::control::{self, UpdateKind, WorkspaceUpdate};
use warren_proto::frame::{decode_payload, encode, FrameDecoder, FrameError};
use warren_proto::ipc::*;
use warren_proto::model::{Agent, DeploymentInfo, Workspace};
use warren_proto::Secret;

fn text() -> impl Strategy<Value = String> {
    // Includes quotes, backslashes, control characters and non-ASCII.
    "[a-zA-Z0-9 ._\"\\\\\\n\u{7f}é中-]{0,24}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn workspace() -> impl Strategy<Value = Workspace> {
    (text(), text(), text()).prop_map(|(id, name, owner)| Workspace { id, name, owner })
}

fn agent() -> impl Strategy<Value = Agent> {
    (
        text(),
        text(),
        text(),
        proptest::option::of(text()),
        proptest::collection::vec(ip(), 0..3),
        proptest::collection::vec((ip(), any::<u16>()), 0..3),
        proptest::collection::vec(text(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(id, name, workspace_id, public_key, addresses, endpoints, dns_names, online)| Agent {
                id,
                name,
                workspace_id,
                public_key,
                addresses,
                endpoints: endpoints
                    .into_iter()
                    .map(|(ip, port)| SocketAddr::new(ip, port))
                    .collect(),
                dns_names,
                online,
            },
        )
}

fn deployment() -> impl Strategy<Value = DeploymentInfo> {
    (text(), text(), text()).prop_map(|(suffix, ipv4_prefix, ipv6_prefix)| DeploymentInfo {
        suffix,
        ipv4_prefix,
        ipv6_prefix,
    })
}

fn session() -> impl Strategy<Value = SessionInfo> {
    (
        prop_oneof![
            Just(SessionState::Disconnected),
            Just(SessionState::Connecting),
            Just(SessionState::Connected),
            Just(SessionState::Reconnecting),
            Just(SessionState::Failed),
        ],
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(any::<u64>()),
        any::<u32>(),
        proptest::option::of(
            (text(), text(), proptest::collection::vec(ip(), 0..2)).prop_map(
                |(id, public_key, addresses)| DeviceInfo {
                    id,
                    public_key,
                    endpoints: addresses
                        .iter()
                        .map(|a| std::net::SocketAddr::new(*a, 51820))
                        .collect(),
                    addresses,
                },
            ),
        ),
        proptest::option::of(deployment()),
    )
        .prop_map(
            |(state, url, reason, retry_in_ms, attempt, device, deployment)| SessionInfo {
                state,
                url: url.clone(),
                user: url.clone(),
                reason: reason.clone(),
                reason_code: reason.as_ref().map(|_| {
                    [
                        ReasonCode::SignInRequired,
                        ReasonCode::Refused,
                        ReasonCode::Unreachable,
                        ReasonCode::ConnectionLost,
                        ReasonCode::Resynchronizing,
                        ReasonCode::DeploymentRefused,
                        ReasonCode::DeploymentChanged,
                    ][(attempt % 7) as usize]
                }),
                retry_in_ms,
                attempt,
                device,
                deployment,
                tunnel: retry_in_ms.map(|port| TunnelInfo {
                    state: [
                        TunnelState::Down,
                        TunnelState::Starting,
                        TunnelState::Up,
                        TunnelState::Failed,
                    ][(port % 4) as usize],
                    error: reason.clone(),
                    interface: "warren0".into(),
                    listen_port: port as u16,
                    generation: port,
                }),
                notices: reason
                    .iter()
                    .map(|message| Notice {
                        kind: [
                            NoticeKind::AgentRefused,
                            NoticeKind::AgentTrimmed,
                            NoticeKind::AgentsCapped,
                        ][(attempt % 3) as usize],
                        agent_id: url.clone(),
                        message: message.clone(),
                    })
                    .collect(),
            },
        )
}

fn hello() -> impl Strategy<Value = Hello> {
    (text(), any::<u32>(), any::<u32>(), text()).prop_map(|(protocol, major, minor, app)| Hello {
        protocol,
        version: ProtocolVersion { major, minor },
        app_version: app,
    })
}

fn ipc_error() -> impl Strategy<Value = IpcError> {
    (
        prop_oneof![
            Just(ErrorCode::PermissionDenied),
            Just(ErrorCode::VersionMismatch),
            Just(ErrorCode::FrameTooLarge),
            Just(ErrorCode::Malformed),
            Just(ErrorCode::Protocol),
            Just(ErrorCode::BadRequest),
            Just(ErrorCode::SlowSubscriber),
            Just(ErrorCode::Internal),
        ],
        text(),
    )
        .prop_map(|(code, message)| IpcError { code, message })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    let request = prop_oneof![
        (text(), text(), proptest::option::of(text())).prop_map(|(url, token, ca)| {
            Request::Start {
                url,
                token: Secret::new(token),
                ca,
                deployment: None,
            }
        }),
        Just(Request::Stop),
        Just(Request::Reconnect),
        Just(Request::Status),
        Just(Request::Subscribe),
        (text(), proptest::option::of(any::<u64>()))
            .prop_map(|(target, timeout_ms)| Request::Ping { target, timeout_ms }),
    ];
    prop_oneof![
        hello().prop_map(ClientMessage::Hello),
        (any::<u64>(), request).prop_map(|(id, request)| ClientMessage::Request { id, request }),
    ]
}

fn peer_stats() -> impl Strategy<Value = PeerStats> {
    (
        text(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of((ip(), any::<u16>())),
    )
        .prop_map(|(agent_id, last, rx, tx, rtt, ep)| PeerStats {
            agent_id,
            last_handshake_ms: last,
            rx_bytes: rx,
            tx_bytes: tx,
            rtt_us: rtt,
            endpoint: ep.map(|(a, p)| std::net::SocketAddr::new(a, p)),
            relay: (rx % 2 == 1).then(|| "turn1.example:3478".to_string()),
            no_path: tx % 3 == 0,
        })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u32>(),
            any::<bool>(),
            session(),
            proptest::collection::vec(workspace(), 0..3),
            proptest::collection::vec(agent(), 0..3),
            proptest::collection::vec(peer_stats(), 0..2)
        )
            .prop_map(
                |(part, last, session, workspaces, agents, stats)| Event::State {
                    part,
                    last,
                    session,
                    workspaces,
                    agents,
                    stats
                }
            ),
        (
            proptest::collection::vec(workspace(), 0..3),
            proptest::collection::vec(agent(), 0..3),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(text(), 0..3)
        )
            .prop_map(|(uw, ua, dw, da)| Event::PeerUpdate {
                upserted_workspaces: uw,
                upserted_agents: ua,
                deleted_workspaces: dw,
                deleted_agents: da
            }),
        session().prop_map(|session| Event::SessionChanged { session }),
        proptest::collection::vec(peer_stats(), 0..3).prop_map(|stats| Event::PeerStats { stats }),
        (any::<u64>(), text(), text(), text()).prop_map(|(time_ms, level, target, message)| {
            Event::Log {
                line: LogLine {
                    time_ms,
                    level,
                    target,
                    message,
                },
            }
        }),
    ]
}

fn helper_message() -> impl Strategy<Value = HelperMessage> {
    let reply = prop_oneof![
        Just(Reply::Ok),
        (session(), any::<u16>(), any::<u16>(), text()).prop_map(|(session, w, a, v)| {
            Reply::Status(StatusReport {
                helper_version: v,
                session,
                workspace_count: w as usize,
                agent_count: a as usize,
            })
        }),
        ipc_error().prop_map(Reply::Error),
        (text(), text(), ip(), any::<u64>(), any::<u16>()).prop_map(
            |(agent_id, name, address, rtt_us, port)| Reply::Pong(PingReport {
                agent_id,
                name,
                address,
                rtt_us,
                endpoint: Some(std::net::SocketAddr::new(address, port)),
            })
        ),
    ];
    prop_oneof![
        hello().prop_map(HelperMessage::Hello),
        (any::<u64>(), reply)
            .prop_map(|(reply_to, reply)| HelperMessage::Reply { reply_to, reply }),
        (any::<u64>(), event()).prop_map(|(seq, event)| HelperMessage::Event { seq, event }),
        ipc_error().prop_map(HelperMessage::Error),
    ]
}

fn server_message() -> impl Strategy<Value = control::ServerMessage> {
    prop_oneof![
        (
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(workspace(), 0..3),
            proptest::collection::vec(agent(), 0..3),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(text(), 0..3)
        )
            .prop_map(|(snap, seq, uw, ua, dw, da)| {
                control::ServerMessage::WorkspaceUpdate(WorkspaceUpdate {
                    kind: if snap {
                        UpdateKind::Snapshot
                    } else {
                        UpdateKind::Diff
                    },
                    seq,
                    more: snap && seq % 2 == 0,
                    upserted_workspaces: uw,
                    upserted_agents: ua,
                    deleted_workspaces: dw,
                    deleted_agents: da,
                })
            }),
        (
            deployment(),
            text(),
            text(),
            proptest::collection::vec(ip(), 0..2)
        )
            .prop_map(|(deployment, user, id, addresses)| {
                control::ServerMessage::Welcome(control::Welcome {
                    protocol_version: 1,
                    coordinator_version: "0".into(),
                    deployment,
                    user,
                    kind: control::TokenKind::User,
                    id,
                    addresses,
                    relays: vec![],
                })
            }),
        (text(), text()).prop_map(|(error, message)| control::ServerMessage::Error(
            control::ApiError { error, message }
        )),
    ]
}

fn round_trip<T>(msg: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let frame = encode(msg).expect("small messages encode");
    let mut d = FrameDecoder::new();
    d.push(&frame);
    let back = d.next_message::<T>().expect("decodes").expect("complete");
    assert_eq!(d.pending(), 0);
    back
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn helper_messages_round_trip(msg in helper_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn control_messages_round_trip(msg in server_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn any_payload_decodes_or_errors(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_payload::<ClientMessage>(&bytes);
        let _ = decode_payload::<HelperMessage>(&bytes);
        let _ = decode_payload::<control::ServerMessage>(&bytes);
    }

    #[test]
    fn any_stream_decodes_or_errors(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut d = FrameDecoder::new();
        for c in chunks {
            d.push(&c);
            loop {
                match d.next_message::<ClientMessage>() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(FrameError::TooLarge { .. }) => return Ok(()),
                    Err(FrameError::Malformed(_)) => continue,
                }
            }
        }
    }

    #[test]
    fn json_shaped_payloads_decode_or_error(
        ty in prop_oneof![Just("hello"), Just("request"), Just("event"), Just("reply"), Just("x")],
        id in any::<i64>(),
        op in prop_oneof![Just("start"), Just("stop"), Just("status"), Just("subscribe"), Just("zz")],
        extra in text(),
    ) {
        let payload = format!(r#"{{"type":"{ty}","id":{id},"request":{{"op":"{op}","url":{extra:?}}}}}"#);
        let _ = decode_payload::<ClientMessage>(payload.as_bytes());
    }
}
