/*
 * Tenant isolation through the real GraphQL endpoint. Two sites, A and B, each with a member of
 * every role and API keys. The schema is introspected over HTTP and every field of Query is
 * walked, so a table or lookup added later is probed without anyone editing this file: every
 * identity of site A runs every query, and nothing of B (ids, public key, name, emails, key
 * prefixes, node ids, cursors) may appear in any answer. Writes on B's rows by A's owner are
 * refused, change nothing, and leave a denied:… record in B's audit chain.
 */
import { randomUUID } from "node:crypto";
import { addMember, createApiKey, createSite, createUser, getRootPool, unique } from "./helpers/db";
import { flushDenials, startTestService, TestService, tokenFor } from "./helpers/http";

const ROLES = ["owner", "admin", "editor", "viewer"] as const;
const KEY_ROLES = ["admin", "editor", "viewer"] as const;
type Role = (typeof ROLES)[number];

interface Tenant {
  label: string;
  siteId: string;
  publicKey: string;
  name: string;
  users: Record<Role, { id: string; email: string }>;
  keys: { role: string; id: string; key: string }[];
  visitor: string;
  /** Our id of the tenant's call (sealed in the fixture). */
  callRowId: string;
  /** The external id of the sale its CRM confirmed. */
  saleExternalId: string;
  /** The Google Ads customer id of its destination. */
  customerId: string;
}

async function createTenant(label: string): Promise<Tenant> {
  const client = await getRootPool().connect();
  try {
    const users = {} as Tenant["users"];
    for (const role of ROLES) {
      const email = `${unique(`${label}-${role}`)}@example.com`;
      users[role] = { id: await createUser(client, email), email };
    }
    const site = await createSite(client, users.owner.id, `${label.toLowerCase()}.example`);
    // Names with distinct prefixes, so one tenant's name can never be a substring of the other's.
    const name = unique(`${label}-site`);
    await client.query("update app_public.sites set name = $2 where id = $1", [site.id, name]);
    for (const role of KEY_ROLES) await addMember(client, site.id, users[role].id, role);
    const keys = [];
    for (const role of KEY_ROLES) keys.push({ role, ...(await createApiKey(client, site.id, role)) });
    // Tracker data too (ledger, events, a session, a consent), through the real ingest function.
    const domain = `${label.toLowerCase()}.example`;
    const origin = `https://${domain}`;
    await client.query("update app_public.sites set allowed_origins = array[$2] where id = $1", [site.id, origin]);
    const visitor = unique(`v-${label}`).replace(/[^A-Za-z0-9_-]/g, "_");
    const { rows: [{ now }] } = await client.query("select now() - interval '1 minute' as now");
    const events = [0, 1].map((i) => ({
      id: randomUUID(), type: "pageview", ts: new Date(now.getTime() + i * 1000).toISOString(), visitor_id: visitor,
      url: `${origin}/landing-${label}?gclid=${label}-click`, consent: { analytics_storage: "granted" }, props: { tenant: label },
    }));
    const { rows: [{ result }] } = await client.query(
      "select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as result",
      [site.publicKey, JSON.stringify(events), origin]);
    expect(result.accepted).toBe(2);
    await client.query("select app_private.record_consent($1, $2, $3::jsonb, $4, '10.0.0.1')",
      [site.publicKey, visitor, JSON.stringify({ analytics_storage: "granted" }), origin]);
    // A call the provider reported, tied to the session of the visitor.
    await client.query("select app_private.record_call_event($1, $2::jsonb)", [site.id, JSON.stringify({
      call_id: `call-${label}`, status: "answered", caller: "+905551112233", tracking_number: "+908501112233",
      started_at: new Date(now.getTime() + 60_000).toISOString(), visitor_id: visitor, duration_s: 42 })]);
    // A frozen invoice of an earlier month (written directly: the grace rule is not the point here).
    await client.query(
      `insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
       values ($1, '2026-01-01', 0, 0, encode(digest('', 'sha256'), 'hex'), 'test')`, [site.id]);
    // Revenue: a sale a CRM confirmed for the visitor (with its queued conversion), the call
    // sealed by staff (call action, conversation, a second sale and conversion), and a
    // destination for the uploads. Written by the owner's own session, like the worker.
    const saleExternalId = `CRM-${label}`;
    await client.query(
      `select app_public.confirm_sale_and_enqueue($1, $2, 1250.00, 'TRY', now(), visitor_id => $3, email => $4, phone => '+905551112233')`,
      [site.id, saleExternalId, visitor, users.owner.email]);
    const { rows: [{ id: callRowId }] } = await client.query("select id from app_public.calls where site_id = $1", [site.id]);
    await client.query("select app_public.seal_call($1, $2, 300)", [site.id, callRowId]);
    const customerId = label === "Alpha" ? "1111111111" : "2222222222";
    await client.query("select app_public.create_destination($1, 'datamanager', $2, '123456')", [site.id, customerId]);
    // A right-to-erasure request (of a visitor who never came, so nothing of the fixture goes).
    await client.query("select app_public.request_erasure($1, 'visitor_id', $2)", [site.id, `gone_${label}`]);
    // Watchtower's verdicts on the site (the task runs them for every site; other tenants' rows are written too).
    await client.query("select app_private.run_watchtower()");
    const { rows: [counts] } = await client.query(
      `select (select count(*) from app_public.sales where site_id = $1)::int as sales,
              (select count(*) from app_public.offline_conversion_queue where site_id = $1)::int as queue,
              (select count(*) from app_public.conversations where site_id = $1)::int as conversations,
              (select count(*) from app_public.call_actions where site_id = $1)::int as actions,
              (select count(*) from app_public.destinations where site_id = $1)::int as destinations`, [site.id]);
    expect(counts).toEqual({ sales: 2, queue: 2, conversations: 1, actions: 1, destinations: 1 });
    return { label, siteId: site.id, publicKey: site.publicKey, name, users, keys, visitor, callRowId, saleExternalId, customerId };
  } finally {
    client.release();
  }
}

/* ------------------------------------------------------------------ introspection */

interface TypeRef {
  kind: string;
  name: string | null;
  ofType: TypeRef | null;
}
interface IntrospectedField {
  name: string;
  args: { name: string; type: TypeRef }[];
  type: TypeRef;
}
interface IntrospectedType {
  kind: string;
  name: string;
  fields: IntrospectedField[] | null;
  inputFields: { name: string }[] | null;
  interfaces: { name: string }[] | null;
}

const INTROSPECTION = `
  query Walk { __schema { queryType { name } types {
    kind name
    fields { name args { name type { ...T } } type { ...T } }
    inputFields { name }
    interfaces { name }
  } } }
  fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }`;

const named = (type: TypeRef): TypeRef => (type.ofType ? named(type.ofType) : type);
const isRequired = (type: TypeRef) => type.kind === "NON_NULL";

/** One walk step: a root field, a GraphQL document probing it, and what it was about. */
interface Probe {
  field: string;
  nodeType: string;
  kind: "connection" | "object" | "lookup" | "node";
  document: string;
}

/** What is known about each of B's rows, by GraphQL type: argument name → value. */
type Records = Record<string, Record<string, string>[]>;

class SchemaWalker {
  private types = new Map<string, IntrospectedType>();
  readonly queryTypeName: string;
  readonly skipped: string[] = [];

  constructor(schema: { queryType: { name: string }; types: IntrospectedType[] }) {
    for (const type of schema.types) this.types.set(type.name, type);
    this.queryTypeName = schema.queryType.name;
  }

  type(name: string): IntrospectedType {
    const type = this.types.get(name);
    if (!type) throw new Error(`type ${name} is not in the schema`);
    return type;
  }

  /** A table type: an object that implements Node (every PostGraphile row type does). */
  isTableType(name: string): boolean {
    const type = this.types.get(name);
    return type?.kind === "OBJECT" && name !== this.queryTypeName && (type.interfaces ?? []).some((i) => i.name === "Node");
  }

  tableTypes(): string[] {
    return [...this.types.keys()].filter((name) => this.isTableType(name)).sort();
  }

  /** A connection: an object with `nodes` listing a table type. */
  connectionNodeType(name: string): string | undefined {
    const type = this.types.get(name);
    const nodes = type?.kind === "OBJECT" ? type.fields?.find((f) => f.name === "nodes") : undefined;
    return nodes ? named(nodes.type).name ?? undefined : undefined;
  }

  /** Every scalar and enum field that needs no argument. */
  leaves(typeName: string): string[] {
    return (this.type(typeName).fields ?? [])
      .filter((f) => ["SCALAR", "ENUM"].includes(named(f.type).kind) && !f.args.some((a) => isRequired(a.type)))
      .map((f) => f.name);
  }

  /** Leaves, plus one level of related rows (connections and single rows) with their leaves. */
  rowSelection(typeName: string, aliasPrefix = ""): string {
    const alias = (name: string) => (aliasPrefix ? `${aliasPrefix}${name}: ${name}` : name);
    const parts = this.leaves(typeName).map(alias);
    for (const field of this.type(typeName).fields ?? []) {
      if (field.args.some((a) => isRequired(a.type))) continue;
      const target = named(field.type).name!;
      if (target === this.queryTypeName) continue;
      const nodeType = this.connectionNodeType(target);
      if (nodeType && this.isTableType(nodeType)) parts.push(`${alias(field.name)} { totalCount nodes { ${this.leaves(nodeType).join(" ")} } }`);
      else if (this.isTableType(target)) parts.push(`${alias(field.name)} { ${this.leaves(target).join(" ")} }`);
    }
    return parts.join(" ");
  }

  /** Root-level arguments for one B record, or undefined when a required one cannot be filled. */
  private argumentsFor(field: IntrospectedField, record: Record<string, string>): string | undefined {
    const given: string[] = [];
    for (const arg of field.args) {
      if (record[arg.name] !== undefined) given.push(`${arg.name}: ${JSON.stringify(record[arg.name])}`);
      else if (isRequired(arg.type)) return undefined;
    }
    return given.length ? `(${given.join(", ")})` : "";
  }

  /** Every probe for every field of Query, with B's keys filled into lookups. */
  probes(recordsOfB: Records, siteOfB: Record<string, string>): Probe[] {
    const probes: Probe[] = [];
    for (const field of this.type(this.queryTypeName).fields ?? []) {
      const target = named(field.type);
      if (target.name === this.queryTypeName || target.kind === "SCALAR" || target.kind === "ENUM") continue;
      const nodeType = target.kind === "OBJECT" ? this.connectionNodeType(target.name!) : undefined;

      if (nodeType) {
        if (field.args.some((a) => isRequired(a.type))) {
          this.skipped.push(field.name);
          continue;
        }
        const selection = `totalCount edges { cursor } nodes { ${this.rowSelection(nodeType)} }`;
        probes.push({ field: field.name, nodeType, kind: "connection", document: `{ ${field.name} { ${selection} } }` });
        // Asking for B's rows by name must not help either.
        const condition = field.args.find((a) => a.name === "condition");
        const conditionFields = condition ? this.type(named(condition.type).name!).inputFields ?? [] : [];
        if (conditionFields.some((f) => f.name === "siteId")) {
          probes.push({ field: field.name, nodeType, kind: "connection",
            document: `{ ${field.name}(condition: {siteId: ${JSON.stringify(siteOfB.siteId)}}) { ${selection} } }` });
        }
        continue;
      }

      if (target.kind === "INTERFACE" && target.name === "Node") {
        // A node id names its type, so each id is asked with the fields of the type it names
        // (all of them, and one level of related rows): asking for every table type's fields
        // on every id made each document tens of kB and the walk slow without probing more.
        const all = Object.entries(recordsOfB).flatMap(([type, records]) => records.map((r) => ({ type, id: r.id })));
        const aliases = all.map((r, i) =>
          `n${i}: ${field.name}(id: ${JSON.stringify(r.id)}) { __typename ... on ${r.type} { ${this.rowSelection(r.type)} } }`);
        // In groups, so no document exceeds the server's request-size limit (100 kB).
        let group: string[] = [];
        const flush = () => {
          if (group.length) probes.push({ field: field.name, nodeType: "Node", kind: "node", document: `{ ${group.join("\n")} }` });
          group = [];
        };
        for (const alias of aliases) {
          if (group.length && [...group, alias].join("\n").length > 80_000) flush();
          group.push(alias);
        }
        flush();
        continue;
      }

      if (target.kind !== "OBJECT") {
        this.skipped.push(field.name);
        continue;
      }
      const selection = this.isTableType(target.name!) ? this.rowSelection(target.name!) : this.leaves(target.name!).join(" ");
      // A lookup returning a row is tried with each of B's rows of that type; anything else
      // (currentUser, verifyAuditChain) with B's site where it takes one.
      const candidates = this.isTableType(target.name!) && field.args.length > 0 ? recordsOfB[target.name!] ?? [] : [siteOfB];
      const aliases = candidates
        .map((record) => this.argumentsFor(field, record))
        .filter((args): args is string => args !== undefined)
        .map((args, i) => `l${i}: ${field.name}${args} { ${selection} }`);
      if (aliases.length === 0) {
        this.skipped.push(field.name);
        continue;
      }
      probes.push({ field: field.name, nodeType: target.name!, kind: field.args.length > 0 ? "lookup" : "object", document: `{ ${aliases.join("\n")} }` });
    }
    return probes;
  }
}

/* ------------------------------------------------------------------ leak detection */

/** The response text, plus every string in it that decodes as base64 (node ids, cursors). */
function searchableText(body: unknown): string {
  const pieces = [JSON.stringify(body)];
  const visit = (value: unknown): void => {
    if (typeof value === "string") {
      if (/^[A-Za-z0-9+/_-]{8,}={0,2}$/.test(value)) pieces.push(Buffer.from(value, "base64").toString("utf8"));
    } else if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === "object") Object.values(value).forEach(visit);
  };
  visit(body);
  return pieces.join("\n").toLowerCase();
}

function leaksIn(text: string, needles: string[]): string[] {
  return needles.filter((needle) => text.includes(needle.toLowerCase()));
}

/* ------------------------------------------------------------------ fixtures */

let service: TestService;
let A: Tenant;
let B: Tenant;
let walker: SchemaWalker;
let recordsOfB: Records;
let needlesOfB: string[];

/** GraphQL as a tenant identity: a user's token or an API key. */
type Identity = { label: string; credential: string };
let identitiesOfA: Identity[];
let ownerOfB: Identity;

beforeAll(async () => {
  A = await createTenant("Alpha");
  B = await createTenant("Bravo");
  service = await startTestService();

  identitiesOfA = [
    ...(await Promise.all(ROLES.map(async (role) => ({ label: `A ${role} (user)`, credential: await tokenFor(A.users[role].id) })))),
    ...A.keys.map((k) => ({ label: `A ${k.role} (api key)`, credential: k.key })),
  ];
  ownerOfB = { label: "B owner", credential: await tokenFor(B.users.owner.id) };

  const introspection = await service.graphql(INTROSPECTION, undefined, ownerOfB.credential);
  expect(introspection.status).toBe(200);
  expect(introspection.body.errors).toBeUndefined();
  walker = new SchemaWalker(introspection.body.data.__schema);

  // B's node ids come from B's owner, who sees all of B; the row keys come from the database.
  const rowsOfB = await service.graphql(`{
    allSites { nodes { id rowId publicKey } }
    allUsers { nodes { id rowId email } }
    allSiteMembers { nodes { id siteId userId } }
    allApiKeys { nodes { id rowId siteId keyPrefix } }
    allAuditLogs(condition: {siteId: ${JSON.stringify(B.siteId)}}) { nodes { id siteId seq } }
    allSessions { nodes { id rowId siteId startedAt } }
    allEvents { nodes { id rowId siteId occurredAt } }
    allIngestIdempotencies { nodes { id siteId idempotencyKey occurredAt } }
    allConsents { nodes { id rowId siteId } }
    allInvoiceSnapshots { nodes { id siteId period } }
    allCalls { nodes { id rowId siteId callId } }
    allConversations { nodes { id rowId siteId callId } }
    allCallActions { nodes { id rowId siteId } }
    allSales { nodes { id rowId siteId externalId } }
    allOfflineConversionQueues { nodes { id rowId siteId saleId provider kind } }
    allDestinations { nodes { id rowId siteId customerId } }
    allErasureRequests { nodes { id rowId siteId subjectHash } }
    allWatchtowerChecks { nodes { id siteId checkName } }
  }`, undefined, ownerOfB.credential);
  expect(rowsOfB.body.errors).toBeUndefined();
  // A dashboard lists a destination's conversions by status: these fields must stay (an index, or an @isIndexed tag where the
  // primary key's site prefix reads the same rows).
  const byStatus = await service.graphql(`{
    allOfflineConversionQueues(condition: {status: "pending"}, orderBy: [STATUS_ASC]) { totalCount }
    allDestinations { nodes { offlineConversionQueuesBySiteIdAndDestinationId(filter: {status: {in: ["failed", "pending"]}}) { totalCount } } }
  }`, undefined, ownerOfB.credential);
  expect(byStatus.body.errors).toBeUndefined();
  const d = rowsOfB.body.data;
  recordsOfB = {
    Site: d.allSites.nodes.filter((n: any) => n.rowId === B.siteId),
    User: d.allUsers.nodes.filter((n: any) => ROLES.some((r) => B.users[r].id === n.rowId)),
    SiteMember: d.allSiteMembers.nodes.filter((n: any) => n.siteId === B.siteId),
    ApiKey: d.allApiKeys.nodes.filter((n: any) => n.siteId === B.siteId),
    AuditLog: d.allAuditLogs.nodes.map((n: any) => ({ ...n, seq: String(n.seq) })),
    Session: d.allSessions.nodes,
    Event: d.allEvents.nodes,
    IngestIdempotency: d.allIngestIdempotencies.nodes,
    Consent: d.allConsents.nodes,
    InvoiceSnapshot: d.allInvoiceSnapshots.nodes.filter((n: any) => n.siteId === B.siteId),
    Call: d.allCalls.nodes.filter((n: any) => n.siteId === B.siteId),
    Conversation: d.allConversations.nodes.filter((n: any) => n.siteId === B.siteId),
    CallAction: d.allCallActions.nodes.filter((n: any) => n.siteId === B.siteId),
    Sale: d.allSales.nodes.filter((n: any) => n.siteId === B.siteId),
    OfflineConversionQueue: d.allOfflineConversionQueues.nodes.filter((n: any) => n.siteId === B.siteId),
    Destination: d.allDestinations.nodes.filter((n: any) => n.siteId === B.siteId),
    ErasureRequest: d.allErasureRequests.nodes.filter((n: any) => n.siteId === B.siteId),
    WatchtowerCheck: d.allWatchtowerChecks.nodes.filter((n: any) => n.siteId === B.siteId),
  };
  expect(recordsOfB.Call).toHaveLength(1);
  // B's owner sees B's revenue rows: the CRM's sale and the sealed call's, their conversions, one action and conversation.
  expect([recordsOfB.Sale.length, recordsOfB.OfflineConversionQueue.length, recordsOfB.CallAction.length,
    recordsOfB.Conversation.length, recordsOfB.Destination.length]).toEqual([2, 2, 1, 1, 1]);
  expect(recordsOfB.Conversation[0].callId).toBe(B.callRowId);
  expect(recordsOfB.InvoiceSnapshot).toHaveLength(1);
  // B's owner sees B's tracker rows (one session of two events, their ledger rows, a consent).
  expect([recordsOfB.Session.length, recordsOfB.Event.length, recordsOfB.IngestIdempotency.length, recordsOfB.Consent.length])
    .toEqual([1, 2, 2, 1]);
  const db = getRootPool();
  const counts = (await db.query(
    `select (select count(*) from app_public.site_members where site_id = $1)::int as members,
            (select count(*) from app_public.api_keys where site_id = $1)::int as keys,
            (select count(*) from app_public.audit_log where site_id = $1)::int as audit`, [B.siteId])).rows[0];
  // The fixtures are what the test thinks they are, or every later "no leak" would be hollow.
  expect(recordsOfB.Site).toHaveLength(1);
  expect(recordsOfB.User.map((u) => u.rowId).sort()).toEqual(ROLES.map((r) => B.users[r].id).sort());
  expect(recordsOfB.SiteMember).toHaveLength(counts.members);
  expect(recordsOfB.ApiKey).toHaveLength(counts.keys);
  expect(recordsOfB.AuditLog).toHaveLength(counts.audit);
  expect(counts).toEqual({ members: 4, keys: 3, audit: expect.any(Number) });
  expect(counts.audit).toBeGreaterThanOrEqual(8); // members, keys and the rename were audited

  needlesOfB = [
    B.siteId, B.publicKey, B.name,
    ...ROLES.flatMap((r) => [B.users[r].id, B.users[r].email]),
    ...B.keys.flatMap((k) => [k.id, k.key]),
    ...recordsOfB.ApiKey.map((k) => k.keyPrefix),
    ...Object.values(recordsOfB).flat().map((r) => r.id),
    ...recordsOfB.Session.map((r) => r.rowId), ...recordsOfB.Event.map((r) => r.rowId),
    B.visitor, "landing-Bravo", "Bravo-click", "call-Bravo", ...recordsOfB.Call.map((r) => r.rowId),
    B.saleExternalId, B.customerId,
    ...[recordsOfB.Sale, recordsOfB.OfflineConversionQueue, recordsOfB.CallAction, recordsOfB.Conversation, recordsOfB.Destination]
      .flat().map((r) => r.rowId),
  ];
});

afterAll(async () => {
  await service?.stop();
});

/* ------------------------------------------------------------------ the walk */

describe("reading across tenants", () => {
  let probes: Probe[];

  beforeAll(() => {
    // Fields that take a site (and a billing period) get B's, with the month of its frozen invoice.
    probes = walker.probes(recordsOfB, { siteId: B.siteId, period: "2026-01-01" });
  });

  test("the walk covers every table type, by connection and by lookup, and node(id)", () => {
    const walked = new Set(probes.map((p) => p.nodeType));
    for (const type of ["Site", "SiteMember", "ApiKey", "AuditLog", "User"]) expect(walked).toContain(type);
    for (const type of walker.tableTypes()) expect(walked).toContain(type);
    const connections = new Set(probes.filter((p) => p.kind === "connection").map((p) => p.nodeType));
    expect([...connections].sort()).toEqual(expect.arrayContaining(["ApiKey", "AuditLog", "Site", "SiteMember", "User"]));
    const lookups = new Set(probes.filter((p) => p.kind === "lookup").map((p) => p.nodeType));
    expect([...lookups].sort()).toEqual(expect.arrayContaining(["ApiKey", "AuditLog", "Site", "SiteMember", "User"]));
    expect(probes.some((p) => p.kind === "node")).toBe(true);
    // Lookups whose arguments the walker could not fill from B's rows.
    expect(walker.skipped).toEqual([]);
  });

  test("control: B's owner running the same walk finds every one of B's values", async () => {
    // If the walk selected too little to ever show B's data, the isolation test below would
    // pass for the wrong reason. The raw API keys are never readable, by anyone.
    const secretKeys = B.keys.map((k) => k.key);
    const found = new Set<string>();
    const failures: unknown[] = [];
    for (const probe of probes) {
      const { status, body } = await service.graphql(probe.document, undefined, ownerOfB.credential);
      if (status !== 200 || body.errors) failures.push({ field: probe.field, status, errors: body.errors });
      const text = searchableText(body);
      for (const needle of leaksIn(text, needlesOfB)) found.add(needle);
    }
    expect(needlesOfB.filter((n) => !found.has(n) && !secretKeys.includes(n))).toEqual([]);
    expect(secretKeys.filter((k) => found.has(k))).toEqual([]);
    // B's owner may run every one of these queries on B without any error.
    expect(failures).toEqual([]);
  });

  test("no identity of A sees anything of B, whatever field it asks", async () => {
    const leaks: string[] = [];
    for (const identity of identitiesOfA) {
      let ownSiteSeen = false;
      for (const probe of probes) {
        const { status, body } = await service.graphql(probe.document, undefined, identity.credential);
        // Either data, or a refusal by our code (verifyAuditChain on B): never a broken query.
        const unexpected = (body.errors ?? []).filter((e: any) => e.extensions?.code !== "forbidden");
        expect({ who: identity.label, field: probe.field, status, unexpected }).toEqual({ who: identity.label, field: probe.field, status: 200, unexpected: [] });
        const text = searchableText(body);
        for (const needle of leaksIn(text, needlesOfB)) leaks.push(`${identity.label} via ${probe.field}: ${needle}`);
        if (text.includes(A.siteId)) ownSiteSeen = true;
      }
      // The identity really was authenticated and the walk really returned its own rows.
      expect({ who: identity.label, ownSiteSeen }).toEqual({ who: identity.label, ownSiteSeen: true });
    }
    expect(leaks).toEqual([]);
  });
});

/* ------------------------------------------------------------------ writing across tenants */

describe("writing across tenants", () => {
  async function snapshotOfB(): Promise<unknown> {
    const { rows } = await getRootPool().query(
      `select (select to_jsonb(s) from app_public.sites s where s.id = $1) as site,
              (select jsonb_agg(to_jsonb(m) order by m.user_id) from app_public.site_members m where m.site_id = $1) as members,
              (select jsonb_agg(to_jsonb(k) - 'last_used_at' order by k.id) from app_public.api_keys k where k.site_id = $1) as keys,
              (select jsonb_agg(to_jsonb(x) order by x.id) from app_public.sales x where x.site_id = $1) as sales,
              (select jsonb_agg(to_jsonb(x) order by x.id) from app_public.offline_conversion_queue x where x.site_id = $1) as queue,
              (select jsonb_agg(to_jsonb(x) order by x.id) from app_public.conversations x where x.site_id = $1) as conversations,
              (select jsonb_agg(to_jsonb(x) order by x.id) from app_public.call_actions x where x.site_id = $1) as call_actions,
              (select jsonb_agg(to_jsonb(x) order by x.id) from app_public.destinations x where x.site_id = $1) as destinations,
              (select jsonb_agg(jsonb_build_object('revision', j.revision, 'run_at', j.run_at) order by j.id) from graphile_worker.jobs j
                where j.key like '%' || $1) as jobs`,
      [B.siteId]);
    return rows[0];
  }

  async function lastSeqOfB(): Promise<number> {
    const { rows } = await getRootPool().query("select coalesce(max(seq), 0)::int as seq from app_public.audit_log where site_id = $1", [B.siteId]);
    return rows[0].seq;
  }

  const attempts: [string, string, () => Record<string, unknown>, string, () => string | null][] = [
    ["updateSiteSettings", "mutation($s: UUID!) { updateSiteSettings(input: {siteId: $s, name: \"taken over\"}) { result { rowId name } } }",
      () => ({ s: B.siteId }), "sites", () => B.siteId],
    ["addSiteMember", "mutation($s: UUID!, $e: String!) { addSiteMember(input: {siteId: $s, email: $e, role: owner}) { result { role } } }",
      () => ({ s: B.siteId, e: A.users.owner.email }), "site_members", () => null],
    ["removeSiteMember", "mutation($s: UUID!, $u: UUID!) { removeSiteMember(input: {siteId: $s, userId: $u}) { result } }",
      () => ({ s: B.siteId, u: B.users.viewer.id }), "site_members", () => B.users.viewer.id],
    ["createApiKey", "mutation($s: UUID!) { createApiKey(input: {siteId: $s, role: admin}) { result { key apiKeyId } } }",
      () => ({ s: B.siteId }), "api_keys", () => null],
    ["revokeApiKey", "mutation($k: UUID!) { revokeApiKey(input: {apiKeyId: $k}) { result { rowId revokedAt } } }",
      () => ({ k: B.keys[0].id }), "api_keys", () => B.keys[0].id],
    ["deleteSite", "mutation($s: UUID!) { deleteSite(input: {siteId: $s}) { result } }",
      () => ({ s: B.siteId }), "sites", () => B.siteId],
    ["verifyAuditChain", "query($s: UUID!) { verifyAuditChain(siteId: $s) { ok checkedRows } }",
      () => ({ s: B.siteId }), "audit_log", () => null],
    ["sealCall", "mutation($s: UUID!, $c: UUID!) { sealCall(input: {siteId: $s, callId: $c, value: \"1\"}) { result { rowId } } }",
      () => ({ s: B.siteId, c: B.callRowId }), "calls", () => B.callRowId],
    ["junkCall", "mutation($s: UUID!, $c: UUID!) { junkCall(input: {siteId: $s, callId: $c}) { result { rowId } } }",
      () => ({ s: B.siteId, c: B.callRowId }), "calls", () => B.callRowId],
    ["undoCallAction", "mutation($s: UUID!, $c: UUID!) { undoCallAction(input: {siteId: $s, callId: $c}) { result { rowId } } }",
      () => ({ s: B.siteId, c: B.callRowId }), "calls", () => B.callRowId],
    ["confirmSaleAndEnqueue", `mutation($s: UUID!, $t: Datetime!) { confirmSaleAndEnqueue(input: {siteId: $s, externalId: "CRM-taken-over",
        amount: "1", currency: "TRY", occurredAt: $t}) { result { rowId } } }`,
      () => ({ s: B.siteId, t: new Date().toISOString() }), "sales", () => B.siteId],
    ["updateOfflineConversionQueueAttribution",
      "mutation($s: UUID!) { updateOfflineConversionQueueAttribution(input: {siteId: $s}) { result } }",
      () => ({ s: B.siteId }), "offline_conversion_queue", () => B.siteId],
    ["createDestination", "mutation($s: UUID!) { createDestination(input: {siteId: $s, rail: \"google_ads\", customerId: \"3333333333\", conversionAction: \"9\"}) { result { rowId } } }",
      () => ({ s: B.siteId }), "destinations", () => "3333333333"],
  ];

  test.each(attempts)("%s on B's rows by A's owner is forbidden, changes nothing and is audited in B", async (field, document, variables, targetTable, targetId) => {
    const before = await snapshotOfB();
    const seqBefore = await lastSeqOfB();

    const { status, body } = await service.graphql(document, variables(), await tokenFor(A.users.owner.id));
    expect(status).toBe(200);
    expect(body.data?.[field] ?? null).toBeNull();
    expect(body.errors).toHaveLength(1);
    expect(body.errors[0].extensions).toEqual({ code: "forbidden" });
    expect(body.errors[0].message).toBe("You are not allowed to do this.");
    // Nothing about how the refusal was made: no SQLSTATE, detail JSON, schema or B's data.
    expect(JSON.stringify(body)).not.toMatch(/OM403|detail|actor|app_(private|public|hidden)|sql|select|\bat .+:\d+/i);
    expect(leaksIn(searchableText(body), needlesOfB)).toEqual([]);

    expect(await snapshotOfB()).toEqual(before);

    // The denial is written on its own connection after the request's transaction rolled back.
    await flushDenials();
    const { rows } = await getRootPool().query(
      `select action, target_table, target_id, actor_user_id, actor_api_key_id from app_public.audit_log
        where site_id = $1 and seq > $2 order by seq`, [B.siteId, seqBefore]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ action: expect.stringMatching(/^denied:/), target_table: targetTable, actor_user_id: A.users.owner.id, actor_api_key_id: null });
    if (targetId() !== null) expect(rows[0].target_id).toBe(targetId());
  });

  test("an A API key revoking B's key is forbidden and audited in B with the key as actor", async () => {
    const seqBefore = await lastSeqOfB();
    const adminKeyOfA = A.keys.find((k) => k.role === "admin")!;
    const { body } = await service.graphql("mutation($k: UUID!) { revokeApiKey(input: {apiKeyId: $k}) { result { rowId } } }",
      { k: B.keys[1].id }, adminKeyOfA.key);
    expect(body.errors?.[0]?.extensions?.code).toBe("forbidden");
    await flushDenials();
    const { rows } = await getRootPool().query(
      `select action, actor_user_id, actor_api_key_id, (select revoked_at from app_public.api_keys where id = $3) as revoked_at
         from app_public.audit_log where site_id = $1 and seq > $2 order by seq`, [B.siteId, seqBefore, B.keys[1].id]);
    expect(rows).toEqual([{ action: expect.stringMatching(/^denied:/), actor_user_id: null, actor_api_key_id: adminKeyOfA.id, revoked_at: null }]);
  });

  test("B's audit chain still verifies, denials included", async () => {
    await flushDenials();
    const { rows } = await getRootPool().query("select * from app_public.verify_audit_chain($1)", [B.siteId]);
    expect(rows[0]).toMatchObject({ ok: true, first_bad_seq: null, problem: null });
    const denied = await getRootPool().query(
      "select count(*)::int as n from app_public.audit_log where site_id = $1 and action like 'denied:%' and actor_user_id = $2",
      [B.siteId, A.users.owner.id]);
    expect(denied.rows[0].n).toBeGreaterThanOrEqual(attempts.length);
    expect(Number(rows[0].checked_rows)).toBe(await lastSeqOfB());
    // And B's owner, through GraphQL, gets the same answer.
    const { body } = await service.graphql("query($s: UUID!) { verifyAuditChain(siteId: $s) { ok problem } }", { s: B.siteId }, ownerOfB.credential);
    expect(body).toEqual({ data: { verifyAuditChain: { ok: true, problem: null } } });
  });
});
