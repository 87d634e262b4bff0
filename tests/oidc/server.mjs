// A real OAuth 2.0 authorization server for tests: oidc-provider with the
// client_credentials grant and short token lifetimes, bound to 127.0.0.1.
// Env: PORT (0 = any), CLIENT_ID, CLIENT_SECRET, TOKEN_TTL_SECONDS,
// REDIRECT_URI.
// Registers CLIENT_ID with client_secret_basic and CLIENT_ID-post with
// client_secret_post (same secret), for client credentials; and
// CLIENT_ID-authcode (same secret, client_secret_basic) for the
// authorization-code grant with PKCE required, refresh tokens (with
// offline_access) rotated on every use, redirecting to REDIRECT_URI.
// Login and consent: GET /interaction/:uid completes whichever prompt is
// pending (login as "test-user"; consent to everything asked) and redirects
// on, so a test drives a browser's way through with plain GETs.
// Prints one "listening" line when ready.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const clientId = process.env.CLIENT_ID || 'test-client';
const clientSecret = process.env.CLIENT_SECRET || 'test-secret-0123456789';
const ttl = Number(process.env.TOKEN_TTL_SECONDS || 5);
const redirectUri = process.env.REDIRECT_URI || 'http://127.0.0.1:8089/oauth2/callback';

const client = (id, method) => ({
  client_id: id,
  client_secret: clientSecret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: method,
  scope: 'read write',
});

const provider = new Provider('http://127.0.0.1', {
  clients: [
    client(clientId, 'client_secret_basic'),
    client(`${clientId}-post`, 'client_secret_post'),
    {
      client_id: `${clientId}-authcode`,
      client_secret: clientSecret,
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [redirectUri],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid offline_access read write',
    },
  ],
  scopes: ['openid', 'offline_access', 'read', 'write'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  // Every refresh answers with a new refresh token; the old one is spent
  // (reusing it revokes the grant, RFC 9700 section 4.14.2).
  rotateRefreshToken: true,
  // Every lifetime set: oidc-provider prints a notice for each default it
  // uses, on stdout, which the test stops reading once the server is up.
  ttl: {
    ClientCredentials: ttl,
    AccessToken: ttl,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
});
provider.proxy = false;

// Completes the pending prompt of an interaction as a person would.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: 'test-user' } };
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  } catch (e) {
    res.statusCode = 400;
    res.end(String(e));
  }
}

// Nobody reads stdout after the "listening" line: a later write must not
// end the server with EPIPE.
process.stdout.on('error', () => {});
console.log = (() => {
  let ready = false;
  const log = console.log.bind(console);
  return (...args) => {
    if (!ready) {
      ready = true;
      log(...args);
    }
  };
})();

const callback = provider.callback();
const server = http.createServer((req, res) =>
  req.url.startsWith('/interaction/') ? interaction(req, res) : callback(req, res));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  console.log(`oidc-provider listening on http://127.0.0.1:${actual} token_endpoint=http://127.0.0.1:${actual}/token`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
