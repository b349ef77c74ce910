/*
 * The credential vault: envelope AES-256-GCM in Node (a data key per secret, wrapped by the
 * active VAULT_KEYS key), bound to its row; the write-only GraphQL mutation that stores a
 * destination's refresh token through the real HTTP app; and `vault rotate` (rotateVault),
 * which re-wraps data keys under a new key without touching the secrets' ciphertext.
 * The database must only ever hold ciphertext: the token's bytes are looked for everywhere.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { readConfig } from "../src/config";
import { readRefreshToken, rotateVault, storeRefreshToken } from "../src/vault/credentials";
import { credentialContext, lastFour, type SealedSecret, Vault, VaultError } from "../src/vault/vault";
import { addMember, createUser, getRootPool, unique, withRootDb } from "./helpers/db";
import { flushDenials, startTestService, type TestService, tokenFor } from "./helpers/http";

const config = readConfig();
const testKey = config.vaultKeys[0];
const root = () => getRootPool();

/** A refresh token as Google issues them, unique per call. */
const newToken = () => `1//0g${randomBytes(24).toString("base64url")}`;

describe("Vault (unit)", () => {
  const vault = new Vault(config.vaultKeys);
  const destinationId = "6f1f7c1e-9d8a-4d43-9d0e-5b8f3a2c1d00";
  const context = credentialContext(destinationId);

  test("the configured test key is the active one", () => {
    expect(testKey.id).toBe("test1");
    expect(vault.activeKeyId).toBe("test1");
  });

  test("round trip; every seal is fresh (random data key and nonces) and holds no plaintext", () => {
    const secret = newToken();
    const a = vault.encrypt(secret, context);
    const b = vault.encrypt(secret, context);
    expect(a.keyId).toBe("test1");
    expect(vault.decrypt(a, context)).toBe(secret);
    expect(vault.decrypt(b, context)).toBe(secret);
    expect(a.nonce).toHaveLength(12);
    expect(a.authTag).toHaveLength(16);
    expect(a.wrappedKey).toHaveLength(12 + 16 + 32);
    expect(a.ciphertext).toHaveLength(Buffer.byteLength(secret));
    expect(a.ciphertext.equals(b.ciphertext)).toBe(false);
    expect(a.nonce.equals(b.nonce)).toBe(false);
    expect(a.wrappedKey.equals(b.wrappedKey)).toBe(false);
    for (const part of [a.wrappedKey, a.nonce, a.ciphertext, a.authTag]) expect(part.includes(Buffer.from(secret))).toBe(false);
    // Unicode survives.
    expect(vault.decrypt(vault.encrypt("tökén-şifre-🔑", context), context)).toBe("tökén-şifre-🔑");
  });

  test("a ciphertext is bound to its row: another destination's context does not open it", () => {
    const secret = newToken();
    const sealed = vault.encrypt(secret, context);
    expect(() => vault.decrypt(sealed, credentialContext("00000000-0000-4000-8000-000000000000"))).toThrow(VaultError);
    // The context is the destination id, whatever its letter case.
    expect(vault.decrypt(sealed, credentialContext(destinationId.toUpperCase()))).toBe(secret);
  });

  test.each([
    ["ciphertext", (s: SealedSecret) => ({ ...s, ciphertext: flip(s.ciphertext, 0) })],
    ["auth tag", (s: SealedSecret) => ({ ...s, authTag: flip(s.authTag, 15) })],
    ["nonce", (s: SealedSecret) => ({ ...s, nonce: flip(s.nonce, 3) })],
    ["wrapped data key", (s: SealedSecret) => ({ ...s, wrappedKey: flip(s.wrappedKey, 40) })],
    ["wrapped key's tag", (s: SealedSecret) => ({ ...s, wrappedKey: flip(s.wrappedKey, 12) })],
    ["truncated ciphertext", (s: SealedSecret) => ({ ...s, ciphertext: s.ciphertext.subarray(1) })],
  ])("tampering with the %s fails with a VaultError that does not reveal the secret", (_name, tamper) => {
    const secret = newToken();
    const sealed = vault.encrypt(secret, context);
    const error = catchError(() => vault.decrypt(tamper(sealed), context));
    expect(error).toBeInstanceOf(VaultError);
    expect(error.message).not.toContain(secret);
  });

  test("an unknown key id fails with a clear VaultError naming the key", () => {
    const sealed = vault.encrypt(newToken(), context);
    const other = new Vault([{ id: "k9", key: randomBytes(32) }]);
    const error = catchError(() => other.decrypt(sealed, context));
    expect(error).toBeInstanceOf(VaultError);
    expect(error.message).toMatch(/VAULT_KEYS has no key "test1"/);
    // A key with the right id but the wrong material is refused too.
    const impostor = new Vault([{ id: "test1", key: randomBytes(32) }]);
    expect(() => impostor.decrypt(sealed, context)).toThrow(VaultError);
    // A key id swapped in the row does not help either.
    expect(() => new Vault([{ id: "k9", key: testKey.key }]).decrypt({ ...sealed, keyId: "k9" }, context)).toThrow(VaultError);
  });

  test("without any key nothing can be sealed or opened", () => {
    const empty = new Vault([]);
    expect(() => empty.encrypt("secret-token", context)).toThrow(/VAULT_KEYS is not set/);
    expect(() => empty.activeKeyId).toThrow(VaultError);
  });

  test("rewrap moves the data key under the new active key and leaves the secret's ciphertext alone", () => {
    const secret = newToken();
    const sealed = vault.encrypt(secret, context);
    const k2 = { id: "k2", key: randomBytes(32) };
    const rotating = new Vault([k2, testKey]);
    const rewrapped = rotating.rewrap(sealed, context);
    expect(rewrapped.keyId).toBe("k2");
    expect(rewrapped.ciphertext.equals(sealed.ciphertext)).toBe(true);
    expect(rewrapped.nonce.equals(sealed.nonce)).toBe(true);
    expect(rewrapped.authTag.equals(sealed.authTag)).toBe(true);
    expect(rewrapped.wrappedKey.equals(sealed.wrappedKey)).toBe(false);
    expect(new Vault([k2]).decrypt(rewrapped, context)).toBe(secret);
    expect(() => vault.decrypt(rewrapped, context)).toThrow(/no key "k2"/);
    // Already under the active key: unchanged.
    expect(rotating.rewrap(rewrapped, context)).toBe(rewrapped);
    // The old key still opens what was never rotated.
    expect(rotating.decrypt(sealed, context)).toBe(secret);
  });

  test("lastFour is the last four characters", () => {
    expect(lastFour("1//abcdefWXYZ")).toBe("WXYZ");
  });
});

async function withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await root().connect();
  try {
    return await fn(client);
  } finally {
    client.release();
  }
}

function flip(buffer: Buffer, index: number): Buffer {
  const copy = Buffer.from(buffer);
  copy[index] ^= 0x01;
  return copy;
}

function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected an error");
}

// ---------------------------------------------------------------------------------------------

describe("destination credentials in the database, through GraphQL", () => {
  let service: TestService;
  let owner: pg.Pool;
  let siteId: string;
  let users: Record<"owner" | "admin" | "editor" | "viewer", string>;
  let jwt: Record<keyof typeof users, string>;

  beforeAll(async () => {
    service = await startTestService();
    owner = new pg.Pool({ connectionString: config.databaseUrl, max: 4 });
    const client = await root().connect();
    try {
      users = { owner: await createUser(client), admin: await createUser(client), editor: await createUser(client), viewer: await createUser(client) };
      const { rows: [site] } = await client.query("select id from app_private.create_site($1, $2, 'vault.example')", [users.owner, unique("Vault")]);
      siteId = site.id;
      for (const role of ["admin", "editor", "viewer"] as const) await addMember(client, siteId, users[role], role);
    } finally {
      client.release();
    }
    jwt = {
      owner: await tokenFor(users.owner), admin: await tokenFor(users.admin), editor: await tokenFor(users.editor), viewer: await tokenFor(users.viewer),
    };
  });

  afterAll(async () => {
    await flushDenials();
    await service?.stop();
    await owner?.end();
  });

  /** A destination on the site; only one may be live per site, so earlier ones are paused. */
  async function createDestination(): Promise<string> {
    await root().query("update app_public.destinations set status = 'paused' where site_id = $1", [siteId]);
    const { rows: [destination] } = await root().query(
      "select id from app_public.create_destination($1, 'datamanager', '123-456-7890', '555000111')", [siteId]);
    return destination.id;
  }

  const SET_CREDENTIALS = `
    mutation ($input: SetDestinationCredentialsInput!) {
      setDestinationCredentials(input: $input) { destinationId status credentialsLast4 credentialsUpdatedAt }
    }`;

  async function setCredentials(destinationId: string, refreshToken: string, as: string) {
    const response = await service.graphql(SET_CREDENTIALS, { input: { destinationId, refreshToken } }, as);
    return { ...response, text: JSON.stringify(response.body) };
  }

  /** Everything the three tables hold for the site, as text (bytea columns appear as \x… hex). */
  async function everythingStored(): Promise<string> {
    const { rows: [row] } = await root().query(
      `select (select coalesce(jsonb_agg(to_jsonb(c)), '[]') from app_private.provider_credentials c where c.site_id = $1)::text as credentials,
              (select coalesce(jsonb_agg(to_jsonb(d)), '[]') from app_public.destinations d where d.site_id = $1)::text as destinations,
              (select coalesce(jsonb_agg(to_jsonb(a)), '[]') from app_public.audit_log a where a.site_id = $1)::text as audit`, [siteId]);
    return `${row.credentials}\n${row.destinations}\n${row.audit}`;
  }

  /** The token, in every encoding it could be stored in. */
  function expectNoTrace(haystack: string, token: string): void {
    const bytes = Buffer.from(token, "utf8");
    for (const needle of [token, bytes.toString("hex"), bytes.toString("base64"), bytes.toString("base64url"), token.slice(4)]) {
      expect(haystack.toLowerCase()).not.toContain(needle.toLowerCase());
    }
  }

  async function credentialRow(destinationId: string) {
    const { rows } = await root().query("select * from app_private.provider_credentials where destination_id = $1", [destinationId]);
    return rows[0] as { key_id: string; wrapped_key: Buffer; nonce: Buffer; ciphertext: Buffer; auth_tag: Buffer; site_id: string } | undefined;
  }

  test("an admin sets credentials: only ciphertext is stored, the answer is metadata, and the token is nowhere in the database", async () => {
    const destinationId = await createDestination();
    const token = newToken();
    const before = Date.now();
    const { status, body, text } = await setCredentials(destinationId, token, jwt.admin);
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
    expect(body.data.setDestinationCredentials).toEqual({
      destinationId, status: "active", credentialsLast4: token.slice(-4), credentialsUpdatedAt: expect.any(String),
    });
    expect(Date.parse(body.data.setDestinationCredentials.credentialsUpdatedAt)).toBeGreaterThanOrEqual(before - 2000);
    expectNoTrace(text, token);

    const stored = await credentialRow(destinationId);
    expect(stored).toMatchObject({ site_id: siteId, key_id: "test1" });
    expect(stored!.ciphertext.includes(Buffer.from(token))).toBe(false);
    expect(await readRefreshToken(owner, new Vault(config.vaultKeys), destinationId)).toBe(token);

    const { rows: [destination] } = await root().query(
      "select credentials_last4, credentials_updated_by, status from app_public.destinations where id = $1", [destinationId]);
    expect(destination).toEqual({ credentials_last4: token.slice(-4), credentials_updated_by: users.admin, status: "active" });

    // The change is audited, its material redacted.
    const { rows: audit } = await root().query(
      "select actor_user_id, action, new_values from app_public.audit_log where site_id = $1 and target_table = 'provider_credentials' and target_id = $2",
      [siteId, destinationId]);
    expect(audit).toEqual([expect.objectContaining({ actor_user_id: users.admin, action: "insert" })]);
    expect(audit[0].new_values).toMatchObject({ key_id: "test1", ciphertext: "[redacted]", wrapped_key: "[redacted]", nonce: "[redacted]", auth_tag: "[redacted]" });
    expectNoTrace(await everythingStored(), token);
  });

  test("setting credentials again replaces them, and a destination needing re-authorisation becomes active", async () => {
    const destinationId = await createDestination();
    const first = newToken();
    expect((await setCredentials(destinationId, first, jwt.owner)).body.errors).toBeUndefined();
    const before = await credentialRow(destinationId);
    await root().query("select app_private.mark_destination_needs_reauth($1, 'INVALID_GRANT')", [destinationId]);

    const second = newToken();
    const { body } = await setCredentials(destinationId, second, jwt.admin);
    expect(body.data.setDestinationCredentials).toMatchObject({ status: "active", credentialsLast4: second.slice(-4) });
    const { rows: [destination] } = await root().query("select status, status_reason from app_public.destinations where id = $1", [destinationId]);
    expect(destination).toEqual({ status: "active", status_reason: null });
    const after = await credentialRow(destinationId);
    expect(after!.ciphertext.equals(before!.ciphertext)).toBe(false);
    expect(await readRefreshToken(owner, new Vault(config.vaultKeys), destinationId)).toBe(second);
    const everything = await everythingStored();
    expectNoTrace(everything, first);
    expectNoTrace(everything, second);
  });

  test("an editor or viewer is forbidden; nothing is stored and the token is not echoed", async () => {
    const destinationId = await createDestination();
    for (const role of ["editor", "viewer"] as const) {
      const token = newToken();
      const { body, text } = await setCredentials(destinationId, token, jwt[role]);
      expect(body.data?.setDestinationCredentials ?? null).toBeNull();
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0].extensions).toEqual({ code: "forbidden" });
      expectNoTrace(text, token);
      expect(await credentialRow(destinationId)).toBeUndefined();
      await flushDenials();
      expectNoTrace(await everythingStored(), token);
    }
    const { rows: [destination] } = await root().query("select credentials_last4, credentials_updated_at from app_public.destinations where id = $1", [destinationId]);
    expect(destination).toEqual({ credentials_last4: null, credentials_updated_at: null });
    // The refusals are in the audit chain.
    const { rows: denied } = await root().query(
      "select actor_user_id from app_public.audit_log where site_id = $1 and action like 'denied:%' and target_id = $2 order by seq", [siteId, destinationId]);
    expect(denied.map((d) => d.actor_user_id)).toEqual([users.editor, users.viewer]);
  });

  test("an admin of another site, or an id that is no destination, is forbidden and stores nothing", async () => {
    const destinationId = await createDestination();
    const stranger = await withClient((client) => createUser(client));
    const { rows: [other] } = await root().query("select id from app_private.create_site($1, $2, 'other.example')", [stranger, unique("Other")]);
    const token = newToken();
    const strangerJwt = await tokenFor(stranger);
    for (const target of [destinationId, "00000000-0000-4000-8000-0000000000aa"]) {
      const { body, text } = await setCredentials(target, token, strangerJwt);
      expect(body.errors?.[0]?.extensions).toEqual({ code: "forbidden" });
      expectNoTrace(text, token);
    }
    expect(await credentialRow(destinationId)).toBeUndefined();
    const { rows: [{ n }] } = await root().query("select count(*)::int as n from app_private.provider_credentials where site_id = $1", [other.id]);
    expect(n).toBe(0);
  });

  test("a malformed token is refused with invalid_credentials and not echoed", async () => {
    const destinationId = await createDestination();
    const token = `bad token ${randomBytes(8).toString("hex")}`;
    const { body, text } = await setCredentials(destinationId, token, jwt.admin);
    expect(body.errors?.[0]?.extensions?.code).toBe("invalid_credentials");
    expect(text).not.toContain(token);
    expect(text).not.toContain(token.slice(10));
    expect(await credentialRow(destinationId)).toBeUndefined();
  });

  test("no GraphQL field returns the token: destinations show metadata only, and no type exposes the sealed material", async () => {
    const destinationId = await createDestination();
    const token = newToken();
    expect((await setCredentials(destinationId, token, jwt.admin)).body.errors).toBeUndefined();

    const { body: schema } = await service.graphql(
      "{ __schema { types { name kind fields { name type { kind name ofType { kind name ofType { kind name } } } } inputFields { name } } } }",
      undefined, jwt.owner);
    const types: { name: string; kind: string; fields: { name: string; type: any }[] | null; inputFields: { name: string }[] | null }[] = schema.data.__schema.types;
    const secretish = /^(ciphertext|wrappedKey|authTag|nonce|keyId|refreshToken|token|secret\w*|credentials?)$/i;
    const outputFields = types.filter((t) => !t.name.startsWith("__")).flatMap((t) => (t.fields ?? []).map((f) => ({ type: t.name, field: f.name })));
    expect(outputFields.filter((f) => secretish.test(f.field)).map((f) => `${f.type}.${f.field}`)).toEqual([]);
    expect(types.some((t) => /ProviderCredential/i.test(t.name))).toBe(false);
    // The token goes in only through the mutation's input.
    const inputs = types.flatMap((t) => (t.inputFields ?? []).filter((f) => /refreshToken/i.test(f.name)).map((f) => `${t.name}.${f.name}`));
    expect(inputs).toEqual(["SetDestinationCredentialsInput.refreshToken"]);

    // Read every scalar field of every destination as the owner.
    const destinationType = types.find((t) => t.name === "Destination")!;
    const leaf = (type: any): boolean => (type.kind === "NON_NULL" || type.kind === "LIST" ? leaf(type.ofType) : type.kind === "SCALAR" || type.kind === "ENUM");
    const scalarFields = destinationType.fields!.filter((f) => leaf(f.type)).map((f) => f.name);
    expect(scalarFields).toEqual(expect.arrayContaining(["rowId", "customerId", "credentialsLast4", "status"]));
    const { body } = await service.graphql(`{ allDestinations { nodes { ${scalarFields.join(" ")} } } }`, undefined, jwt.owner);
    expect(body.errors).toBeUndefined();
    const mine = body.data.allDestinations.nodes.find((d: any) => d.rowId === destinationId);
    expect(mine).toMatchObject({ credentialsLast4: token.slice(-4), customerId: "1234567890", status: "active" });
    expectNoTrace(JSON.stringify(body), token);
    // The audit log is readable by the owner too: no trace of the token there either.
    const { body: audit } = await service.graphql(
      "query ($site: UUID!) { allAuditLogs(condition: { siteId: $site }) { nodes { action targetTable oldValues newValues } } }", { site: siteId }, jwt.owner);
    expect(audit.errors).toBeUndefined();
    expect(audit.data.allAuditLogs.nodes.some((n: any) => n.targetTable === "provider_credentials")).toBe(true);
    expectNoTrace(JSON.stringify(audit), token);
  });

  test("a credential copied onto another destination's row does not open", async () => {
    const a = await createDestination();
    const tokenA = newToken();
    await storeRefreshToken((text, values) => root().query(text, values), new Vault(config.vaultKeys), a, tokenA);
    const b = await createDestination();
    await storeRefreshToken((text, values) => root().query(text, values), new Vault(config.vaultKeys), b, newToken());
    // In a transaction that is rolled back: the copied row must not stay behind for the rotation test.
    await withRootDb(async (client) => {
      await client.query(
        `update app_private.provider_credentials t set key_id = s.key_id, wrapped_key = s.wrapped_key, nonce = s.nonce, ciphertext = s.ciphertext, auth_tag = s.auth_tag
           from app_private.provider_credentials s where s.destination_id = $1 and t.destination_id = $2`, [a, b]);
      await expect(readRefreshToken(client, new Vault(config.vaultKeys), b)).rejects.toBeInstanceOf(VaultError);
      expect(await readRefreshToken(client, new Vault(config.vaultKeys), a)).toBe(tokenA);
    });
  });

  // Rotation re-wraps every credential in the database: keep it last in this file.
  test("rotateVault re-wraps every row under the new key: key_id k2, ciphertext unchanged, and a vault holding only k2 reads them", async () => {
    const tokens = new Map<string, string>();
    for (let i = 0; i < 3; i++) {
      const destinationId = await createDestination();
      const token = newToken();
      expect((await setCredentials(destinationId, token, jwt.admin)).body.errors).toBeUndefined();
      tokens.set(destinationId, token);
    }
    const { rows: beforeRows } = await root().query("select * from app_private.provider_credentials order by destination_id");
    const { rows: [{ stale }] } = await root().query("select count(*)::int as stale from app_private.provider_credentials where key_id <> 'k2'");
    expect(stale).toBeGreaterThanOrEqual(3);

    const k2 = { id: "k2", key: randomBytes(32) };
    const rotating = new Vault([k2, { id: "test1", key: testKey.key }]);
    const progress: [number, number][] = [];
    const result = await rotateVault(owner, rotating, (done, total) => progress.push([done, total]));
    expect(result).toEqual({ rotated: stale, failed: [], remaining: 0, activeKeyId: "k2" });
    expect(progress).toHaveLength(stale);
    expect(progress[progress.length - 1]).toEqual([stale, stale]);

    const { rows: afterRows } = await root().query("select * from app_private.provider_credentials order by destination_id");
    expect(afterRows.map((r) => r.destination_id)).toEqual(beforeRows.map((r) => r.destination_id));
    afterRows.forEach((after, i) => {
      const before = beforeRows[i];
      expect(after.key_id).toBe("k2");
      expect(after.ciphertext.equals(before.ciphertext)).toBe(true);
      expect(after.nonce.equals(before.nonce)).toBe(true);
      expect(after.auth_tag.equals(before.auth_tag)).toBe(true);
      expect(after.wrapped_key.equals(before.wrapped_key)).toBe(false);
    });

    const onlyK2 = new Vault([k2]);
    const onlyOld = new Vault(config.vaultKeys);
    for (const [destinationId, token] of tokens) {
      expect(await readRefreshToken(owner, rotating, destinationId)).toBe(token);
      expect(await readRefreshToken(owner, onlyK2, destinationId)).toBe(token);
      await expect(readRefreshToken(owner, onlyOld, destinationId)).rejects.toThrow(/no key "k2"/);
    }

    // Rotation is audited (the key id changes), never the material.
    const [someId] = tokens.keys();
    const { rows: audit } = await root().query(
      "select old_values, new_values from app_public.audit_log where site_id = $1 and target_table = 'provider_credentials' and target_id = $2 and action = 'update'",
      [siteId, someId]);
    expect(audit).toEqual([expect.objectContaining({
      old_values: expect.objectContaining({ key_id: "test1", wrapped_key: "[redacted]", ciphertext: "[redacted]" }),
      new_values: expect.objectContaining({ key_id: "k2", wrapped_key: "[redacted, changed]", ciphertext: "[redacted]" }),
    })]);
    const everything = await everythingStored();
    for (const token of tokens.values()) expectNoTrace(everything, token);

    // A second run has nothing left to do.
    expect(await rotateVault(owner, rotating)).toEqual({ rotated: 0, failed: [], remaining: 0, activeKeyId: "k2" });

    // A row under a key that is no longer configured is reported and skipped; the others still rotate.
    const lost = await createDestination();
    await storeRefreshToken((text, values) => root().query(text, values), new Vault([{ id: "gone", key: randomBytes(32) }]), lost, newToken());
    const readable = await createDestination();
    const readableToken = newToken();
    expect((await setCredentials(readable, readableToken, jwt.admin)).body.errors).toBeUndefined();
    const k3 = new Vault([{ id: "k3", key: randomBytes(32) }, k2, { id: "test1", key: testKey.key }]);
    const partial = await rotateVault(owner, k3);
    expect(partial.failed).toEqual([{ destinationId: lost, reason: expect.stringContaining('no key "gone"') }]);
    expect(partial).toMatchObject({ activeKeyId: "k3", remaining: 1 });
    expect(partial.rotated).toBeGreaterThanOrEqual(4);
    expect(await readRefreshToken(owner, k3, readable)).toBe(readableToken);
  });
});
