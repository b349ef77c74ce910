/*
 * Fixtures for the revenue tests (sales, call actions, the offline conversion queue): sites
 * that take tracker events, sessions and calls through the real front doors
 * (app_private.ingest_events, record_consent, record_call_event), and the counts of everything
 * a sale writes, so a refused request can be shown to have written nothing.
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { unique } from "./db";

export type Queryable = Pick<pg.ClientBase, "query">;

export const ORIGIN = "https://shop.example";
export const LANDING = "https://shop.example/landing";
export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export interface TrackedSite {
  id: string;
  publicKey: string;
}

/** A user, through any connection (a pool for committed fixtures, or a test's client). */
export async function newUser(db: Queryable): Promise<string> {
  const { rows } = await db.query("insert into app_public.users (email) values ($1) returning id", [`${unique("revenue")}@example.com`]);
  return rows[0].id;
}

/** A site on shop.example that accepts tracker events from its origin, without a rate limit. */
export async function createTrackedSite(db: Queryable, ownerId: string,
  { consentMode = "required", currency = "TRY" }: { consentMode?: "required" | "implied"; currency?: string } = {}): Promise<TrackedSite> {
  const { rows } = await db.query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => $3, rate_limit_per_minute => 0,
       allowed_origins => array['https://shop.example'], currency => $4)`,
    [ownerId, unique("Revenue"), consentMode, currency]);
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

export interface TrackerEvent {
  id: string;
  type: string;
  ts: string;
  visitor_id: string;
  url: string;
  referrer?: string;
  consent?: Record<string, string>;
}

/** A pageview; analytics consent granted unless other consent is given (then the visitor id is kept raw). */
export function pageview(visitor: string, at: number, url: string,
  { referrer, consent = { analytics_storage: "granted" } }: { referrer?: string; consent?: Record<string, string> } = {}): TrackerEvent {
  return {
    id: randomUUID(), type: "pageview", ts: new Date(at).toISOString(), visitor_id: visitor, url,
    ...(referrer ? { referrer } : {}), consent,
  };
}

export async function ingest(db: Queryable, site: TrackedSite, events: TrackerEvent[]): Promise<void> {
  const { rows } = await db.query(
    "select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as r",
    [site.publicKey, JSON.stringify(events), ORIGIN]);
  if (rows[0].r.accepted !== events.length) throw new Error(`ingest refused events: ${JSON.stringify(rows[0].r)}`);
}

/** A visitor's choice on the consent banner (POST /api/consent). */
export async function recordConsent(db: Queryable, site: TrackedSite, visitor: string, consent: Record<string, string>): Promise<void> {
  await db.query("select app_private.record_consent($1, $2, $3::jsonb, $4, '10.0.0.1')",
    [site.publicKey, visitor, JSON.stringify(consent), ORIGIN]);
}

export interface SessionRow {
  id: string;
  visitor_key: string;
  visitor_id: string | null;
  started_at: Date;
  attribution_tier: string;
  attribution_source: string;
  click_id: string | null;
  click_id_type: string | null;
  assisting_click_id: string | null;
  assisting_click_id_type: string | null;
}

/** The session an event ended up in. */
export async function sessionOf(db: Queryable, site: TrackedSite, event: TrackerEvent): Promise<SessionRow> {
  const { rows } = await db.query(
    `select s.id, s.visitor_key, s.visitor_id, s.started_at, s.attribution_tier, s.attribution_source, s.click_id, s.click_id_type,
            s.assisting_click_id, s.assisting_click_id_type
       from app_public.events e join app_public.sessions s on s.site_id = e.site_id and s.id = e.session_id
      where e.site_id = $1 and e.id = $2`, [site.id, event.id]);
  if (rows.length !== 1) throw new Error(`event ${event.id} is in ${rows.length} sessions`);
  return rows[0];
}

export interface CallRow {
  id: string;
  call_id: string;
  session_id: string | null;
  started_at: Date;
  attribution_tier: string | null;
  attribution_source: string | null;
  click_id: string | null;
  click_id_type: string | null;
}

export const CALLER = "+905551112233";

/** A call as the provider reports it (signature already checked), started a minute ago unless given. */
export async function recordCall(db: Queryable, siteId: string, fields: Record<string, unknown> = {}): Promise<CallRow> {
  const body = {
    call_id: `call_${randomUUID().slice(0, 12)}`, status: "answered", caller: CALLER, tracking_number: "+902125550000",
    started_at: new Date(Date.now() - MINUTE).toISOString(), duration_s: 30, ...fields,
  };
  await db.query("select app_private.record_call_event($1, $2::jsonb)", [siteId, JSON.stringify(body)]);
  const { rows } = await db.query(
    `select id, call_id, session_id, started_at, attribution_tier, attribution_source, click_id, click_id_type
       from app_public.calls where site_id = $1 and call_id = $2`, [siteId, body.call_id]);
  return rows[0];
}

export interface RevenueCounts {
  sales: number;
  identifiers: number;
  queue: number;
  jobs: number;
  conversations: number;
  callActions: number;
}

/** How many rows of everything a sale or call action writes the site has (jobs: its upload job). */
export async function revenueCounts(db: Queryable, siteId: string): Promise<RevenueCounts> {
  const { rows } = await db.query(
    `select (select count(*) from app_public.sales where site_id = $1)::int as sales,
            (select count(*) from app_private.sale_identifiers where site_id = $1)::int as identifiers,
            (select count(*) from app_public.offline_conversion_queue where site_id = $1)::int as queue,
            (select count(*) from graphile_worker.jobs where key = 'upload_conversions:google:' || $1)::int as jobs,
            (select count(*) from app_public.conversations where site_id = $1)::int as conversations,
            (select count(*) from app_public.call_actions where site_id = $1)::int as "callActions"`, [siteId]);
  return rows[0];
}

export interface UploadJob {
  id: string;
  task_identifier: string;
  key: string;
  run_at: Date;
  revision: number;
  payload: Record<string, unknown>;
}

/** The site's upload_conversions job, with its payload, or undefined. */
export async function uploadJob(db: Queryable, siteId: string): Promise<UploadJob | undefined> {
  const { rows } = await db.query(
    `select j.id, j.task_identifier, j.key, j.run_at, j.revision, p.payload
       from graphile_worker.jobs j join graphile_worker._private_jobs p on p.id = j.id
      where j.key = 'upload_conversions:google:' || $1`, [siteId]);
  if (rows.length > 1) throw new Error(`site ${siteId} has ${rows.length} upload jobs`);
  return rows[0];
}

/** Everything the site's revenue tables hold, to compare before and after a refused request. */
export async function revenueSnapshot(db: Queryable, siteId: string): Promise<unknown> {
  const { rows } = await db.query(
    `select (select jsonb_agg(to_jsonb(s) order by s.id) from app_public.sales s where s.site_id = $1) as sales,
            (select jsonb_agg(to_jsonb(i) order by i.sale_id) from app_private.sale_identifiers i where i.site_id = $1) as identifiers,
            (select jsonb_agg(to_jsonb(q) order by q.id) from app_public.offline_conversion_queue q where q.site_id = $1) as queue,
            (select jsonb_agg(to_jsonb(c) order by c.id) from app_public.conversations c where c.site_id = $1) as conversations,
            (select jsonb_agg(to_jsonb(a) order by a.id) from app_public.call_actions a where a.site_id = $1) as actions,
            (select jsonb_agg(jsonb_build_object('id', j.id, 'run_at', j.run_at, 'revision', j.revision, 'payload', p.payload))
               from graphile_worker.jobs j join graphile_worker._private_jobs p on p.id = j.id
              where j.key = 'upload_conversions:google:' || $1) as jobs`, [siteId]);
  return rows[0];
}

/** A visitor id that is also a valid identifier for sales and calls. */
export const visitorId = (label: string) => unique(label).replace(/[^A-Za-z0-9_-]/g, "_");
