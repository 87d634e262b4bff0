// A real OAuth 2.0 authorization server for tests: oidc-provider with the
// client_credentials grant and short token lifetimes, bound to 127.0.0.1.
// Env: PORT (0 = any), CLIENT_ID, CLIENT_SECRET, TOKEN_TTL_SECONDS.
// Registers CLIENT_ID with client_secret_basic and CLIENT_ID-post with
// client_secret_post (same secret). Prints one "listening" line when ready.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const clientId = process.env.CLIENT_ID || 'test-client';
const clientSecret = process.env.CLIENT_SECRET || 'test-secret-0123456789';
const ttl = Number(process.env.TOKEN_TTL_SECONDS || 5);

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
  clients: [client(clientId, 'client_secret_basic'), client(`${clientId}-post`, 'client_secret_post')],
  scopes: ['read', 'write'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    introspection: { enabled: true },
  },
  ttl: { ClientCredentials: ttl },
});
provider.proxy = false;

const server = http.createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  console.log(`oidc-provider listening on http://127.0.0.1:${actual} token_endpoint=http://127.0.0.1:${actual}/token`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
