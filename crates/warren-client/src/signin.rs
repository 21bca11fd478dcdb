//! Signing in: normalize the coordinator URL and check it and the token
//! against the coordinator (`GET /api/v1/me`) before anything is stored.
//! Every error says what to do next; the CLI and the app show it as it is.

use std::time::Duration;
use warren_proto::control::{ApiError, Me, TokenKind, ME_PATH};
use warren_proto::Secret;

const ME_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns what a person typed into `scheme://host[:port]`, or says what is
/// wrong with it.
pub fn normalize_url(input: &str) -> Result<String, SignInError> {
    normalize(input).map_err(SignInError::BadUrl)
}

fn normalize(input: &str) -> Result<String, String> {
    let input = input.trim();
    if !input.contains("://") {
        return Err(format!(
            "{input:?} has no scheme; use the full address, e.g. https://{input}"
        ));
    }
    let url =
        reqwest::Url::parse(input).map_err(|e| format!("{input:?} is not a valid URL: {e}"))?;
    if url.host_str().is_none() {
        return Err(format!("{input:?} has no host name"));
    }
    match url.scheme() {
        // The helper checks the same rule again on `Start`.
        "https" | "http" => warren_proto::limits::check_coordinator_scheme(url.as_str())
            .map_err(|problem| format!("{input}: {problem}"))?,
        other => {
            return Err(format!(
                "{input}: unsupported scheme {other:?}; use https://"
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{input}: don't put credentials in the URL; give the token separately"
        ));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!(
            "{input}: give only the coordinator's address, without a path (e.g. {}://{})",
            url.scheme(),
            host_port(&url)
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{input}: give only the coordinator's address, without ?query or #fragment"
        ));
    }
    Ok(format!("{}://{}", url.scheme(), host_port(&url)))
}

fn host_port(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The innermost cause of an error, which is usually the telling one
/// ("Connection refused", "UnknownIssuer").
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

pub(crate) fn is_certificate_error(chain: &[String]) -> bool {
    chain.iter().any(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("certificate") || c.contains("unknownissuer") || c.contains("invalid peer")
    })
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The address typed is not one we accept (the text says why).
    #[error("{0}")]
    BadUrl(String),
    #[error(
        "the token is empty; create one with `warren-coord token create NAME` and paste it here"
    )]
    EmptyToken,
    #[error("the CA certificate is not a PEM certificate ({0}); paste the whole file, including the BEGIN/END lines")]
    BadCa(String),
    #[error("the coordinator at {url} presented a certificate this computer doesn't trust ({cause}). If it uses its own CA, add that CA certificate (app: Advanced → CA certificate; CLI: `--ca ca.pem`)")]
    Certificate { url: String, cause: String },
    #[error("can't reach the coordinator at {url}: {cause}. Check the URL and that the coordinator is running")]
    Unreachable { url: String, cause: String },
    #[error("the coordinator rejected this token — create a new one with `warren-coord token create NAME` and sign in again")]
    WrongToken,
    #[error("{url} doesn't look like a Warren coordinator (GET {ME_PATH} answered HTTP {status}). Check the URL")]
    NotACoordinator { url: String, status: u16 },
    #[error("the coordinator refused the sign-in: {message} ({code})")]
    Refused { message: String, code: String },
    #[error("that is an agent token; use a user token (create one with `warren-coord token create {user}`)")]
    AgentToken { user: String },
}

/// The HTTP client every sign-in request uses: rustls, our user agent and
/// the deployment's own CA when it has one.
pub(crate) fn http_client(
    timeout: Duration,
    ca_pem: Option<&str>,
) -> Result<reqwest::Client, SignInError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .use_rustls_tls()
        .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem.filter(|p| !p.trim().is_empty()) {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| SignInError::BadCa(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| SignInError::BadCa(e.to_string()))
}

/// Asks the coordinator who `token` belongs to. Every error says what to do.
pub async fn validate(url: &str, token: &Secret, ca_pem: Option<&str>) -> Result<Me, SignInError> {
    if token.expose().trim().is_empty() {
        return Err(SignInError::EmptyToken);
    }
    let client = http_client(ME_TIMEOUT, ca_pem)?;
    let unreachable = |cause: String| SignInError::Unreachable {
        url: url.to_string(),
        cause,
    };
    let resp = client
        .get(format!("{url}{ME_PATH}"))
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| {
            let chain = causes(&e);
            let cause = chain.last().cloned().unwrap_or_default();
            if is_certificate_error(&chain) {
                SignInError::Certificate {
                    url: url.to_string(),
                    cause,
                }
            } else if e.is_timeout() {
                unreachable(format!("no answer within {} s", ME_TIMEOUT.as_secs()))
            } else {
                unreachable(cause)
            }
        })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| {
        unreachable(format!(
            "the answer was cut off ({})",
            causes(&e).last().cloned().unwrap_or_default()
        ))
    })?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(SignInError::WrongToken);
    }
    let not_warren = || SignInError::NotACoordinator {
        url: url.to_string(),
        status: status.as_u16(),
    };
    if !status.is_success() {
        return match serde_json::from_slice::<ApiError>(&body) {
            Ok(api) if status != reqwest::StatusCode::NOT_FOUND => Err(SignInError::Refused {
                message: api.message,
                code: api.error,
            }),
            _ => Err(not_warren()),
        };
    }
    let me: Me = serde_json::from_slice(&body).map_err(|_| not_warren())?;
    if me.kind == TokenKind::Agent {
        return Err(SignInError::AgentToken { user: me.user });
    }
    Ok(me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_good_urls() {
        let cases = [
            ("https://warren.example.com", "https://warren.example.com"),
            ("https://warren.example.com/", "https://warren.example.com"),
            (
                "  https://Warren.Example.com:8443/ ",
                "https://warren.example.com:8443",
            ),
            (
                "https://warren.example.com:443",
                "https://warren.example.com",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:3000/", "http://localhost:3000"),
            ("http://[::1]:9000", "http://[::1]:9000"),
            ("http://127.8.9.10", "http://127.8.9.10"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_bad_urls_with_a_hint() {
        let cases = [
            ("warren.example.com", "https://warren.example.com"),
            ("http://warren.example.com", "use https://"),
            ("http://10.0.0.1:8080", "use https://"),
            ("http://127.0.0.1.example.com", "use https://"),
            ("http://[fd00::1]:80", "unencrypted"),
            ("ftp://warren.example.com", "unsupported scheme"),
            ("https://warren.example.com/api", "without a path"),
            ("https://warren.example.com/?x=1", "without ?query"),
            ("https://warren.example.com/#top", "without ?query"),
            (
                "https://user:pw@warren.example.com",
                "don't put credentials",
            ),
            ("https://", "not a valid URL"),
        ];
        for (input, hint) in cases {
            let err = normalize_url(input).unwrap_err().to_string();
            assert!(err.contains(hint), "{input}: {err}");
        }
    }

    #[test]
    fn certificate_errors_are_recognized() {
        let chain = vec![
            "error sending request".to_string(),
            "invalid peer certificate: UnknownIssuer".to_string(),
        ];
        assert!(is_certificate_error(&chain));
        assert!(!is_certificate_error(&[
            "Connection refused (os error 111)".to_string()
        ]));
    }

    #[tokio::test]
    async fn unreachable_coordinator_is_explained() {
        // Bind then drop a listener so the port is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let err = validate(&url, &Secret::new("wut_secret.value"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("can't reach the coordinator"), "{err}");
        assert!(err.contains(&url), "{err}");
        assert!(!err.contains("wut_secret"), "{err}");
    }

    /// A one-request HTTP server on loopback answering with `status` and `body`.
    async fn answer_once(status: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
        url
    }

    const DEPLOYMENT: &str =
        r#"{"suffix":"warren","ipv4_prefix":"100.64.0.0/10","ipv6_prefix":"fd00:1::/48"}"#;

    #[tokio::test]
    async fn coordinator_answers_are_mapped() {
        let token = Secret::new("wut_abc.def");
        let url = answer_once(
            "401 Unauthorized",
            r#"{"error":"unauthorized","message":"bad token"}"#,
        )
        .await;
        let err = validate(&url, &token, None).await.unwrap_err().to_string();
        assert!(
            err.contains("rejected this token") && err.contains("token create"),
            "{err}"
        );

        let url = answer_once("404 Not Found", "<html>nope</html>").await;
        let err = validate(&url, &token, None).await.unwrap_err().to_string();
        assert!(
            err.contains("doesn't look like a Warren coordinator"),
            "{err}"
        );

        let url = answer_once("200 OK", "<html>hello</html>").await;
        let err = validate(&url, &token, None).await.unwrap_err().to_string();
        assert!(
            err.contains("doesn't look like a Warren coordinator"),
            "{err}"
        );

        let agent: &'static str = Box::leak(
            format!(r#"{{"kind":"agent","user":"alice","agent_id":"a1","deployment":{DEPLOYMENT},"coordinator_version":"0.1.0"}}"#)
                .into_boxed_str(),
        );
        let url = answer_once("200 OK", agent).await;
        let err = validate(&url, &token, None).await.unwrap_err().to_string();
        assert!(err.contains("agent token"), "{err}");

        let user: &'static str = Box::leak(
            format!(r#"{{"kind":"user","user":"alice","deployment":{DEPLOYMENT},"coordinator_version":"0.1.0"}}"#)
                .into_boxed_str(),
        );
        let url = answer_once("200 OK", user).await;
        let me = validate(&url, &token, None).await.unwrap();
        assert_eq!(me.user, "alice");
    }
}
