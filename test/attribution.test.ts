/*
 * SPEC §7, row by row. First the pure part — classify_landing(url, referrer, site domain) as a
 * table whose every row is a rule or a boundary of the spec — then the stateful part through the
 * real front door (app_private.ingest_events), reading back app_public.sessions and events:
 * the 30-minute gap at its exact boundary, the pageviews that open a new session, attribution
 * from the earliest event whatever the arrival order, and S3 with its 90-day window.
 */
import { createHash, randomUUID } from "node:crypto";
import pg from "pg";
import { createUser, getRootPool, unique, withRootDb } from "./helpers/db";

const DOMAIN = "shop.example";
const ORIGIN = "https://shop.example";
const LANDING = "https://shop.example/landing";

/* ------------------------------------------------------------- classify_landing */

interface Case {
  name: string;
  url: string;
  referrer?: string | null;
  tier: "S1" | "S2" | "S4" | "S5";
  source: string;
  /** [click_id_type, click_id] when the rule is about the click id; unchecked when absent. */
  click?: [string, string];
}

const PAID_MEDIA = ["cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "sem", "cpm", "display", "retargeting"];
const PAID_SOCIAL_MEDIA = ["paid_social", "paidsocial", "paid-social", "social_paid", "social-paid"];

const CASES: Case[] = [
  // S1: Google click ids, gclid > gbraid > wbraid whatever their order in the URL.
  { name: "gclid", url: `${LANDING}?gclid=G1`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gbraid", url: `${LANDING}?gbraid=GB1`, tier: "S1", source: "google_ads", click: ["gbraid", "GB1"] },
  { name: "wbraid", url: `${LANDING}?wbraid=WB1`, tier: "S1", source: "google_ads", click: ["wbraid", "WB1"] },
  { name: "gbraid beats wbraid written first", url: `${LANDING}?wbraid=WB1&gbraid=GB1`, tier: "S1", source: "google_ads", click: ["gbraid", "GB1"] },
  { name: "gclid beats gbraid and wbraid written first", url: `${LANDING}?wbraid=WB1&gbraid=GB1&gclid=G1`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid beats a paid utm_medium", url: `${LANDING}?utm_source=bing&utm_medium=cpc&gclid=G1`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid beats msclkid", url: `${LANDING}?msclkid=M1&gclid=G1`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid beats ttclid", url: `${LANDING}?ttclid=T1&gclid=G1`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid value is trimmed (%20)", url: `${LANDING}?gclid=%20G1%20`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid value is trimmed (+)", url: `${LANDING}?gclid=+G1+`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid value is percent-decoded", url: `${LANDING}?gclid=EAIa%2FIQ%3D%3D`, tier: "S1", source: "google_ads", click: ["gclid", "EAIa/IQ=="] },
  { name: "gclid before a fragment", url: `${LANDING}?gclid=G1#top`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "a '?' inside the fragment is not the query (hash-routed page)", url: "https://shop.example/#/offer?gclid=G1", tier: "S5", source: "organic:direct" },
  { name: "the query ends at the fragment, even one holding a '?'", url: `${LANDING}?gclid=G1#/offer?gclid=G2`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  { name: "gclid after other parameters", url: `${LANDING}?a=1&gclid=G1&b=2`, tier: "S1", source: "google_ads", click: ["gclid", "G1"] },
  // Empty counts as absent: the next rule decides.
  { name: "empty gclid= is absent (falls to S2)", url: `${LANDING}?gclid=&utm_source=bing&utm_medium=cpc`, tier: "S2", source: "paid:bing" },
  { name: "blank gclid=%20 is absent (direct)", url: `${LANDING}?gclid=%20`, tier: "S5", source: "organic:direct" },
  { name: "empty gclid falls to gbraid", url: `${LANDING}?gclid=&gbraid=GB1`, tier: "S1", source: "google_ads", click: ["gbraid", "GB1"] },
  // Names are matched as written.
  { name: "GCLID is not gclid", url: `${LANDING}?GCLID=G1`, tier: "S5", source: "organic:direct" },
  { name: "Gclid is not gclid (search referrer decides)", url: `${LANDING}?Gclid=G1`, referrer: "https://www.google.com/", tier: "S5", source: "organic:search" },
  { name: "xgclid is not gclid", url: `${LANDING}?xgclid=G1`, tier: "S5", source: "organic:direct" },

  // S2: every paid medium, source lower-cased; msclkid alone.
  ...PAID_MEDIA.map((medium): Case => ({
    name: `utm_medium=${medium}`, url: `${LANDING}?utm_source=bing&utm_medium=${medium}`, tier: "S2", source: "paid:bing",
  })),
  { name: "utm_medium compared lower-cased (CPC)", url: `${LANDING}?utm_source=bing&utm_medium=CPC`, tier: "S2", source: "paid:bing" },
  { name: "utm_medium compared lower-cased (Paid_Search)", url: `${LANDING}?utm_source=bing&utm_medium=Paid_Search`, tier: "S2", source: "paid:bing" },
  { name: "utm_source lower-cased in the source", url: `${LANDING}?utm_source=Bing&utm_medium=cpc`, tier: "S2", source: "paid:bing" },
  { name: "utm_medium percent-encoded (%63pc)", url: `${LANDING}?utm_source=bing&utm_medium=%63pc`, tier: "S2", source: "paid:bing" },
  { name: "utm_medium trimmed", url: `${LANDING}?utm_source=bing&utm_medium=%20cpc%20`, tier: "S2", source: "paid:bing" },
  { name: "utm values trimmed of tabs and line breaks too", url: `${LANDING}?utm_source=%09bing%0A&utm_medium=cpc%0D%0A`, tier: "S2", source: "paid:bing" },
  { name: "msclkid alone", url: `${LANDING}?msclkid=M1`, tier: "S2", source: "paid:microsoft_ads", click: ["msclkid", "M1"] },
  { name: "msclkid with a utm_source", url: `${LANDING}?msclkid=M1&utm_source=bing&utm_medium=cpc`, tier: "S2", source: "paid:bing", click: ["msclkid", "M1"] },
  { name: "msclkid beats ttclid (S2 before S4)", url: `${LANDING}?ttclid=T1&msclkid=M1`, tier: "S2", source: "paid:microsoft_ads", click: ["msclkid", "M1"] },
  { name: "empty msclkid= is absent", url: `${LANDING}?msclkid=`, tier: "S5", source: "organic:direct" },
  { name: "MSCLKID is not msclkid", url: `${LANDING}?MSCLKID=M1`, tier: "S5", source: "organic:direct" },
  { name: "a non-paid medium is not S2 (cpcx)", url: `${LANDING}?utm_source=bing&utm_medium=cpcx`, tier: "S5", source: "organic:campaign" },
  { name: "Utm_Medium is not utm_medium", url: `${LANDING}?utm_source=bing&Utm_Medium=cpc`, tier: "S5", source: "organic:campaign" },

  // S4: paid medium with a social source, paid-social click ids and media, canonical networks.
  { name: "cpc with facebook is S4", url: `${LANDING}?utm_source=facebook&utm_medium=cpc`, tier: "S4", source: "paid_social:facebook" },
  { name: "cpc with fb is S4 facebook", url: `${LANDING}?utm_source=fb&utm_medium=cpc`, tier: "S4", source: "paid_social:facebook" },
  { name: "display with ig is S4 instagram", url: `${LANDING}?utm_source=ig&utm_medium=display`, tier: "S4", source: "paid_social:instagram" },
  { name: "ppc with x is S4 twitter", url: `${LANDING}?utm_source=x&utm_medium=ppc`, tier: "S4", source: "paid_social:twitter" },
  { name: "cpc with LinkedIn is S4 linkedin", url: `${LANDING}?utm_source=LinkedIn&utm_medium=cpc`, tier: "S4", source: "paid_social:linkedin" },
  { name: "cpc with tiktok is S4", url: `${LANDING}?utm_source=tiktok&utm_medium=cpc`, tier: "S4", source: "paid_social:tiktok" },
  { name: "ttclid", url: `${LANDING}?ttclid=T1`, tier: "S4", source: "paid_social:tiktok", click: ["ttclid", "T1"] },
  { name: "li_fat_id", url: `${LANDING}?li_fat_id=L1`, tier: "S4", source: "paid_social:linkedin", click: ["li_fat_id", "L1"] },
  { name: "twclid", url: `${LANDING}?twclid=W1`, tier: "S4", source: "paid_social:twitter", click: ["twclid", "W1"] },
  { name: "TTCLID is not ttclid", url: `${LANDING}?TTCLID=T1`, tier: "S5", source: "organic:direct" },
  { name: "blank ttclid is absent", url: `${LANDING}?ttclid=%20%20`, tier: "S5", source: "organic:direct" },
  ...PAID_SOCIAL_MEDIA.map((medium): Case => ({
    name: `utm_medium=${medium}`, url: `${LANDING}?utm_source=facebook&utm_medium=${medium}`, tier: "S4", source: "paid_social:facebook",
  })),
  { name: "paid social medium lower-cased (Paid_Social)", url: `${LANDING}?utm_source=facebook&utm_medium=Paid_Social`, tier: "S4", source: "paid_social:facebook" },
  { name: "paid_social with fb", url: `${LANDING}?utm_source=fb&utm_medium=paid_social`, tier: "S4", source: "paid_social:facebook" },
  { name: "paid_social with ig", url: `${LANDING}?utm_source=ig&utm_medium=paid_social`, tier: "S4", source: "paid_social:instagram" },
  { name: "paid_social with Instagram", url: `${LANDING}?utm_source=Instagram&utm_medium=paid_social`, tier: "S4", source: "paid_social:instagram" },
  { name: "paid_social with x", url: `${LANDING}?utm_source=x&utm_medium=paid_social`, tier: "S4", source: "paid_social:twitter" },
  { name: "paid_social with twitter", url: `${LANDING}?utm_source=twitter&utm_medium=paid_social`, tier: "S4", source: "paid_social:twitter" },

  // S5 direct: no referrer, an empty one, or a self-referral (the domain or a subdomain of it).
  { name: "no referrer", url: LANDING, referrer: null, tier: "S5", source: "organic:direct" },
  { name: "empty referrer", url: LANDING, referrer: "", tier: "S5", source: "organic:direct" },
  { name: "self-referral from the domain", url: LANDING, referrer: "https://shop.example/cart", tier: "S5", source: "organic:direct" },
  { name: "self-referral from a subdomain", url: LANDING, referrer: "https://blog.shop.example/post", tier: "S5", source: "organic:direct" },
  { name: "self-referral with an upper-case host", url: LANDING, referrer: "https://Blog.SHOP.example/", tier: "S5", source: "organic:direct" },
  { name: "evilshop.example is not a subdomain", url: LANDING, referrer: "https://evilshop.example/", tier: "S5", source: "organic:referral" },
  { name: "shop.example.evil.example is not the site", url: LANDING, referrer: "https://shop.example.evil.example/", tier: "S5", source: "organic:referral" },
  // S5 search.
  ...[
    "https://google.com/", "https://www.google.com/search?q=shoes", "https://google.com.tr/", "https://www.google.com.tr/",
    "https://www.google.de/", "https://WWW.Google.COM/", "https://bing.com/", "https://www.bing.com/search?q=x",
    "https://yahoo.com/", "https://search.yahoo.com/", "https://yandex.ru/", "https://yandex.com.tr/", "https://duckduckgo.com/",
    "https://baidu.com/", "https://www.baidu.com/", "https://ecosia.org/", "https://www.ecosia.org/search?q=x",
    "https://search.brave.com/search?q=x",
  ].map((referrer): Case => ({ name: `search referrer ${referrer}`, url: LANDING, referrer, tier: "S5", source: "organic:search" })),
  { name: "notgoogle.com is not a search engine", url: LANDING, referrer: "https://notgoogle.com/", tier: "S5", source: "organic:referral" },
  { name: "google.evil.example is not a search engine", url: LANDING, referrer: "https://www.google.evil.example/", tier: "S5", source: "organic:referral" },
  // S5 social.
  ...["https://l.facebook.com/l.php?u=x", "https://facebook.com/", "https://t.co/abc", "https://lnkd.in/xyz", "https://www.instagram.com/",
    "https://x.com/someone", "https://twitter.com/", "https://www.linkedin.com/feed", "https://www.tiktok.com/", "https://www.reddit.com/r/x",
  ].map((referrer): Case => ({ name: `social referrer ${referrer}`, url: LANDING, referrer, tier: "S5", source: "organic:social" })),
  { name: "fbclid alone is organic social", url: `${LANDING}?fbclid=F1`, tier: "S5", source: "organic:social" },
  { name: "notfacebook.com is not social", url: LANDING, referrer: "https://notfacebook.com/", tier: "S5", source: "organic:referral" },
  // S5 email, campaign, referral.
  ...["email", "e-mail", "newsletter", "Email", "NEWSLETTER"].map((medium): Case => ({
    name: `utm_medium=${medium} is email`, url: `${LANDING}?utm_source=mailchimp&utm_medium=${medium}`, tier: "S5", source: "organic:email",
  })),
  { name: "utm_campaign alone is a campaign", url: `${LANDING}?utm_campaign=spring`, tier: "S5", source: "organic:campaign" },
  { name: "utm_source alone is a campaign", url: `${LANDING}?utm_source=partner`, tier: "S5", source: "organic:campaign" },
  { name: "a non-paid medium is a campaign", url: `${LANDING}?utm_source=partner&utm_medium=banner`, tier: "S5", source: "organic:campaign" },
  { name: "empty UTMs are absent", url: `${LANDING}?utm_source=&utm_medium=&utm_campaign=%20`, tier: "S5", source: "organic:direct" },
  { name: "another site refers", url: LANDING, referrer: "https://news.example/article", tier: "S5", source: "organic:referral" },
];

interface Landing {
  tier: string;
  source: string;
  click_id: string | null;
  click_id_type: string | null;
}

describe("classify_landing (SPEC §7 table)", () => {
  test("the case names are unique, so a failure names one case", () => {
    // Guards the table itself: a duplicated name would hide which row failed.
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });

  test.each(CASES.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const { rows } = await getRootPool().query<Landing>(
      `select (r).tier, (r).source, (r).click_id, (r).click_id_type
         from (select app_hidden.classify_landing($1, $2, $3) as r) x`, [c.url, c.referrer ?? null, DOMAIN]);
    expect({ tier: rows[0].tier, source: rows[0].source }).toEqual({ tier: c.tier, source: c.source });
    if (c.click) {
      expect([rows[0].click_id_type, rows[0].click_id]).toEqual(c.click);
    }
  });
});

/* ------------------------------------------------------------- sessions through ingest_events */

interface Site {
  id: string;
  publicKey: string;
  /** The transaction's now(), truncated to the millisecond: every ts is relative to it. */
  now: number;
}

interface TrackerEvent {
  id: string;
  type: string;
  ts: string;
  visitor_id: string;
  url?: string;
  referrer?: string;
  consent: Record<string, string>;
}

interface SessionRow {
  id: string;
  visitor_id: string;
  started_at: Date;
  ended_at: Date;
  event_count: number;
  landing_url: string | null;
  referrer: string | null;
  attribution_tier: string;
  attribution_source: string;
  click_id: string | null;
  click_id_type: string | null;
  assisting_click_id: string | null;
  assisting_click_id_type: string | null;
  assisting_session_id: string | null;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

async function makeSite(client: pg.ClientBase): Promise<Site> {
  const ownerId = await createUser(client);
  const { rows } = await client.query(
    `select s.id, s.public_key, (extract(epoch from date_trunc('milliseconds', now())) * 1000)::float8 as now
       from app_private.create_site($1, $2, $3, consent_mode => 'implied', allowed_origins => array[$4]) s`,
    [ownerId, unique("Attribution"), DOMAIN, ORIGIN]);
  return { id: rows[0].id, publicKey: rows[0].public_key, now: Number(rows[0].now) };
}

/** A tracker event at `at` ms (epoch), with analytics consent so the visitor key is the visitor id. */
function event(visitor: string, at: number, url: string | undefined, extra: Partial<TrackerEvent> = {}): TrackerEvent {
  return {
    id: randomUUID(), type: "pageview", ts: new Date(at).toISOString(), visitor_id: visitor,
    ...(url === undefined ? {} : { url }), consent: { analytics_storage: "granted" }, ...extra,
  };
}

/** One POST /api/sync; every event must be accepted (a rejection would make the test meaningless). */
async function ingest(client: pg.ClientBase, site: Site, events: TrackerEvent[]): Promise<void> {
  const { rows } = await client.query(
    "select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as r",
    [site.publicKey, JSON.stringify(events), ORIGIN]);
  expect(rows[0].r).toEqual({ accepted: events.length, duplicates: 0, rejected: [] });
}

async function sessionsOf(client: pg.ClientBase, site: Site, visitor: string): Promise<SessionRow[]> {
  const { rows } = await client.query<SessionRow>(
    `select id, visitor_id, started_at, ended_at, event_count, landing_url, referrer, attribution_tier, attribution_source,
            click_id, click_id_type, assisting_click_id, assisting_click_id_type, assisting_session_id
       from app_public.sessions where site_id = $1 and visitor_key = $2 order by started_at, id`, [site.id, visitor]);
  return rows;
}

/** event id → session id, for the given events. */
async function sessionIdsOf(client: pg.ClientBase, site: Site, events: TrackerEvent[]): Promise<string[]> {
  const { rows } = await client.query<{ id: string; session_id: string | null }>(
    "select id, session_id from app_public.events where site_id = $1 and id = any($2::uuid[])", [site.id, events.map((e) => e.id)]);
  const byId = new Map(rows.map((r) => [r.id, r.session_id]));
  return events.map((e) => byId.get(e.id) ?? "missing");
}

/** SPEC §6/§4-sessionizer: md5(site id || '/' || first event id) as a uuid, computed here independently. */
function expectedSessionId(siteId: string, firstEventId: string): string {
  const hex = createHash("md5").update(`${siteId}/${firstEventId}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

describe("sessions through ingest_events (SPEC §7)", () => {
  // Both placement paths: in-order events extend the last session (place_event); an event that
  // arrives before a later one re-derives the visitor's sessions (rebuild_sessions).
  const ORDERS = [["in one request, in order"], ["in two requests, the later event first"]] as const;

  async function send(client: pg.ClientBase, site: Site, events: TrackerEvent[], order: string): Promise<void> {
    if (order.startsWith("in one")) {
      await ingest(client, site, events);
    } else {
      for (const e of [...events].reverse()) await ingest(client, site, [e]);
    }
  }

  test.each(ORDERS)("a gap of exactly 30 minutes joins, 30 minutes and 1 ms splits (%s)", async (order) => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - 2 * HOUR;
      const joined = [event("v_join", t0, LANDING), event("v_join", t0 + 30 * MINUTE, `${LANDING}/2`)];
      const split = [event("v_split", t0, LANDING), event("v_split", t0 + 30 * MINUTE + 1, `${LANDING}/2`)];
      await send(client, site, [...joined, ...split], order);

      const one = await sessionsOf(client, site, "v_join");
      expect(one.map((s) => [s.started_at.getTime(), s.ended_at.getTime(), s.event_count])).toEqual([[t0, t0 + 30 * MINUTE, 2]]);
      expect(await sessionIdsOf(client, site, joined)).toEqual([one[0].id, one[0].id]);

      const two = await sessionsOf(client, site, "v_split");
      expect(two.map((s) => [s.started_at.getTime(), s.event_count])).toEqual([[t0, 1], [t0 + 30 * MINUTE + 1, 1]]);
      expect(await sessionIdsOf(client, site, split)).toEqual([two[0].id, two[1].id]);
    });
  });

  // Each row: the landing URL, the next pageview a minute later, and how many sessions result.
  const BOUNDARIES = [
    { what: "a new gclid", first: LANDING, second: `${LANDING}?gclid=G2`, sessions: 2 },
    { what: "a gclid different from the session's", first: `${LANDING}?gclid=G1`, second: `${LANDING}?gclid=G2`, sessions: 2 },
    { what: "the same gclid (a reload)", first: `${LANDING}?gclid=G1`, second: `${LANDING}?gclid=G1`, sessions: 1 },
    { what: "a different utm_source", first: `${LANDING}?utm_source=google&utm_medium=cpc`, second: `${LANDING}?utm_source=bing&utm_medium=cpc`, sessions: 2 },
    { what: "a utm_source where the session had none", first: LANDING, second: `${LANDING}?utm_source=partner`, sessions: 2 },
    { what: "the same utm_source in another case", first: `${LANDING}?utm_source=google&utm_medium=cpc`, second: `${LANDING}?utm_source=Google&utm_medium=cpc`, sessions: 1 },
    { what: "a different utm_campaign", first: `${LANDING}?utm_campaign=spring`, second: `${LANDING}?utm_campaign=summer`, sessions: 2 },
    { what: "no UTM after a campaign landing (internal navigation)", first: `${LANDING}?utm_source=google&utm_campaign=spring`, second: `${LANDING}/product`, sessions: 1 },
    { what: "a new msclkid", first: LANDING, second: `${LANDING}?msclkid=M1`, sessions: 2 },
    { what: "a new ttclid", first: LANDING, second: `${LANDING}?ttclid=T1`, sessions: 2 },
  ];

  test.each(BOUNDARIES)("a pageview with $what a minute later makes $sessions session(s)", async ({ first, second, sessions }) => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - HOUR;
      const events = [event("v_b", t0, first), event("v_b", t0 + MINUTE, second)];
      await ingest(client, site, events);
      const rows = await sessionsOf(client, site, "v_b");
      expect(rows.map((s) => s.event_count)).toEqual(sessions === 2 ? [1, 1] : [2]);
      expect(rows[0].landing_url).toBe(first);
      if (sessions === 2) expect(rows[1].landing_url).toBe(second);
    });
  });

  test("a non-pageview event carrying a new gclid stays in the session", async () => {
    // Only pageviews open sessions on a new click id: a click event's URL is where it happened.
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - HOUR;
      const events = [event("v_np", t0, LANDING, { referrer: "https://www.google.com/" }),
        event("v_np", t0 + MINUTE, `${LANDING}?gclid=G2`, { type: "add_to_cart" })];
      await ingest(client, site, events);
      const rows = await sessionsOf(client, site, "v_np");
      expect(rows.map((s) => [s.event_count, s.attribution_tier, s.attribution_source, s.click_id]))
        .toEqual([[2, "S5", "organic:search", null]]);
    });
  });

  test("a session's attribution comes from its earliest event, even when that event arrives last", async () => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - 3 * HOUR;
      const first = event("v_late", t0, `${LANDING}?gclid=G_LATE`);
      const second = event("v_late", t0 + 5 * MINUTE, `${LANDING}/product`, { referrer: "https://www.google.com/" });
      const third = event("v_late", t0 + 9 * MINUTE, `${LANDING}/cart`, { type: "checkout" });
      await ingest(client, site, [second, third]);
      // Before the first event arrives the session looks organic; this proves the later change is real.
      expect((await sessionsOf(client, site, "v_late")).map((s) => s.attribution_source)).toEqual(["organic:search"]);

      await ingest(client, site, [first]);
      const rows = await sessionsOf(client, site, "v_late");
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({
        id: expectedSessionId(site.id, first.id), started_at: new Date(t0), ended_at: new Date(t0 + 9 * MINUTE), event_count: 3,
        landing_url: first.url, referrer: null, attribution_tier: "S1", attribution_source: "google_ads",
        click_id: "G_LATE", click_id_type: "gclid",
      });
      expect(await sessionIdsOf(client, site, [first, second, third])).toEqual([rows[0].id, rows[0].id, rows[0].id]);
    });
  });

  test("different visitors never share a session, nor each other's S3", async () => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - 4 * HOUR;
      // Interleaved a second apart on the same pages: only the visitor separates them.
      const a = [0, 2, 4].map((i) => event("v_a", t0 + i * 1000, i === 0 ? `${LANDING}?gclid=GA` : LANDING));
      const b = [1, 3, 5].map((i) => event("v_b", t0 + i * 1000, LANDING));
      const bLater = event("v_b", t0 + 2 * HOUR, LANDING);
      await ingest(client, site, [...a, ...b, bLater].sort((x, y) => x.ts.localeCompare(y.ts)));

      const sa = await sessionsOf(client, site, "v_a");
      const sb = await sessionsOf(client, site, "v_b");
      expect(sa.map((s) => [s.visitor_id, s.event_count, s.attribution_tier])).toEqual([["v_a", 3, "S1"]]);
      // v_a's S1 session must not make v_b's sessions ads-assisted.
      expect(sb.map((s) => [s.visitor_id, s.event_count, s.attribution_tier])).toEqual([["v_b", 3, "S5"], ["v_b", 1, "S5"]]);
      expect(await sessionIdsOf(client, site, a)).toEqual([sa[0].id, sa[0].id, sa[0].id]);
      expect(await sessionIdsOf(client, site, b)).toEqual([sb[0].id, sb[0].id, sb[0].id]);
    });
  });

  /* S3: an S1 or S2 session of the same visitor that started within the 90 days before. */

  /** An S1/S2 session as if sessionized months ago (events that old cannot be sent any more). */
  async function insertOldSession(client: pg.ClientBase, site: Site, visitor: string, startedAtSql: string, params: unknown[],
    tier: "S1" | "S2", clickType: string, clickId: string): Promise<string> {
    const id = randomUUID();
    await client.query(
      `insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, visitor_id,
                                        event_count, landing_url, attribution_tier, attribution_source, click_id, click_id_type)
       select $1, $2, t, t, e, e, $3, $3, 1, $4, $5, $6, $7, $8 from (select ${startedAtSql} as t, gen_random_uuid() as e) x`,
      [site.id, id, visitor, `${LANDING}?${clickType}=${clickId}`, tier, tier === "S1" ? "google_ads" : "paid:microsoft_ads",
        clickId, clickType, ...params]);
    return id;
  }

  const WINDOW = [
    { what: "an S1 session exactly 90 days before", tier: "S1", clickType: "gclid", extraMs: 0, expected: "S3" },
    { what: "an S1 session 90 days and 1 ms before", tier: "S1", clickType: "gclid", extraMs: 1, expected: "S5" },
    { what: "an S2 session exactly 90 days before", tier: "S2", clickType: "msclkid", extraMs: 0, expected: "S3" },
    { what: "an S2 session 90 days and 1 ms before", tier: "S2", clickType: "msclkid", extraMs: 1, expected: "S5" },
  ] as const;

  test.each(WINDOW)("$what makes a direct visit now $expected", async ({ tier, clickType, extraMs, expected: expectedTier }) => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const visit = event("v_window", site.now, LANDING);
      const oldId = await insertOldSession(client, site, "v_window",
        `$9::timestamptz - interval '90 days' - $10::integer * interval '1 millisecond'`, [visit.ts, extraMs], tier, clickType, "OLD_CLICK");
      await ingest(client, site, [visit]);

      const rows = await sessionsOf(client, site, "v_window");
      expect(rows).toHaveLength(2);
      const fresh = rows[1];
      expect(fresh.started_at.getTime()).toBe(site.now);
      if (expectedTier === "S3") {
        expect(fresh).toMatchObject({
          attribution_tier: "S3", attribution_source: "ads_assisted", assisting_session_id: oldId,
          assisting_click_id: "OLD_CLICK", assisting_click_id_type: clickType,
        });
      } else {
        expect(fresh).toMatchObject({
          attribution_tier: "S5", attribution_source: "organic:direct", assisting_session_id: null, assisting_click_id: null,
        });
      }
    });
  });

  test("S3 from the visitor's own ad click earlier the same day keeps the assisting click id", async () => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - 5 * HOUR;
      const click = event("v_s3", t0, `${LANDING}?gclid=G_ASSIST`);
      const returning = event("v_s3", t0 + 2 * HOUR, LANDING, { referrer: "https://www.google.com/" });
      await ingest(client, site, [click, returning]);
      const rows = await sessionsOf(client, site, "v_s3");
      expect(rows.map((s) => [s.attribution_tier, s.attribution_source])).toEqual([["S1", "google_ads"], ["S3", "ads_assisted"]]);
      expect(rows[1]).toMatchObject({
        assisting_session_id: rows[0].id, assisting_click_id: "G_ASSIST", assisting_click_id_type: "gclid", landing_url: LANDING,
      });
    });
  });

  test("S3 beats S4 and S5; S1 and S2 sessions are never S3", async () => {
    await withRootDb(async (client) => {
      const site = await makeSite(client);
      const t0 = site.now - 6 * 24 * HOUR;
      const landings: [string, string | undefined, string, string][] = [
        [`${LANDING}?gclid=G1`, undefined, "S1", "google_ads"],
        [`${LANDING}?ttclid=T1`, undefined, "S3", "ads_assisted"],                      // would be S4
        [`${LANDING}?utm_source=facebook&utm_medium=paid_social`, undefined, "S3", "ads_assisted"],  // would be S4
        [`${LANDING}?utm_medium=email&utm_source=news`, undefined, "S3", "ads_assisted"],  // would be S5 email
        [LANDING, "https://www.bing.com/", "S3", "ads_assisted"],                        // would be S5 search
        [`${LANDING}?gclid=G2`, undefined, "S1", "google_ads"],                         // a new click stays S1
        [`${LANDING}?msclkid=M1`, undefined, "S2", "paid:microsoft_ads"],              // stays S2
        [`${LANDING}?utm_source=bing&utm_medium=cpc`, undefined, "S2", "paid:bing"],     // stays S2
        [LANDING, undefined, "S3", "ads_assisted"],
      ];
      // A day apart each: every visit is its own session, all within 90 days of the first.
      const events = landings.map(([url, referrer], i) => event("v_mix", t0 + i * 12 * HOUR, url, referrer ? { referrer } : {}));
      await ingest(client, site, events);
      const rows = await sessionsOf(client, site, "v_mix");
      expect(rows.map((s) => [s.attribution_tier, s.attribution_source])).toEqual(landings.map(([, , tier, source]) => [tier, source]));
      // The assisting click is the latest S1/S2 session before each S3 one.
      expect(rows.map((s) => s.assisting_click_id)).toEqual([null, "G1", "G1", "G1", "G1", null, null, null, null]);
      expect(rows[8].assisting_session_id).toBe(rows[7].id);
      expect(rows[1].click_id).toBe("T1");  // the session's own click id is kept alongside
    });
  });
});
