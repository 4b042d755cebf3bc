// The OpenID provider vern's tests sign in through: oidc-provider (OpenID-certified),
// not a mock. One confidential client (the console) with PKCE; access tokens are JWTs
// (RS256) for the resource indicator of vern's API, carrying vern's claims `tenant`
// and `roles` from the accounts given; refresh tokens; RP-initiated logout. The dev
// interactions' login form takes any login and password: the login names the account.
//
// Settings come from the environment (the test harness sets them):
//   VERN_IDP_ACCOUNTS       JSON: {"officer-a": {"tenant": ["dept-a"], "roles": ["privacy-officer"]}}
//   VERN_IDP_CLIENT_ID      default vern-console
//   VERN_IDP_CLIENT_SECRET  required
//   VERN_IDP_REDIRECT_URIS  space-separated (the console's <public_url>/oidc/callback)
//   VERN_IDP_POST_LOGOUT_URIS  space-separated (the console's <public_url>/)
//   VERN_IDP_RESOURCE       default urn:vern (the access token's audience)
//   VERN_IDP_ACCESS_TTL     seconds, default 300
//   VERN_IDP_PORT           default 0 (any free port on 127.0.0.1)
// It prints one line of JSON, {"issuer": "http://127.0.0.1:<port>"}, once it listens,
// then one line per token grant: {"grant": "refresh_token", "account": "officer-a"}.
import { createServer } from 'node:http';
import Provider, { errors } from 'oidc-provider';

const env = process.env;
const accounts = JSON.parse(env.VERN_IDP_ACCOUNTS ?? '{}');
const resource = env.VERN_IDP_RESOURCE ?? 'urn:vern';
const accessTtl = Number(env.VERN_IDP_ACCESS_TTL ?? 300);
const words = (s) => (s ?? '').split(/\s+/).filter(Boolean);
if (!env.VERN_IDP_CLIENT_SECRET) {
  console.error('VERN_IDP_CLIENT_SECRET is required');
  process.exit(2);
}

const server = createServer();
await new Promise((resolve) => server.listen(Number(env.VERN_IDP_PORT ?? 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: env.VERN_IDP_CLIENT_ID ?? 'vern-console',
    client_secret: env.VERN_IDP_CLIENT_SECRET,
    redirect_uris: words(env.VERN_IDP_REDIRECT_URIS),
    post_logout_redirect_uris: words(env.VERN_IDP_POST_LOGOUT_URIS),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      async getResourceServerInfo(_ctx, indicator) {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: 'vern',
          audience: resource,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // vern's own claims, in the access token only.
  async extraTokenClaims(_ctx, token) {
    const account = accounts[token.accountId];
    if (!account || token.kind !== 'AccessToken') return undefined;
    return { tenant: account.tenant, roles: account.roles };
  },
  // A refresh token for the console without asking for offline_access.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: accessTtl, IdToken: 3600, RefreshToken: 86400, Session: 86400, Grant: 86400 },
  cookies: { keys: ['vern-test-idp-cookie-key'] },
});
// Each token grant as a line of JSON (the grant type and account only: tests count
// refreshes by it).
provider.on('grant.success', (ctx) => {
  console.log(JSON.stringify({ grant: ctx.oidc.params?.grant_type, account: ctx.oidc.account?.accountId }));
});
server.on('request', provider.callback());
console.log(JSON.stringify({ issuer }));
