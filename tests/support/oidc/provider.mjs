// A real OpenID Provider for the tests (panva's oidc-provider, OpenID Certified), on 127.0.0.1.
//
// Clients get real signed JWT access tokens through the client_credentials grant, with the TES
// server as the resource (audience). Settings come from a JSON file named by argv[2]:
//   {"port", "issuer", "jwks": {"keys": [...private JWKs...]},
//    "clients": [{"client_id", "client_secret", "groups": [...]}],
//    "resources": {"<resource indicator>": {"audience": "...", "ttl": seconds}}}
// The process prints "ready" once it listens. Restarting it with other keys rotates them.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const modules = process.env.OIDC_PROVIDER_MODULES;
const { default: Provider } = await import(pathToFileURL(resolve(modules, 'oidc-provider/lib/index.js')).href);

const groups = Object.fromEntries(config.clients.map((c) => [c.client_id, c.groups || []]));
const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: config.jwks.keys[0].alg,
  })),
  jwks: config.jwks,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => Object.keys(config.resources)[0],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        const resource = config.resources[indicator];
        if (!resource) throw new Error(`unknown resource ${indicator}`);
        return {
          scope: 'tes',
          audience: resource.audience,
          accessTokenTTL: resource.ttl || 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: config.jwks.keys[0].alg } },
        };
      },
    },
  },
  extraTokenClaims: (ctx, token) => {
    const id = token.clientId;
    return { groups: groups[id] || [], preferred_username: id };
  },
});
provider.listen(config.port, '127.0.0.1', () => console.log('ready'));
