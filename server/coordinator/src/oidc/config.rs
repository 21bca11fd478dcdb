//! The `serve` flags for browser sign-in and the identity provider's
//! discovery at start-up.

use anyhow::{bail, Context, Result};
use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::url::{self, Url};
use openidconnect::{
    AuthType, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    RedirectUrl,
};
use std::path::PathBuf;
use std::time::Duration;

/// How long discovery, the code exchange and key fetches may take.
pub const IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity provider client as discovery leaves it.
pub type IdpClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// `token_endpoint_auth_method` values this coordinator speaks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// The address browsers use to reach this coordinator, e.g.
    /// https://warren.example.com (the identity provider sends people back
    /// to PUBLIC_URL/oidc/callback).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The OpenID Connect issuer people sign in with (its discovery
    /// document is read at start-up). Without it, people sign in with
    /// tokens from an administrator.
    #[arg(
        long,
        value_name = "URL",
        requires_all = ["oidc_client_id", "oidc_client_secret_file", "public_url"]
    )]
    pub oidc_issuer: Option<String>,
    /// This coordinator's client id at the identity provider.
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (never logged).
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// How this coordinator authenticates at the provider's token endpoint:
    /// as registered there (HTTP Basic, or the secret in the form body).
    #[arg(long, value_name = "METHOD", value_enum, default_value_t = ClientAuthMethod::ClientSecretBasic, requires = "oidc_issuer")]
    pub oidc_client_auth_method: ClientAuthMethod,
    /// Create a user on their first sign-in, named after their
    /// preferred_username; without it an administrator adds people first.
    #[arg(long, requires = "oidc_issuer")]
    pub oidc_auto_create: bool,
}

/// Whether `url` may be used over plain HTTP: loopback only, where nothing
/// crosses a network.
fn loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a URL flag: https, or http on loopback.
pub fn check_url(flag: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value).with_context(|| {
        format!("{flag} {value:?} is not a URL; give e.g. https://idp.example.com")
    })?;
    match url.scheme() {
        "https" => {}
        "http" if loopback(&url) => {}
        "http" => bail!(
            "{flag} {value} uses plain HTTP; use https (plain HTTP is accepted on loopback addresses only)"
        ),
        other => bail!("{flag} {value} has scheme {other}; use https"),
    }
    if url.host().is_none() {
        bail!("{flag} {value} has no host");
    }
    Ok(url)
}

/// The HTTP client for the identity provider: no redirects (openidconnect
/// requires it, against request forgery), bounded time.
pub fn http_client() -> Result<openidconnect::reqwest::Client> {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(IDP_TIMEOUT)
        .connect_timeout(IDP_TIMEOUT)
        .build()
        .context("cannot set up the HTTP client for the identity provider")
}

/// The client secret from `path`, which only its owner may read (the rule
/// every secret file follows, as the TURN secret's).
fn read_client_secret(path: &std::path::Path) -> Result<String> {
    let cannot_read = || {
        format!(
            "cannot read the OIDC client secret file {}; it must hold the secret the identity provider gave this client",
            path.display()
        )
    };
    let meta = std::fs::metadata(path).with_context(cannot_read)?;
    if !meta.is_file() {
        bail!(
            "the OIDC client secret file {} is not a regular file; point --oidc-client-secret-file at a file holding the client secret",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        warren_proto::secret::check_secret_file_mode(
            "OIDC client secret file",
            path,
            meta.permissions().mode(),
        )?;
    }
    let secret = std::fs::read_to_string(path)
        .with_context(cannot_read)?
        .trim()
        .to_string();
    if secret.is_empty() {
        bail!(
            "the OIDC client secret file {} is empty; put the client secret in it",
            path.display()
        );
    }
    Ok(secret)
}

/// Everything discovery produced.
pub struct Discovered {
    pub client: IdpClient,
    pub idp: Idp,
    pub issuer: String,
    pub public_url: Url,
}

/// Reads the secret and discovers the issuer; `None` without
/// `--oidc-issuer`.
pub async fn discover(args: &OidcArgs) -> Result<Option<Discovered>> {
    let Some(issuer) = &args.oidc_issuer else {
        return Ok(None);
    };
    let (Some(client_id), Some(secret_file), Some(public_url)) = (
        &args.oidc_client_id,
        &args.oidc_client_secret_file,
        &args.public_url,
    ) else {
        bail!("--oidc-issuer needs --oidc-client-id, --oidc-client-secret-file and --public-url");
    };
    check_url("--oidc-issuer", issuer)?;
    let public_url = check_url("--public-url", public_url)?;
    let secret = read_client_secret(secret_file)?;
    let redirect = callback_url(&public_url);
    let idp = Idp {
        issuer_url: IssuerUrl::new(issuer.clone())
            .with_context(|| format!("--oidc-issuer {issuer} is not a valid issuer URL"))?,
        client_id: ClientId::new(client_id.clone()),
        secret: ClientSecret::new(secret),
        redirect: RedirectUrl::new(redirect.clone())
            .with_context(|| format!("the callback address {redirect} is not a valid URL"))?,
        http: http_client()?,
        auth: match args.oidc_client_auth_method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
        },
    };
    let client = idp.discover().await.with_context(|| {
        format!(
            "cannot read the OpenID Connect discovery document of {issuer} ({issuer}/.well-known/openid-configuration); check --oidc-issuer and that the provider is reachable from here"
        )
    })?;
    tracing::info!(issuer = %issuer, redirect_uri = %redirect, "OpenID Connect sign-in enabled");
    Ok(Some(Discovered {
        client,
        idp,
        issuer: issuer.clone(),
        public_url,
    }))
}

/// What it takes to (re)discover the identity provider.
pub struct Idp {
    issuer_url: IssuerUrl,
    client_id: ClientId,
    /// Its `Debug` is redacted by openidconnect.
    secret: ClientSecret,
    redirect: RedirectUrl,
    auth: AuthType,
    pub http: openidconnect::reqwest::Client,
}

impl Idp {
    /// Reads the discovery document and the signing keys it names, within
    /// [`IDP_TIMEOUT`] (and a second for the keys).
    pub async fn discover(&self) -> Result<IdpClient> {
        let metadata = tokio::time::timeout(
            IDP_TIMEOUT + Duration::from_secs(1),
            CoreProviderMetadata::discover_async(self.issuer_url.clone(), &self.http),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {}s", IDP_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone())
        .set_auth_type(self.auth.clone()))
    }
}

/// `PUBLIC_URL/oidc/callback`.
pub fn callback_url(public_url: &Url) -> String {
    format!(
        "{}/oidc/callback",
        public_url.as_str().trim_end_matches('/')
    )
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_url("--oidc-issuer", "https://idp.example.com").is_ok());
        assert!(check_url("--oidc-issuer", "http://127.0.0.1:3000").is_ok());
        assert!(check_url("--oidc-issuer", "http://[::1]:3000/x").is_ok());
        assert!(check_url("--oidc-issuer", "http://localhost:3000").is_ok());
        let e = check_url("--oidc-issuer", "http://idp.example.com").unwrap_err();
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        assert!(check_url("--oidc-issuer", "ftp://idp.example.com").is_err());
        assert!(check_url("--oidc-issuer", "not a url").is_err());
    }

    #[test]
    fn the_callback_is_under_the_public_url() {
        let u = Url::parse("https://w.example.com/").unwrap();
        assert_eq!(callback_url(&u), "https://w.example.com/oidc/callback");
        let u = Url::parse("https://w.example.com/warren/").unwrap();
        assert_eq!(
            callback_url(&u),
            "https://w.example.com/warren/oidc/callback"
        );
    }

    #[test]
    fn the_client_secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client-secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for open in [0o644, 0o640, 0o604] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
                let err = format!("{:#}", read_client_secret(&path).unwrap_err());
                assert!(
                    err.contains(&format!("chmod 600 {}", path.display()))
                        && err.contains("OIDC client secret file"),
                    "{open:o}: {err}"
                );
                assert!(!err.contains("s3cret"), "{err}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(read_client_secret(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_client_secret(&path)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(read_client_secret(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(read_client_secret(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
