#!/usr/bin/env node
/**
 * Test identity provider for Warren's browser sign-in tests: the certified
 * `oidc-provider` package on http://127.0.0.1:PORT with the clients and users
 * of a JSON config file, and knobs that make it misbehave the ways a real
 * provider (or an attacker in its place) can.
 *
 *   node tests/oidc/provider.mjs CONFIG.json
 *
 * Prints one JSON line on stdout once listening:
 *   {"issuer":"http://127.0.0.1:PORT","port":PORT}
 * and logs to stderr (never codes, tokens or secrets). Exits on SIGTERM/SIGINT.
 *
 * Config (all optional except what a test needs):
 *   port                    0 (default) picks a free one
 *   clients: [{ client_id, client_secret, redirect_uris: [...],
 *               token_endpoint_auth_method: "client_secret_basic"|"client_secret_post",
               any_loopback_port: bool  (http://127.0.0.1:ANY/path matches) }]
 *   users:   [{ subject, username, password, preferred_username, email, name }]
 *   id_token_ttl_seconds    ID token lifetime; <= 0 gives an already expired token
 *   audience_override       ID tokens carry this `aud` instead of the client id
 *   sign_with_other_key     true/"other_kid": ID tokens signed by a key not in the
 *                           JWKS, under a kid not in it; "same_kid": under the
 *                           published kid, so only the signature check catches it
 *   deny_consent            approving consent still answers error=access_denied
 *
 * Login and consent are this file's own small pages (devInteractions accept
 * any login without a password, and their markup is not meant to be stable):
 * the login form has inputs `username` and `password` and a button
 * data-testid="login"; consent has data-testid="approve" and "deny".
 *
 * Test-only endpoint: POST /test/verify with a JWT as the body answers
 * {"valid":bool,"error":…,"header":…,"payload":…}: its signature checked
 * against the published JWKS with `jose`, so tests can prove what the knobs do.
 */
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

// stdout carries only the listening line (the harness reads it); anything
// oidc-provider itself prints (it uses console.log for notices) goes to stderr.
console.log = console.error;
console.info = console.error;
const log = (...a) => console.error(`[oidc-provider-test ${new Date().toISOString()}]`, ...a);

const configPath = process.argv[2];
if (!configPath) {
  log('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const users = config.users ?? [];
const clients = (config.clients ?? []).map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  redirect_uris: c.redirect_uris,
  token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
  // A "native" client may use its loopback redirect URIs on any port
  // (RFC 8252 7.3, implemented by oidc-provider), for relying parties whose
  // port is only known once they listen.
  application_type: c.any_loopback_port ? 'native' : 'web',
  grant_types: ['authorization_code'],
  response_types: ['code'],
}));

// The published signing key, and the one the bad-signature knob uses instead.
const KID = 'test-signing-key';
async function rsaKey(kid) {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { jwk: { ...jwk, kid, alg: 'RS256', use: 'sig' }, key: privateKey };
}
const signing = await rsaKey(KID);
const other = await rsaKey(config.sign_with_other_key === 'same_kid' ? KID : 'not-published-key');
const publicJwks = {
  keys: [(({ d, p, q, dp, dq, qi, ...pub }) => pub)(signing.jwk)],
};

const ttl = config.id_token_ttl_seconds;
const rewriteIdToken = (ttl !== undefined && ttl !== null && ttl <= 0)
  || config.audience_override !== undefined
  || Boolean(config.sign_with_other_key);

const server = createServer();
await new Promise((ok, fail) => {
  server.once('error', fail);
  server.listen(config.port ?? 0, '127.0.0.1', ok);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signing.jwk] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    // Our own login and consent pages below; no other features are needed.
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // Put the scope's claims (preferred_username, email, name) in the ID token
  // itself, as most providers do, so the relying party needs no userinfo call.
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    const user = users.find((u) => u.subject === sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: user.preferred_username ?? user.username,
          email: user.email,
          email_verified: user.email !== undefined,
          name: user.name,
        };
      },
    };
  },
  ttl: {
    // Explicit, so oidc-provider doesn't fill failure logs with notices.
    AccessToken: 3600,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    // A positive lifetime goes through oidc-provider's own `ttl.IdToken`; it
    // refuses 0 and negative ones, so those are made by re-signing below.
    IdToken: ttl > 0 ? ttl : 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Provider error', `<h1>Provider error</h1><p data-testid="error">${esc(out.error)}: ${esc(out.error_description ?? '')}</p>`);
  },
});

// The knobs that oidc-provider has no hook for (its IdToken is built and
// signed inside the token endpoint; `extraTokenClaims` only reaches access
// tokens): rewrite the token endpoint's JSON answer after oidc-provider made
// it, re-signing the ID token with the published key or the other one.
provider.use(async (ctx, next) => {
  await next();
  if (!rewriteIdToken || ctx.oidc?.route !== 'token' || !ctx.body || typeof ctx.body !== 'object' || !ctx.body.id_token) return;
  const payload = jose.decodeJwt(ctx.body.id_token);
  if (ttl !== undefined && ttl !== null && ttl <= 0) {
    // exp = now + ttl (ttl <= 0), iat before it: expired, yet well formed.
    payload.exp = Math.floor(Date.now() / 1000) + ttl;
    payload.iat = payload.exp - 300;
  }
  if (config.audience_override !== undefined) payload.aud = config.audience_override;
  const useOther = Boolean(config.sign_with_other_key);
  const key = useOther ? other : signing;
  ctx.body = {
    ...ctx.body,
    id_token: await new jose.SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: key.jwk.kid }).sign(key.key),
  };
  log(`token: ID token rewritten (ttl=${ttl ?? 'default'}, aud override=${config.audience_override !== undefined}, other key=${useOther ? config.sign_with_other_key : false})`);
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${esc(title)}</title><style>body{font-family:sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}
input,button{display:block;box-sizing:border-box;font-size:1rem;margin:.4rem 0;padding:.4rem;width:100%}</style></head><body>${body}</body></html>`;
}
function loginPage(uid, clientId, error) {
  return page('Test IdP: sign in', `<h1>Test IdP: sign in</h1><p>to continue to ${esc(clientId)}</p>
${error ? `<p role="alert" data-testid="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit" data-testid="login">Sign in</button></form>`);
}
function consentPage(uid, clientId, scopes) {
  return page('Test IdP: authorize', `<h1>Test IdP: authorize ${esc(clientId)}</h1><p>It asks for: ${esc(scopes.join(' '))}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm">
<button type="submit" name="decision" value="approve" data-testid="approve">Allow</button>
<button type="submit" name="decision" value="deny" data-testid="deny">Deny</button></form>`);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  const { prompt, params } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') return send(res, 200, 'text/html', loginPage(uid, params.client_id));
    if (prompt.name === 'consent') return send(res, 200, 'text/html', consentPage(uid, params.client_id, String(params.scope).split(' ')));
    return send(res, 501, 'text/plain', `prompt ${prompt.name} not implemented`);
  }
  const form = new URLSearchParams(await readBody(req));
  if (action === 'login') {
    const user = users.find((u) => u.username === form.get('username') && u.password === form.get('password'));
    if (!user) {
      log('login: wrong username or password');
      return send(res, 200, 'text/html', loginPage(uid, params.client_id, 'Wrong username or password.'));
    }
    log(`login: ${user.username} (subject ${user.subject})`);
    return provider.interactionFinished(req, res, { login: { accountId: user.subject } }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm') {
    if (config.deny_consent || form.get('decision') !== 'approve') {
      log(`consent: denied (${config.deny_consent ? 'deny_consent knob' : 'user pressed deny'})`);
      return provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'The user did not allow the application.',
      }, { mergeWithLastSubmission: false });
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    const grantId = await grant.save();
    log(`consent: approved for ${params.client_id}`);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 404, 'text/plain', 'not found');
}

const handler = provider.callback();
server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  // Paths only: authorization and callback queries carry codes and state.
  log(`${req.method} ${path}`);
  try {
    const m = path.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/);
    if (m) return await interaction(req, res, m[1], m[2]);
    if (path === '/test/verify' && req.method === 'POST') {
      const jwt = (await readBody(req)).trim();
      let out;
      try {
        // The signature only: expiry and audience are the tests' to check.
        const { protectedHeader } = await jose.compactVerify(jwt, jose.createLocalJWKSet(publicJwks));
        out = { valid: true, header: protectedHeader, payload: jose.decodeJwt(jwt) };
      } catch (e) {
        out = { valid: false, error: `${e.code ?? e.name}: ${e.message}`, header: jose.decodeProtectedHeader(jwt), payload: jose.decodeJwt(jwt) };
      }
      return send(res, 200, 'application/json', JSON.stringify(out));
    }
    return handler(req, res);
  } catch (e) {
    log(`error on ${req.method} ${path}: ${e.stack ?? e}`);
    if (!res.headersSent) send(res, 500, 'text/plain', `test provider error: ${e.message}`);
    else res.end();
  }
});
provider.on('server_error', (_ctx, e) => log(`server_error: ${e.stack ?? e}`));
provider.on('grant.error', (_ctx, e) => log(`grant.error: ${e.error ?? e.name}: ${e.error_description ?? e.message}`));
provider.on('authorization.error', (_ctx, e) => log(`authorization.error: ${e.error ?? e.name}: ${e.error_description ?? e.message}`));

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    log(`${sig}: shutting down`);
    server.closeAllConnections();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 500).unref();
  });
}

log(`listening on ${issuer} with ${clients.length} client(s), ${users.length} user(s)`);
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
