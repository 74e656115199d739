// A real OpenID Connect provider for the single sign-on tests (oidc-provider on Node).
//
// 1. Listens on 127.0.0.1, on an ephemeral port, and prints "port N".
// 2. Reads one line from stdin: the dashboard's redirect URI (its port is known only then).
// 3. Builds the provider (issuer http://127.0.0.1:N) with one confidential client and the
//    test accounts below, and prints "ready".
//
// The login page is this file's own (a user name and a password); consent is implied.
// Some accounts are played by a dishonest or broken provider: their ID token is rewritten
// on its way out of the token endpoint (see `rewrite`), so the dashboard's verification is
// tried against the real token endpoint and the real JWKS.
import http from "node:http";
import readline from "node:readline";
import { randomBytes } from "node:crypto";
import Provider from "oidc-provider";
import * as jose from "jose";

const PASSWORD = "provider-password";
const ACCOUNTS = {
  alice: { groups: ["fleet-admins", "staff"] },
  olivia: { groups: ["ops"] },
  victor: { groups: ["staff"] },
  una: { groups: ["marketing"] },
  dora: { groups: ["staff"] },
  admin: { groups: ["staff"] }, // the name of the dashboard's local admin
  // Each of these logs in fine, but its ID token is changed by `rewrite`.
  "tamper-claims": { groups: ["staff"], rewrite: "claims" },
  "foreign-key": { groups: ["fleet-admins"], rewrite: "foreign-key" },
  "other-audience": { groups: ["fleet-admins"], rewrite: "audience" },
  expired: { groups: ["fleet-admins"], rewrite: "expired" },
  "wrong-nonce": { groups: ["fleet-admins"], rewrite: "nonce" },
  // Signed honestly, but without the groups: the dashboard must ask the userinfo endpoint.
  quiet: { groups: ["ops"], rewrite: "no-groups" },
};

const server = http.createServer((req, res) => {
  res.statusCode = 503;
  res.end("not configured yet");
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`port ${server.address().port}\n`);
});

const input = readline.createInterface({ input: process.stdin });
input.once("line", async (redirectUri) => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  const signing = { ...(await jose.exportJWK(privateKey)), kid: "provider-key", alg: "RS256", use: "sig" };
  const foreign = (await jose.generateKeyPair("RS256", { extractable: true })).privateKey;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: "nixfleet",
        client_secret: process.env.CLIENT_SECRET,
        redirect_uris: [redirectUri.trim()],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(32).toString("hex")] },
    pkce: { required: () => true },
    claims: { openid: ["sub"], profile: ["preferred_username", "name"], groups: ["groups"] },
    scopes: ["openid", "profile", "groups"],
    conformIdTokenClaims: false, // the groups go into the ID token, as many providers do
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { IdToken: 300, AccessToken: 300, AuthorizationCode: 60, Interaction: 300, Session: 300, Grant: 300 },
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: id, groups: account.groups };
        },
      };
    },
  });
  provider.use(interactions(provider));
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === "/token" && ctx.body && typeof ctx.body.id_token === "string") {
      ctx.body = { ...ctx.body, id_token: await rewrite(ctx.body.id_token, signing, foreign) };
    }
  });
  server.removeAllListeners("request");
  server.on("request", provider.callback());
  process.stdout.write("ready\n");
});

// The provider's login page and its form: a test account and the shared password.
function interactions(provider) {
  return async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (!match) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (ctx.method === "GET" && !match[2]) {
      ctx.type = "html";
      ctx.body = `<!doctype html><title>Test provider</title><link rel="icon" href="data:,">
<form method="post" action="/interaction/${details.uid}/login">
<label>Login <input name="login"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>`;
      return;
    }
    if (ctx.method !== "POST" || !match[2]) return next();
    const form = new URLSearchParams(await body(ctx.req));
    const login = form.get("login") || "";
    if (!ACCOUNTS[login] || form.get("password") !== PASSWORD) {
      ctx.status = 401;
      ctx.body = "wrong login";
      return;
    }
    const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    const to = await provider.interactionResult(ctx.req, ctx.res, {
      login: { accountId: login },
      consent: { grantId },
    });
    ctx.status = 303;
    ctx.redirect(to);
  };
}

function body(req) {
  return new Promise((resolve, reject) => {
    let text = "";
    req.on("data", (chunk) => {
      text += chunk;
      if (text.length > 10000) reject(new Error("too long"));
    });
    req.on("end", () => resolve(text));
  });
}

// What a dishonest or broken provider (or someone on the way) would hand the dashboard.
async function rewrite(idToken, signing, foreign) {
  const claims = jose.decodeJwt(idToken);
  const mode = ACCOUNTS[claims.sub]?.rewrite;
  const key = await jose.importJWK(signing, "RS256");
  const header = { alg: "RS256", kid: signing.kid, typ: "JWT" };
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case "claims": {
      // Signed by the provider, then edited: groups raised to admin, signature kept.
      const [head, , signature] = idToken.split(".");
      const edited = { ...claims, groups: ["fleet-admins"] };
      const payload = Buffer.from(JSON.stringify(edited)).toString("base64url");
      return `${head}.${payload}.${signature}`;
    }
    case "foreign-key": // a key the provider never published, under the provider's key id
      return new jose.SignJWT(claims).setProtectedHeader(header).sign(foreign);
    case "audience": // a token the provider issued to another client
      return new jose.SignJWT({ ...claims, aud: "another-client" }).setProtectedHeader(header).sign(key);
    case "expired":
      return new jose.SignJWT({ ...claims, iat: now - 7200, exp: now - 3600 })
        .setProtectedHeader(header)
        .sign(key);
    case "nonce":
      return new jose.SignJWT({ ...claims, nonce: "not-the-one-sent" }).setProtectedHeader(header).sign(key);
    case "no-groups": {
      const { groups, ...rest } = claims;
      return new jose.SignJWT(rest).setProtectedHeader(header).sign(key);
    }
    default:
      return idToken;
  }
}
