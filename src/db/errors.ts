/*
 * Database errors as clients may see them. Our functions raise documented SQLSTATEs (OM…),
 * and check constraints carry names; both map to a stable code and a plain sentence. Anything
 * else is internal: callers log it and tell the client only that something went wrong.
 */
export interface PublicError {
  status: number;
  code: string;
  message: string;
}

const BY_SQLSTATE: Record<string, PublicError> = {
  OM403: { status: 403, code: "forbidden", message: "You are not allowed to do this." },
  OMOWN: { status: 409, code: "last_owner", message: "A site must keep at least one owner." },
  OMNOU: { status: 404, code: "user_not_found", message: "No user has this email address." },
  OMKRL: { status: 400, code: "invalid_role", message: "An API key can be viewer, editor or admin." },
  OMIMM: { status: 409, code: "immutable", message: "This record cannot be changed." },
  OMGRC: { status: 409, code: "grace_period", message: "A month can be frozen only once 8 days have passed since its end." },
  OMPER: { status: 400, code: "invalid_period", message: "A billing period is named by the first day of its month." },
  OMNSS: { status: 404, code: "site_not_found", message: "No such site." },
  OMRET: { status: 400, code: "invalid_retention", message: "Ledger retention must be at least 90 days." },
  OMSAL: { status: 400, code: "invalid_sale", message: "The sale is not valid." },
  OMSEX: { status: 409, code: "sale_exists", message: "A sale with this external_id already exists; nothing was changed." },
  OMUSS: { status: 422, code: "unknown_session", message: "No session of this site has this id." },
  OMUCL: { status: 422, code: "unknown_call", message: "No call of this site has this id." },
  OMCAD: { status: 409, code: "call_already_decided", message: "The call is already sealed or junked; undo that first." },
  OMDST: { status: 400, code: "invalid_destination_status", message: "A destination can be set active or paused." },
  OMSUB: { status: 400, code: "invalid_subject", message: "A subject is a visitor_id, email, phone (with its country code) or click_id, with a value of that kind." },
  OMNER: { status: 404, code: "erasure_not_found", message: "No such erasure request." },
  OMNUN: { status: 409, code: "nothing_to_undo", message: "The call has no seal or junk to undo." },
};

// SQLSTATEs whose message names the offending field: written by our functions for clients.
const MESSAGE_FROM_DATABASE = new Set(["OMSAL"]);

const BY_CONSTRAINT: Record<string, string> = {
  users_email_format: "The email address is not valid.",
  users_email_key: "A user with this email address already exists.",
  users_display_name_length: "The display name is longer than 200 characters.",
  sites_name_length: "The site name must be 1 to 200 characters.",
  sites_domain_format: "The domain must be a host name like shop.example.",
  sites_allowed_origins_format: "Each allowed origin must look like https://shop.example.",
  sites_consent_mode: "The consent mode must be required or implied.",
  sites_monthly_event_quota_positive: "The monthly event quota cannot be negative.",
  sites_rate_limit_non_negative: "The rate limit cannot be negative.",
  sites_timezone_known: "The time zone is not a known IANA time zone.",
  sites_currency_format: "The currency must be an ISO 4217 code in circulation, like EUR or TRY.",
  api_keys_name_length: "The key name is longer than 200 characters.",
  api_keys_role_not_owner: "An API key can be viewer, editor or admin.",
  sites_data_retention_months_range: "Data retention must be 1 to 13 months.",
  destinations_rail: "The rail must be datamanager or google_ads.",
  destinations_customer_id_format: "The customer id must be the ten digits of a Google Ads account (dashes allowed).",
  destinations_login_customer_id_format: "The login customer id must be the ten digits of a Google Ads manager account.",
  destinations_conversion_action_format: "The conversion action must be its numeric id.",
  destinations_one_live_per_site: "The site already has a destination that is not paused; pause it first.",
};

interface PgErrorLike {
  code?: string;
  constraint?: string;
  message?: string;
}

/** The public form of a database error, or undefined when it is internal. */
export function publicDatabaseError(error: unknown): PublicError | undefined {
  const pgError = error as PgErrorLike;
  if (!pgError || typeof pgError.code !== "string") return undefined;
  const known = BY_SQLSTATE[pgError.code];
  if (known) return MESSAGE_FROM_DATABASE.has(pgError.code) && pgError.message ? { ...known, message: pgError.message } : known;
  if ((pgError.code === "23514" || pgError.code === "23505") && pgError.constraint && BY_CONSTRAINT[pgError.constraint]) {
    return { status: pgError.code === "23505" ? 409 : 400, code: pgError.code === "23505" ? "already_exists" : "invalid_input", message: BY_CONSTRAINT[pgError.constraint] };
  }
  if (pgError.code === "23503" && pgError.constraint === "invoice_snapshots_site_id_fkey") {
    return { status: 409, code: "site_has_invoices", message: "A site with frozen invoices cannot be deleted." };
  }
  if (pgError.code === "22P02") return { status: 400, code: "invalid_input", message: "A value has the wrong format." };
  return undefined;
}
