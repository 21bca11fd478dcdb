//! The TURN client against a scripted fake server, in simulated time: every
//! answer is built with `stun_codec` and signed like a real server would.

use super::msg::{decode, Attr, Msg};
use super::*;
use bytecodec::EncodeExt;
use proptest::prelude::*;
use stun_codec::rfc5389::attributes::Fingerprint;
use stun_codec::MessageEncoder;

const REALM: &str = "warren.test";
const USER: &str = "1700000000:device-1";
const PASSWORD: &str = "pw-one";

fn server() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
fn relayed() -> SocketAddr {
    "192.0.2.1:49152".parse().unwrap()
}
fn mapped() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "203.0.113.9:51820".parse().unwrap()
}
fn creds(user: &str, password: &str) -> Credentials {
    Credentials::new(user, password).unwrap()
}

/// The scripted server: decodes what the client sends and answers.
struct Fake {
    nonce: String,
    password: String,
}

impl Fake {
    fn new() -> Self {
        Self {
            nonce: "nonce-1".into(),
            password: PASSWORD.into(),
        }
    }

    /// Decodes a request and checks what every request must carry: a
    /// FINGERPRINT, and, once signed, a MESSAGE-INTEGRITY valid for the
    /// password this fake expects.
    fn request(&self, bytes: &[u8]) -> Msg {
        let m = decode(bytes).expect("the client sends decodable STUN");
        assert_eq!(m.class(), MessageClass::Request);
        assert!(m.get_attribute::<Fingerprint>().is_some(), "no FINGERPRINT");
        m
    }

    fn signed_ok(&self, m: &Msg) -> bool {
        let (Some(user), Some(realm), Some(mi)) = (
            m.get_attribute::<Username>(),
            m.get_attribute::<Realm>(),
            m.get_attribute::<MessageIntegrity>(),
        ) else {
            return false;
        };
        m.get_attribute::<Nonce>().map(|n| n.value()) == Some(self.nonce.as_str())
            && mi
                .check_long_term_credential(user, realm, &self.password)
                .is_ok()
    }

    fn reply(&self, request: &Msg, class: MessageClass, attrs: Vec<Attr>, sign: bool) -> Vec<u8> {
        let mut m = Msg::new(class, request.method(), request.transaction_id());
        for a in attrs {
            m.add_attribute(a);
        }
        if sign {
            let user = request.get_attribute::<Username>().unwrap();
            let realm = Realm::new(REALM.into()).unwrap();
            let mi = MessageIntegrity::new_long_term_credential(&m, user, &realm, &self.password)
                .unwrap();
            m.add_attribute(mi);
        }
        let fp = Fingerprint::new(&m).unwrap();
        m.add_attribute(fp);
        MessageEncoder::new().encode_into_bytes(m).unwrap()
    }

    fn challenge(&self, request: &Msg) -> Vec<u8> {
        self.error(request, 401, false)
    }

    fn error(&self, request: &Msg, code: u16, sign: bool) -> Vec<u8> {
        let attrs = vec![
            ErrorCode::new(code, "no".into()).unwrap().into(),
            Realm::new(REALM.into()).unwrap().into(),
            Nonce::new(self.nonce.clone()).unwrap().into(),
        ];
        self.reply(request, MessageClass::ErrorResponse, attrs, sign)
    }

    fn allocated(&self, request: &Msg, relayed: SocketAddr, lifetime: u32) -> Vec<u8> {
        let attrs = vec![
            XorRelayAddress::new(relayed).into(),
            XorMappedAddress::new(mapped()).into(),
            Lifetime::from_u32(lifetime).into(),
        ];
        self.reply(request, MessageClass::SuccessResponse, attrs, true)
    }

    fn ok(&self, request: &Msg, attrs: Vec<Attr>) -> Vec<u8> {
        self.reply(request, MessageClass::SuccessResponse, attrs, true)
    }
}

fn transmits(a: &mut Allocation) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| a.poll_transmit())
        .map(|t| {
            assert_eq!(t.dst, server());
            t.payload
        })
        .collect()
}

fn one(a: &mut Allocation) -> Vec<u8> {
    let mut all = transmits(a);
    assert_eq!(all.len(), 1, "expected exactly one datagram");
    all.remove(0)
}

fn events(a: &mut Allocation) -> Vec<TurnEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn input(a: &mut Allocation, now: Instant, bytes: &[u8]) -> Result<(), InputError> {
    a.handle_input(now, server(), bytes)
        .map(|r| assert!(r.is_none()))
}

/// An allocation at `t0` that went through 401 and success.
fn allocated(t0: Instant, lifetime: u32) -> (Allocation, Fake) {
    let fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.allocated(&second, relayed(), lifetime)).unwrap();
    assert!(matches!(events(&mut a)[..], [TurnEvent::Allocated { .. }]));
    (a, fake)
}

#[test]
fn allocate_answers_the_challenge_with_long_term_credentials() {
    let t0 = Instant::now();
    let fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    assert_eq!(first.method(), ALLOCATE);
    assert_eq!(
        first
            .get_attribute::<RequestedTransport>()
            .map(|r| r.protocol()),
        Some(17)
    );
    assert!(first.get_attribute::<MessageIntegrity>().is_none());
    assert!(first.get_attribute::<Username>().is_none());

    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    assert_ne!(second.transaction_id(), first.transaction_id());
    assert_eq!(second.get_attribute::<Username>().unwrap().name(), USER);
    assert_eq!(second.get_attribute::<Realm>().unwrap().text(), REALM);
    assert!(
        fake.signed_ok(&second),
        "MESSAGE-INTEGRITY must be MD5(user:realm:password)-keyed"
    );
    assert!(second.get_attribute::<RequestedTransport>().is_some());

    input(&mut a, t0, &fake.allocated(&second, relayed(), 600)).unwrap();
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::Allocated {
            relayed: relayed(),
            mapped: mapped(),
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(a.relayed_address(), Some(relayed()));
    assert_eq!(a.mapped_address(), Some(mapped()));
    // The first answer is now stale: a replay is an unknown transaction.
    assert_eq!(
        input(&mut a, t0, &fake.challenge(&first)),
        Err(InputError::UnknownTransaction)
    );
}

#[test]
fn a_stale_nonce_is_retried_with_the_new_one_a_few_times_only() {
    let t0 = Instant::now();
    let mut fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    fake.nonce = "nonce-2".into();
    input(&mut a, t0, &fake.error(&second, 438, false)).unwrap();
    let third = fake.request(&one(&mut a));
    assert_eq!(third.get_attribute::<Nonce>().unwrap().value(), "nonce-2");
    assert!(fake.signed_ok(&third));
    input(&mut a, t0, &fake.allocated(&third, relayed(), 600)).unwrap();
    assert!(a.is_allocated());

    // A server that keeps calling every nonce stale ends the attempt.
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    for round in 0..=MAX_STALE_NONCE {
        let req = fake.request(&one(&mut a));
        fake.nonce = format!("nonce-round-{round}");
        input(&mut a, t0, &fake.error(&req, 438, false)).unwrap();
    }
    assert!(transmits(&mut a).is_empty());
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::AllocationFailed(Failure::Rejected {
            code: 438,
            ..
        })]
    ));
    assert!(a.is_finished());
}

#[test]
fn the_allocation_is_refreshed_at_80_percent_or_60_s_before_its_end() {
    assert_eq!(
        refresh_after(Duration::from_secs(600)),
        Duration::from_secs(480)
    );
    assert_eq!(
        refresh_after(Duration::from_secs(3600)),
        Duration::from_secs(2880)
    );
    assert_eq!(
        refresh_after(Duration::from_secs(100)),
        Duration::from_secs(40)
    );
    assert_eq!(
        refresh_after(Duration::from_secs(30)),
        Duration::from_secs(15)
    );

    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 600);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(480)));
    a.handle_timeout(t0 + Duration::from_secs(479));
    assert!(transmits(&mut a).is_empty());
    let t1 = t0 + Duration::from_secs(480);
    a.handle_timeout(t1);
    let refresh = fake.request(&one(&mut a));
    assert_eq!(refresh.method(), REFRESH);
    assert_eq!(
        refresh.get_attribute::<Lifetime>().unwrap().lifetime(),
        Duration::from_secs(600)
    );
    assert!(fake.signed_ok(&refresh));
    let answer = fake.ok(&refresh, vec![Lifetime::from_u32(300).into()]);
    input(&mut a, t1, &answer).unwrap();
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::Refreshed {
            lifetime: Duration::from_secs(300)
        }]
    );
    // 300 s granted: next refresh 240 s after the refresh was sent.
    assert_eq!(a.poll_timeout(), Some(t1 + Duration::from_secs(240)));
}

#[test]
fn permissions_and_channels_are_refreshed_before_they_expire() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 3600);
    a.create_permission(t0, "203.0.113.50".parse().unwrap())
        .unwrap();
    let perm = fake.request(&one(&mut a));
    assert_eq!(perm.method(), CREATE_PERMISSION);
    assert_eq!(
        perm.get_attribute::<XorPeerAddress>()
            .unwrap()
            .address()
            .ip(),
        "203.0.113.50".parse::<IpAddr>().unwrap()
    );
    assert!(fake.signed_ok(&perm));
    input(&mut a, t0, &fake.ok(&perm, vec![])).unwrap();

    let channel = a.bind_channel(t0, peer()).unwrap();
    assert_eq!(channel, 0x4000);
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    // The channel's peer gets its own permission too.
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert!(fake.signed_ok(r));
        input(&mut a, t0, &fake.ok(r, vec![])).unwrap();
    }
    let bind = reqs.iter().find(|r| r.method() == CHANNEL_BIND).unwrap();
    assert_eq!(
        bind.get_attribute::<ChannelNumber>().unwrap().value(),
        0x4000
    );
    assert_eq!(
        bind.get_attribute::<XorPeerAddress>().unwrap().address(),
        peer()
    );
    let got = events(&mut a);
    assert!(got.contains(&TurnEvent::PermissionCreated {
        peer: "203.0.113.50".parse().unwrap()
    }));
    assert!(got.contains(&TurnEvent::PermissionCreated { peer: peer().ip() }));
    assert!(got.contains(&TurnEvent::ChannelBound {
        peer: peer(),
        channel: 0x4000
    }));
    assert_eq!(a.bind_channel(t0, peer()).unwrap(), 0x4000, "idempotent");
    let other: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    assert_eq!(a.bind_channel(t0, other).unwrap(), 0x4001);
    for b in transmits(&mut a) {
        let r = fake.request(&b);
        input(&mut a, t0, &fake.ok(&r, vec![])).unwrap();
    }
    events(&mut a);

    assert_eq!(a.poll_timeout(), Some(t0 + PERMISSION_REFRESH));
    a.handle_timeout(t0 + PERMISSION_REFRESH);
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.method() == CREATE_PERMISSION));
    let t1 = t0 + PERMISSION_REFRESH;
    for r in &reqs {
        input(&mut a, t1, &fake.ok(r, vec![])).unwrap();
    }
    assert!(
        events(&mut a).is_empty(),
        "a refresh is not a new permission"
    );
    // Next: the permissions again at 480 s, the channels at 540 s.
    assert_eq!(a.poll_timeout(), Some(t1 + PERMISSION_REFRESH));
    a.handle_timeout(t1 + PERMISSION_REFRESH);
    for b in transmits(&mut a) {
        let r = fake.request(&b);
        input(&mut a, t1 + PERMISSION_REFRESH, &fake.ok(&r, vec![])).unwrap();
    }
    assert_eq!(a.poll_timeout(), Some(t0 + CHANNEL_REFRESH));
    a.handle_timeout(t0 + CHANNEL_REFRESH);
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    assert_eq!(reqs.len(), 2);
    let mut numbers: Vec<u16> = reqs
        .iter()
        .map(|r| {
            assert_eq!(r.method(), CHANNEL_BIND);
            r.get_attribute::<ChannelNumber>().unwrap().value()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, vec![0x4000, 0x4001]);
}

#[test]
fn requests_are_retransmitted_with_backoff_then_given_up() {
    let t0 = Instant::now();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = one(&mut a);
    let mut now = t0;
    let mut sends = vec![Duration::ZERO];
    while let Some(at) = a.poll_timeout() {
        now = at;
        a.handle_timeout(now);
        for t in transmits(&mut a) {
            assert_eq!(t, first, "a retransmission is the same bytes");
            sends.push(now - t0);
        }
        assert!(now - t0 < Duration::from_secs(60));
    }
    let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(now - t0, Duration::from_millis(39_500));
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::AllocationFailed(Failure::NoResponse {
            method: "Allocate",
            tries: 7
        })]
    );
    assert!(a.is_finished());
}

#[test]
fn a_server_that_stops_answering_refreshes_loses_the_allocation() {
    let t0 = Instant::now();
    let (mut a, _fake) = allocated(t0, 600);
    a.bind_channel(t0, peer()).unwrap();
    let mut now = t0;
    let mut lost = None;
    while let Some(at) = a.poll_timeout() {
        now = at;
        a.handle_timeout(now);
        transmits(&mut a);
        for e in events(&mut a) {
            lost = Some(e);
        }
    }
    // The unanswered CreatePermission/ChannelBind give up after 39.5 s.
    assert!(matches!(
        lost,
        Some(TurnEvent::AllocationLost(Failure::NoResponse {
            tries: 7,
            ..
        }))
    ));
    assert_eq!(now - t0, Duration::from_millis(39_500));
    assert_eq!(
        a.encapsulate(peer(), b"x"),
        Err(TurnError::Finished),
        "nothing is sent through a lost allocation"
    );

    // Only the Refresh unanswered: lost before the lifetime ends.
    let (mut a, _fake) = allocated(t0, 600);
    let mut now = t0;
    while let Some(at) = a.poll_timeout() {
        now = at;
        a.handle_timeout(now);
        transmits(&mut a);
    }
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::AllocationLost(Failure::NoResponse {
            method: "Refresh",
            tries: 7
        })]
    );
    assert_eq!(now - t0, Duration::from_millis(480_000 + 39_500));
}

#[test]
fn refused_credentials_wait_for_new_ones() {
    let t0 = Instant::now();
    let (mut a, mut fake) = allocated(t0, 600);
    let t1 = t0 + Duration::from_secs(480);
    a.handle_timeout(t1);
    let refresh = fake.request(&one(&mut a));
    // The credentials expired on the server.
    input(&mut a, t1, &fake.challenge(&refresh)).unwrap();
    assert_eq!(events(&mut a), vec![TurnEvent::CredentialsNeeded]);
    assert!(transmits(&mut a).is_empty());
    // Permissions asked for meanwhile wait too.
    a.create_permission(t1, peer().ip()).unwrap();
    assert!(transmits(&mut a).is_empty());

    fake.password = "pw-two".into();
    let t2 = t1 + Duration::from_secs(5);
    a.update_credentials(t2, creds("1700000600:device-1", "pw-two"));
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.get_attribute::<Username>().unwrap().name(),
            "1700000600:device-1"
        );
        assert!(fake.signed_ok(r));
        let attrs = if r.method() == REFRESH {
            vec![Lifetime::from_u32(600).into()]
        } else {
            vec![]
        };
        input(&mut a, t2, &fake.ok(r, attrs)).unwrap();
    }
    let got = events(&mut a);
    assert!(got.contains(&TurnEvent::Refreshed {
        lifetime: Duration::from_secs(600)
    }));
    assert!(got.contains(&TurnEvent::PermissionCreated { peer: peer().ip() }));

    // Credentials updated while a request was in flight: its 401 is
    // answered with the new ones at once, without asking.
    let t3 = t2 + Duration::from_secs(480);
    a.handle_timeout(t3);
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    let refresh = reqs.iter().find(|r| r.method() == REFRESH).unwrap();
    // (The permission's refresh came due too; it goes through.)
    for r in reqs.iter().filter(|r| r.method() != REFRESH) {
        input(&mut a, t3, &fake.ok(r, vec![])).unwrap();
    }
    a.update_credentials(t3, creds("1700001200:device-1", "pw-three"));
    fake.password = "pw-three".into();
    input(&mut a, t3, &fake.challenge(refresh)).unwrap();
    assert!(events(&mut a).is_empty());
    let again = fake.request(&one(&mut a));
    assert!(fake.signed_ok(&again));

    // No new credentials before the end: lost, as Unauthorized.
    input(&mut a, t3, &fake.challenge(&again)).unwrap();
    assert_eq!(events(&mut a), vec![TurnEvent::CredentialsNeeded]);
    while let Some(at) = a.poll_timeout() {
        a.handle_timeout(at);
        transmits(&mut a);
    }
    let got = events(&mut a);
    assert_eq!(
        got.last(),
        Some(&TurnEvent::AllocationLost(Failure::Unauthorized))
    );
}

#[test]
fn new_credentials_wait_until_the_current_ones_are_refused() {
    let t0 = Instant::now();
    let (mut a, mut fake) = allocated(t0, 600);
    a.update_credentials(t0, creds("1700009999:device-1", "pw-new"));
    a.create_permission(t0, peer().ip()).unwrap();
    let perm = fake.request(&one(&mut a));
    assert_eq!(perm.get_attribute::<Username>().unwrap().name(), USER);
    assert!(fake.signed_ok(&perm));
    input(&mut a, t0, &fake.ok(&perm, vec![])).unwrap();
    // The old ones expire: the 401 switches to the new ones, unasked.
    let t1 = t0 + PERMISSION_REFRESH;
    a.handle_timeout(t1);
    let perm = fake.request(&one(&mut a));
    input(&mut a, t1, &fake.challenge(&perm)).unwrap();
    fake.password = "pw-new".into();
    let again = fake.request(&one(&mut a));
    assert_eq!(
        again.get_attribute::<Username>().unwrap().name(),
        "1700009999:device-1"
    );
    assert!(fake.signed_ok(&again));
    assert!(events(&mut a)
        .iter()
        .all(|e| *e != TurnEvent::CredentialsNeeded));
    // A server that ties the allocation to the first username (coturn)
    // answers 441 unsigned: the allocation is lost, the caller re-allocates.
    let mut refused = Msg::new(
        MessageClass::ErrorResponse,
        CREATE_PERMISSION,
        again.transaction_id(),
    );
    refused.add_attribute(ErrorCode::new(441, "Wrong Credentials\0\0\0".into()).unwrap());
    let bytes = MessageEncoder::new().encode_into_bytes(refused).unwrap();
    input(&mut a, t1, &bytes).unwrap();
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::AllocationLost(Failure::Rejected {
            method: "CreatePermission",
            code: 441,
            reason: "Wrong Credentials".into()
        })]
    );
}

#[test]
fn an_allocate_with_refused_credentials_fails_after_a_wait() {
    let t0 = Instant::now();
    let fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, "wrong"));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    assert!(!fake.signed_ok(&second));
    input(&mut a, t0, &fake.challenge(&second)).unwrap();
    assert_eq!(events(&mut a), vec![TurnEvent::CredentialsNeeded]);
    assert_eq!(a.poll_timeout(), Some(t0 + CREDENTIAL_WAIT));
    a.handle_timeout(t0 + CREDENTIAL_WAIT);
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::AllocationFailed(Failure::Unauthorized)]
    );
}

#[test]
fn data_goes_as_send_indications_then_channel_data_and_comes_back() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 600);
    assert_eq!(
        a.encapsulate(peer(), b"hello"),
        Err(TurnError::NoPermission(peer().ip()))
    );
    let channel = a.bind_channel(t0, peer()).unwrap();
    // Before the binding is confirmed: a Send indication.
    let send = a.encapsulate(peer(), b"hello").unwrap();
    assert_eq!(send.dst, server());
    let m = decode(&send.payload).unwrap();
    assert_eq!((m.class(), m.method()), (MessageClass::Indication, SEND));
    assert_eq!(
        m.get_attribute::<XorPeerAddress>().unwrap().address(),
        peer()
    );
    assert_eq!(m.get_attribute::<Data>().unwrap().data(), b"hello");
    for b in transmits(&mut a) {
        let r = fake.request(&b);
        input(&mut a, t0, &fake.ok(&r, vec![])).unwrap();
    }
    // Bound: ChannelData, unpadded.
    let cd = a.encapsulate(peer(), b"hello").unwrap();
    assert_eq!(cd.payload, [&[0x40, 0x00, 0, 5][..], b"hello"].concat());
    assert_eq!(
        classify(&cd.payload),
        Ok(Datagram::ChannelData {
            channel,
            payload: b"hello"
        })
    );
    let mut buf = Vec::new();
    a.encapsulate_into(peer(), b"again", &mut buf).unwrap();
    assert_eq!(&buf[4..], b"again");

    // Incoming ChannelData (padded, as a server may send it).
    let incoming = [&[0x40, 0x00, 0, 3][..], b"abc", &[0]].concat();
    let got = a.handle_input(t0, server(), &incoming).unwrap().unwrap();
    assert_eq!(got.peer, peer());
    assert_eq!(&got.payload[..], b"abc");
    assert!(matches!(got.payload, Cow::Borrowed(_)));
    assert_eq!(
        a.handle_input(t0, server(), &[0x40, 0x07, 0, 1, 9]),
        Err(InputError::UnknownChannel(0x4007))
    );
    // From anyone but the server: ignored.
    assert_eq!(
        a.handle_input(t0, peer(), &incoming),
        Err(InputError::NotFromServer(peer()))
    );

    // A Data indication from a permitted peer (another port is fine:
    // permissions are per IP).
    let from: SocketAddr = "203.0.113.9:9999".parse().unwrap();
    let data = data_indication(from, b"xyz");
    let got = a.handle_input(t0, server(), &data).unwrap().unwrap();
    assert_eq!((got.peer, &got.payload[..]), (from, &b"xyz"[..]));
    let stranger: SocketAddr = "203.0.113.66:1".parse().unwrap();
    assert_eq!(
        a.handle_input(t0, server(), &data_indication(stranger, b"no")),
        Err(InputError::NoPermission(stranger.ip()))
    );
    // Wrong family and oversized payloads are refused before sending.
    assert!(matches!(
        a.encapsulate("[2001:db8::1]:1".parse().unwrap(), b"x"),
        Err(TurnError::AddressFamily { .. })
    ));
    assert_eq!(
        a.encapsulate(peer(), &vec![0; MAX_PAYLOAD + 1]),
        Err(TurnError::TooLarge(MAX_PAYLOAD + 1))
    );
}

/// Found by the `stun_turn` fuzz target: ChannelData on a channel whose
/// ChannelBind was only sent, and a Data indication from a peer whose
/// permission was only asked for, were handed on as the peer's data.
#[test]
fn data_is_accepted_only_on_channels_and_permissions_the_server_confirmed() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 600);
    let channel = a.bind_channel(t0, peer()).unwrap();
    let incoming = [&channel.to_be_bytes()[..], &[0, 3], b"abc", &[0]].concat();
    assert_eq!(
        a.handle_input(t0, server(), &incoming),
        Err(InputError::ChannelNotBound(channel))
    );
    assert_eq!(
        a.handle_input(t0, server(), &data_indication(peer(), b"xyz")),
        Err(InputError::NoPermission(peer().ip()))
    );
    for b in transmits(&mut a) {
        let r = fake.request(&b);
        input(&mut a, t0, &fake.ok(&r, vec![])).unwrap();
    }
    assert!(a.has_permission(peer().ip()) && a.is_channel_bound(peer()));
    let got = a.handle_input(t0, server(), &incoming).unwrap().unwrap();
    assert_eq!((got.peer, &got.payload[..]), (peer(), &b"abc"[..]));
    let data = data_indication(peer(), b"xyz");
    let got = a.handle_input(t0, server(), &data).unwrap().unwrap();
    assert_eq!(&got.payload[..], b"xyz");

    // Before the allocation exists, a bound-looking channel is no channel.
    let mut early = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let channel = early.bind_channel(t0, peer()).unwrap();
    let incoming = [&channel.to_be_bytes()[..], &[0, 1, 7]].concat();
    assert_eq!(
        early.handle_input(t0, server(), &incoming),
        Err(InputError::ChannelNotBound(channel))
    );
}

fn data_indication(from: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut m = Msg::new(MessageClass::Indication, DATA, TransactionId::new([5; 12]));
    m.add_attribute(XorPeerAddress::new(from));
    m.add_attribute(Data::new(payload.to_vec()).unwrap());
    MessageEncoder::new().encode_into_bytes(m).unwrap()
}

#[test]
fn answers_that_fail_validation_are_ignored() {
    let t0 = Instant::now();
    let fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));

    // Another transaction id.
    let mut forged = Msg::new(
        MessageClass::SuccessResponse,
        ALLOCATE,
        TransactionId::new([9; 12]),
    );
    forged.add_attribute(XorRelayAddress::new(relayed()));
    let bytes = MessageEncoder::new().encode_into_bytes(forged).unwrap();
    assert_eq!(
        input(&mut a, t0, &bytes),
        Err(InputError::UnknownTransaction)
    );
    // A success without MESSAGE-INTEGRITY.
    let unsigned = fake.reply(
        &second,
        MessageClass::SuccessResponse,
        vec![
            XorRelayAddress::new(relayed()).into(),
            XorMappedAddress::new(mapped()).into(),
            Lifetime::from_u32(600).into(),
        ],
        false,
    );
    assert_eq!(
        input(&mut a, t0, &unsigned),
        Err(InputError::MissingIntegrity)
    );
    // Signed with another password.
    let wrong = Fake {
        nonce: fake.nonce.clone(),
        password: "other".into(),
    };
    assert_eq!(
        input(&mut a, t0, &wrong.allocated(&second, relayed(), 600)),
        Err(InputError::BadIntegrity)
    );
    // A signed 403 can't come unsigned.
    assert_eq!(
        input(&mut a, t0, &fake.error(&second, 403, false)),
        Err(InputError::MissingIntegrity)
    );
    // The right method is checked too.
    let mut other_method = Msg::new(
        MessageClass::SuccessResponse,
        REFRESH,
        second.transaction_id(),
    );
    other_method.add_attribute(Lifetime::from_u32(600));
    let bytes = MessageEncoder::new()
        .encode_into_bytes(other_method)
        .unwrap();
    assert_eq!(input(&mut a, t0, &bytes), Err(InputError::WrongMethod));
    // A request from the server is not something a client answers.
    let req = Msg::new(MessageClass::Request, ALLOCATE, TransactionId::new([1; 12]));
    let bytes = MessageEncoder::new().encode_into_bytes(req).unwrap();
    assert!(matches!(
        input(&mut a, t0, &bytes),
        Err(InputError::Unexpected(_))
    ));
    // A corrupted FINGERPRINT.
    let mut good = fake.allocated(&second, relayed(), 600);
    let n = good.len();
    good[n - 1] ^= 1;
    assert_eq!(input(&mut a, t0, &good), Err(InputError::BrokenAttribute));
    // None of this disturbed the transaction.
    assert!(events(&mut a).is_empty());
    input(&mut a, t0, &fake.allocated(&second, relayed(), 600)).unwrap();
    assert!(a.is_allocated());
}

#[test]
fn unreachable_relayed_addresses_and_missing_attributes_fail_the_allocation() {
    let t0 = Instant::now();
    let fake = Fake::new();
    let bad: [SocketAddr; 4] = [
        "0.0.0.0:5000".parse().unwrap(),
        "224.0.0.1:5000".parse().unwrap(),
        "255.255.255.255:5000".parse().unwrap(),
        "192.0.2.1:0".parse().unwrap(),
    ];
    for relayed in bad {
        let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
        let first = fake.request(&one(&mut a));
        input(&mut a, t0, &fake.challenge(&first)).unwrap();
        let second = fake.request(&one(&mut a));
        input(&mut a, t0, &fake.allocated(&second, relayed, 600)).unwrap();
        assert_eq!(
            events(&mut a),
            vec![TurnEvent::AllocationFailed(Failure::BadRelayedAddress(
                relayed
            ))]
        );
        assert_eq!(a.poll_timeout(), None);
    }
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    let answer = fake.ok(&second, vec![XorMappedAddress::new(mapped()).into()]);
    input(&mut a, t0, &answer).unwrap();
    assert_eq!(
        events(&mut a),
        vec![TurnEvent::AllocationFailed(Failure::MissingAttribute {
            method: "Allocate",
            attribute: "XOR-RELAYED-ADDRESS"
        })]
    );
    // A 401 without a nonce can't be answered.
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    let no_nonce = fake.reply(
        &first,
        MessageClass::ErrorResponse,
        vec![
            ErrorCode::new(401, "Unauthorized".into()).unwrap().into(),
            Realm::new(REALM.into()).unwrap().into(),
        ],
        false,
    );
    input(&mut a, t0, &no_nonce).unwrap();
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::AllocationFailed(Failure::MissingAttribute {
            attribute: "NONCE",
            ..
        })]
    ));
}

#[test]
fn refused_permissions_are_forgotten_and_mismatches_lose_the_allocation() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 600);
    a.create_permission(t0, peer().ip()).unwrap();
    let req = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.error(&req, 403, true)).unwrap();
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::PermissionFailed {
            reason: Failure::Rejected { code: 403, .. },
            ..
        }]
    ));
    assert_eq!(
        a.encapsulate(peer(), b"x"),
        Err(TurnError::NoPermission(peer().ip()))
    );
    assert_eq!(
        a.create_permission(t0, "224.0.0.5".parse().unwrap()),
        Err(TurnError::BadPeer("224.0.0.5".parse().unwrap()))
    );
    a.bind_channel(t0, peer()).unwrap();
    let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
    let bind = reqs.iter().find(|r| r.method() == CHANNEL_BIND).unwrap();
    input(&mut a, t0, &fake.error(bind, 437, true)).unwrap();
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::AllocationLost(Failure::Rejected {
            code: 437,
            ..
        })]
    ));
}

#[test]
fn removed_peers_stop_refreshing_and_their_channel_waits() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 3600);
    assert_eq!(a.bind_channel(t0, peer()).unwrap(), 0x4000);
    for b in transmits(&mut a) {
        let r = fake.request(&b);
        input(&mut a, t0, &fake.ok(&r, vec![])).unwrap();
    }
    a.remove_peer(t0, peer().ip());
    assert!(!a.has_permission(peer().ip()));
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(2880)));
    let next: SocketAddr = "203.0.113.10:1".parse().unwrap();
    assert_eq!(
        a.bind_channel(t0, next).unwrap(),
        0x4001,
        "0x4000 is quarantined"
    );
    // ChannelData on the old channel is no longer accepted.
    assert_eq!(
        a.handle_input(t0, server(), &[0x40, 0x00, 0, 1, 7]),
        Err(InputError::UnknownChannel(0x4000))
    );
}

#[test]
fn an_old_allocation_on_our_address_is_deallocated_once() {
    let t0 = Instant::now();
    let fake = Fake::new();
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.error(&second, 437, true)).unwrap();
    let reclaim = fake.request(&one(&mut a));
    assert_eq!(reclaim.method(), REFRESH);
    assert_eq!(
        reclaim.get_attribute::<Lifetime>().unwrap().lifetime(),
        Duration::ZERO
    );
    assert!(fake.signed_ok(&reclaim));
    input(
        &mut a,
        t0,
        &fake.ok(&reclaim, vec![Lifetime::from_u32(0).into()]),
    )
    .unwrap();
    assert!(transmits(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(t0 + RECLAIM_PAUSE));
    a.handle_timeout(t0 + RECLAIM_PAUSE);
    let third = fake.request(&one(&mut a));
    assert_eq!(third.method(), ALLOCATE);
    // Only once: a second 437 fails the allocation.
    input(&mut a, t0, &fake.error(&third, 437, true)).unwrap();
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::AllocationFailed(Failure::Rejected {
            code: 437,
            ..
        })]
    ));
}

#[test]
fn close_deallocates() {
    let t0 = Instant::now();
    let (mut a, fake) = allocated(t0, 600);
    a.close(t0);
    let req = fake.request(&one(&mut a));
    assert_eq!(req.method(), REFRESH);
    assert_eq!(
        req.get_attribute::<Lifetime>().unwrap().lifetime(),
        Duration::ZERO
    );
    assert!(fake.signed_ok(&req));
    input(
        &mut a,
        t0,
        &fake.ok(&req, vec![Lifetime::from_u32(0).into()]),
    )
    .unwrap();
    assert_eq!(events(&mut a), vec![TurnEvent::Closed]);
    assert!(a.is_finished());
    assert_eq!(a.poll_timeout(), None);

    // Closed while allocating: deallocated once the Allocate succeeds.
    let mut a = Allocation::new(t0, server(), creds(USER, PASSWORD));
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    a.close(t0);
    input(&mut a, t0, &fake.allocated(&second, relayed(), 600)).unwrap();
    let dealloc = fake.request(&one(&mut a));
    assert_eq!(
        dealloc.get_attribute::<Lifetime>().unwrap().lifetime(),
        Duration::ZERO
    );
    input(&mut a, t0, &fake.error(&dealloc, 437, true)).unwrap();
    let got = events(&mut a);
    assert_eq!(got.last(), Some(&TurnEvent::Closed));
}

#[test]
fn credentials_never_show_their_password() {
    let c = creds(USER, "s3cret-pw");
    let shown = format!("{c:?}");
    assert!(
        shown.contains(USER) && !shown.contains("s3cret-pw"),
        "{shown}"
    );
    let a = Allocation::new(Instant::now(), server(), c);
    assert!(!format!("{a:?}").contains("s3cret-pw"));
    assert_eq!(
        Credentials::new("u".repeat(600), "p").map(|_| ()),
        Err(TurnError::BadCredentials)
    );
}

proptest! {
    /// Any bytes from the server: a typed error or a use, never a panic,
    /// and the allocation still works afterwards.
    #[test]
    fn garbage_from_the_server_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let t0 = Instant::now();
        let (mut a, fake) = allocated(t0, 600);
        a.bind_channel(t0, peer()).unwrap();
        let reqs: Vec<Msg> = transmits(&mut a).iter().map(|b| fake.request(b)).collect();
        let _ = a.handle_input(t0, server(), &bytes);
        // STUN-shaped: a valid header, random attributes, and once with
        // the transaction id of an outstanding request.
        for (class, id) in [(0x01u8, [7u8; 12]), (0x01, *reqs[0].transaction_id().as_bytes())] {
            let len = body.len() / 4 * 4;
            let mut m = vec![class, 0x08, (len >> 8) as u8, len as u8, 0x21, 0x12, 0xA4, 0x42];
            m.extend_from_slice(&id);
            m.extend_from_slice(&body[..len]);
            let _ = a.handle_input(t0, server(), &m);
        }
        prop_assert!(!a.is_finished());
        let _ = events(&mut a);
        for r in &reqs {
            let _ = a.handle_input(t0, server(), &fake.ok(r, vec![]));
        }
        prop_assert!(a.is_channel_bound(peer()));
    }
}

#[test]
fn a_tighter_budget_and_an_early_refresh_find_a_dead_server_sooner() {
    assert_eq!(
        Retransmission::default().budget(),
        Duration::from_millis(39_500)
    );
    let tight = Retransmission {
        rto: Duration::from_millis(250),
        max_sends: 4,
    };
    // Sends at 0, 0.25, 0.75, 1.75 s, then 4 s for the last answer.
    assert_eq!(tight.budget(), Duration::from_millis(5_750));

    let t0 = Instant::now();
    let fake = Fake::new();
    let mut a = Allocation::with_retransmission(t0, server(), creds(USER, PASSWORD), tight);
    let first = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.challenge(&first)).unwrap();
    let second = fake.request(&one(&mut a));
    input(&mut a, t0, &fake.allocated(&second, relayed(), 600)).unwrap();
    events(&mut a);
    // The relayed path went quiet at 10 s: probe instead of waiting for
    // the refresh at 480 s.
    let t1 = t0 + Duration::from_secs(10);
    a.refresh(t1);
    let probe = fake.request(&one(&mut a));
    assert_eq!(probe.method(), REFRESH);
    a.refresh(t1);
    assert!(transmits(&mut a).is_empty(), "one probe at a time");
    let mut now = t1;
    while let Some(at) = a.poll_timeout() {
        now = at;
        a.handle_timeout(now);
        transmits(&mut a);
    }
    assert_eq!(now - t1, tight.budget());
    assert!(matches!(
        events(&mut a)[..],
        [TurnEvent::AllocationLost(Failure::NoResponse {
            tries: 4,
            ..
        })]
    ));
}
