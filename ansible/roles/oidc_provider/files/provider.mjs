// The demo's OpenID Connect provider: npm's oidc-provider with a login form and a consent form of
// its own, so that what a demo user clicks is what a MyAccessID user clicks (the hub's side is
// the same GenericOAuthenticator). Users imitate MyAccessID's claims: an opaque `sub`, email,
// name and eduperson_entitlement group URNs.
//
//   node provider.mjs CONFIG.json
// CONFIG: {issuer, listen_host, port, clients: [{client_id, client_secret_file, redirect_uris,
//          post_logout_redirect_uris}], users_file, access_token_seconds, clock_tolerance_seconds,
//          state_dir (optional: where its keys and grants are kept, so that a restart forgets no
//          login; without it they live in memory and a restart ends every login)}
// USERS file (re-read when it changes, so that a group change reaches the next refresh):
//   {"users": [{"login", "password_scrypt": "<salt hex>:<key hex>", "sub", "email", "name",
//               "entitlements": [...], "hpc_infos": ["<username>,<system>,<project>", ...] (optional)}]}
// Secrets (client secrets, password hashes) are read from files, never from argv.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

let users = { mtimeMs: -1, byLogin: new Map(), bySub: new Map() };
function currentUsers() {
  const mtimeMs = fs.statSync(config.users_file).mtimeMs;
  if (mtimeMs !== users.mtimeMs) {
    const list = JSON.parse(fs.readFileSync(config.users_file, 'utf8')).users;
    users = { mtimeMs, byLogin: new Map(list.map((u) => [u.login, u])), bySub: new Map(list.map((u) => [u.sub, u])) };
  }
  return users;
}

function passwordMatches(user, given) {
  if (!user || typeof given !== 'string' || !user.password_scrypt) return false;
  const [salt, key] = user.password_scrypt.split(':');
  const expected = Buffer.from(key || '', 'hex');
  if (expected.length !== 64 || !salt) return false;     // a malformed hash never matches
  const derived = crypto.scryptSync(given, Buffer.from(salt, 'hex'), expected.length);
  return crypto.timingSafeEqual(derived, expected);
}

const clients = config.clients.map((c) => ({
  client_id: c.client_id,
  client_secret: fs.readFileSync(c.client_secret_file, 'utf8').trim(),
  redirect_uris: c.redirect_uris,
  post_logout_redirect_uris: c.post_logout_redirect_uris || [],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
}));

// Written whole to a fresh file, then renamed over the old one: a crash leaves one or the other.
function writePrivate(path, text) {
  const fresh = `${path}.${process.pid}.new`;
  fs.rmSync(fresh, { force: true });            // left by a crash of a process of the same pid
  const fd = fs.openSync(fresh, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL
                                | fs.constants.O_NOFOLLOW, 0o600);
  try { fs.writeSync(fd, text); fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  fs.renameSync(fresh, path);
}

function readKept(name, make) {
  if (!config.state_dir) return make();
  const path = `${config.state_dir}/${name}`;
  try { return JSON.parse(fs.readFileSync(path, 'utf8')); } catch (error) { if (error.code !== 'ENOENT') throw error; }
  const made = make();
  writePrivate(path, JSON.stringify(made));
  return made;
}

// oidc-provider's models (sessions, grants, refresh tokens...) in one JSON file of the state
// directory, each with its expiry; a small demo keeps a few hundred at most.
class FileStore {
  constructor(path) {
    this.path = path;
    this.items = {};
    try { this.items = JSON.parse(fs.readFileSync(path, 'utf8')); } catch (error) { if (error.code !== 'ENOENT') throw error; }
    const now = Date.now();
    for (const [key, item] of Object.entries(this.items)) if (item.expiresAt && item.expiresAt < now) delete this.items[key];
  }
  save() { writePrivate(this.path, JSON.stringify(this.items)); }
  get(key) {
    const item = this.items[key];
    if (!item || (item.expiresAt && item.expiresAt < Date.now())) return undefined;
    return item.payload;
  }
}
const store = config.state_dir ? new FileStore(`${config.state_dir}/store.json`) : null;

class FileAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    store.items[this.key(id)] = { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 };
    store.save();
  }
  async find(id) { return store.get(this.key(id)); }
  async findByUid(uid) {
    const key = Object.keys(store.items).find((k) => k.startsWith(`${this.model}:`) && store.items[k].payload.uid === uid);
    return key ? store.get(key) : undefined;
  }
  async findByUserCode(userCode) {
    const key = Object.keys(store.items).find((k) => k.startsWith(`${this.model}:`) && store.items[k].payload.userCode === userCode);
    return key ? store.get(key) : undefined;
  }
  async consume(id) {
    const item = store.items[this.key(id)];
    if (item) { item.payload.consumed = Math.floor(Date.now() / 1000); store.save(); }
  }
  async destroy(id) { delete store.items[this.key(id)]; store.save(); }
  async revokeByGrantId(grantId) {
    for (const [key, item] of Object.entries(store.items)) if (item.payload.grantId === grantId) delete store.items[key];
    store.save();
  }
}

const keys = readKept('keys.json', () => ({
  signing: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  cookies: [crypto.randomBytes(32).toString('hex')],
}));
const signingKey = keys.signing;

const provider = new Provider(config.issuer, {
  clients,
  jwks: { keys: [{ ...signingKey, kid: 'demo-rs256', alg: 'RS256', use: 'sig' }] },
  cookies: { keys: keys.cookies },
  ...(store ? { adapter: FileAdapter } : {}),
  scopes: ['openid', 'offline_access', 'email', 'profile', 'eduperson_entitlement'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'hpc_infos_attribute'],   // the last: JSC's site accounts
    eduperson_entitlement: ['eduperson_entitlement'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
  ttl: { AccessToken: config.access_token_seconds || 3600, RefreshToken: 14 * 24 * 3600,
         Interaction: 3600, Session: 14 * 24 * 3600, Grant: 14 * 24 * 3600 },
  clockTolerance: config.clock_tolerance_seconds ?? 15,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = currentUsers().bySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        const now = currentUsers().bySub.get(sub) || user;    // a group change shows at the next refresh
        return { sub, email: now.email, email_verified: true, name: now.name,
                 preferred_username: now.login, eduperson_entitlement: now.entitlements || [],
                 ...(now.hpc_infos ? { hpc_infos_attribute: now.hpc_infos } : {}) };
      },
    };
  },
});
provider.proxy = false;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(res, status, title, body) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store',
                          // no form-action: the consent form's answer redirects to the client, another origin
                          'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                          'X-Frame-Options': 'DENY' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:sans-serif;max-width:26rem;margin:4rem auto}label,input,button{display:block;margin:.4rem 0}
input{width:100%;padding:.4rem}button{padding:.5rem 1rem}.error{color:#a00}</style></head>
<body><p>AIFA demo identity provider</p><h1>${escape(title)}</h1>${body}</body></html>`);
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 8192) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function loginForm(uid, error) {
  return `${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>`;
}

function consentForm(uid, client, scopes) {
  return `<p>${escape(client)} asks to know who you are: ${escape(scopes.join(', '))}.</p>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button type="submit">Allow</button></form>`;
}

async function interaction(req, res, uid, step) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;
  if (step === '' && prompt.name === 'login') return page(res, 200, 'Sign in', loginForm(uid));
  if (step === '' && prompt.name === 'consent') {
    return page(res, 200, 'Allow access', consentForm(uid, params.client_id, String(params.scope).split(' ')));
  }
  if (req.method !== 'POST') return page(res, 405, 'Not allowed', '<p>Send the form.</p>');
  const form = await formBody(req);
  if (step === 'login') {
    const user = currentUsers().byLogin.get(form.get('login'));
    if (!passwordMatches(user, form.get('password'))) {
      return page(res, 200, 'Sign in', loginForm(uid, 'That username and password do not match.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  if (step === 'confirm' && prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
                                  : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  return page(res, 400, 'Something went wrong', '<p>Start again from the workbench.</p>');
}

const providerCallback = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]{1,64})(?:\/(login|confirm))?$/.exec(req.url.split('?')[0]);
  if (!match) return providerCallback(req, res);
  try {
    await interaction(req, res, match[1], match[2] || '');
  } catch (error) {
    console.error(`interaction failed: ${error.message}`);
    if (!res.headersSent) page(res, 400, 'This sign-in has expired', '<p>Go back to the workbench and log in again.</p>');
  }
});
provider.on('server_error', (ctx, error) => console.error(`server_error: ${error.message}`));
provider.on('grant.success', (ctx) => console.log(`grant.success ${ctx.oidc?.params?.grant_type}`));
provider.on('grant.error', (ctx, error) => console.log(`grant.error ${error.message}`));
server.listen(config.port, config.listen_host || '127.0.0.1');
await once(server, 'listening');
console.log(`oidc provider ${config.issuer} listening on ${config.listen_host || '127.0.0.1'}:${config.port}`);
