// A real OpenID provider for Garrison's end-to-end tests: the certified `oidc-provider`
// package, configured by the tests (users, MFA claims, signing keys, clients) through a JSON
// file named on the command line. It listens on loopback only.
//
//   node idp.mjs /path/to/config.json
//
// config.json:
//   { "issuer": "http://127.0.0.1:PORT", "port": PORT,
//     "keys": [<private JWK>, ...],          // the first one signs; rotate by restarting
//     "clients": [<client metadata>, ...],
//     "users": { "<sub>": { "password": "...", "otp": "123456" | null,
//                           "factor": "otp" | "hwk",  // what amr names the second factor
//                           "groups": [...], "email": "..." } } }
//
// The login page is the tests' own: instead of the provider's development pages (which do
// not set `amr`/`acr`), GET /interaction/<uid> answers a tiny HTML form and
// POST /interaction/<uid>/login checks the user's password (and one-time code, when the user
// has one), records how they authenticated (amr ["pwd"] or ["pwd", <factor>, "mfa"], acr
// "urn:garrison:mfa" or "urn:garrison:pwd") and grants every requested scope at once, so a
// test that follows the redirects completes the flow without a consent page.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = config.users;

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  cookies: { keys: ['garrison-test-idp-cookie-key'] },
  claims: {
    acr: null, amr: null, auth_time: null, sid: null, openid: ['sub', 'acr', 'amr'], email: ['email'], groups: ['groups'],
  },
  // The groups claim is put in the ID token itself (Garrison reads groups from there).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  acrValues: ['urn:garrison:mfa', 'urn:garrison:pwd'],
  async findAccount(ctx, sub) {
    const user = users[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: user.email, groups: user.groups ?? [] };
      },
    };
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    IdToken: config.id_token_ttl ?? 300,
    AccessToken: 300,
    Session: 3600,
    Interaction: 600,
    Grant: 3600,
    RefreshToken: 3600,
    DeviceCode: 600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});
provider.proxy = false;

async function grantAll(details, accountId) {
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope ?? 'openid'));
  grant.addOIDCClaims(['acr', 'amr', 'auth_time']);
  return grant.save();
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; if (body.length > 16384) req.destroy(); });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (details.prompt.name === 'consent') {
    const grantId = await grantAll(details, details.session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action !== 'login' || req.method !== 'POST') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form method="post" action="/interaction/${uid}/login">`
      + '<input name="login"/><input name="password" type="password"/><input name="otp"/>'
      + '</form>');
    return undefined;
  }
  const form = await readForm(req);
  const login = form.get('login') ?? '';
  const user = Object.hasOwn(users, login) ? users[login] : undefined;
  if (!user || form.get('password') !== user.password) {
    res.writeHead(401, { 'content-type': 'text/plain' });
    res.end('wrong login or password');
    return undefined;
  }
  const mfa = Boolean(user.otp) && form.get('otp') === user.otp;
  if (user.otp && form.get('otp') && !mfa) {
    res.writeHead(401, { 'content-type': 'text/plain' });
    res.end('wrong one-time code');
    return undefined;
  }
  const grantId = await grantAll(details, login);
  return provider.interactionFinished(req, res, {
    login: {
      accountId: login,
      amr: mfa ? ['pwd', user.factor ?? 'otp', 'mfa'] : ['pwd'],
      acr: mfa ? 'urn:garrison:mfa' : 'urn:garrison:pwd',
    },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(login))?$/.exec(req.url.split('?')[0]);
  if (!match) return callback(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(String(err.message ?? err));
  }
  return undefined;
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${config.issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
