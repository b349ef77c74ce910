/*
 * The contract between the upload task (which owns the database side: claiming rows,
 * recording outcomes) and the rails that talk to Google. A rail knows nothing of our tables;
 * it turns conversions into requests and Google's answers into one outcome per row.
 */

export type ConsentSignal = "granted" | "denied" | "unspecified";
export type ClickIdType = "gclid" | "gbraid" | "wbraid";
export type Rail = "datamanager" | "google_ads";

/** One conversion as we send it. Identifiers are already normalised and hashed by the database. */
export interface Conversion {
  /** Our stable id for the row; never sent to Google. */
  rowId: string;
  /** Sent as order_id / transaction id: the same on every re-send, so Google counts it once. */
  orderId: string;
  clickId?: { type: ClickIdType; value: string };
  /** `yyyy-mm-dd hh:mm:ss+hh:mm` in the site's time zone, after the click. */
  conversionTime: string;
  /** Decimal string, e.g. "1250.00". */
  value: string;
  currency: string;
  /** Lower-case hex SHA-256 of the normalised email / E.164 phone; present only with ad_user_data=granted. */
  emailSha256?: string;
  phoneSha256?: string;
  consent: { adUserData: ConsentSignal; adPersonalization: ConsentSignal };
  /** The call's caller number (E.164) and start, for UploadCallConversions; only for calls through a Google forwarding number. */
  call?: { callerId: string; callStartTime: string };
}

/** A retraction of a conversion already delivered (the sale was undone). */
export interface Retraction {
  rowId: string;
  orderId: string;
  /** `yyyy-mm-dd hh:mm:ss+hh:mm`: when the retraction happened. */
  adjustmentTime: string;
}

/** Where to send: one site's destination, with its decrypted OAuth refresh token. */
export interface Destination {
  rail: Rail;
  /** Ten digits, no dashes. */
  customerId: string;
  loginCustomerId?: string;
  /** Conversion action id (digits). */
  conversionAction: string;
  refreshToken: string;
}

/** Process-wide settings: Google's shared credentials and, in tests, loopback endpoints. */
export interface GoogleSettings {
  developerToken?: string;
  clientId?: string;
  clientSecret?: string;
  /** `host:port` overrides. */
  dataManagerEndpoint?: string;
  googleAdsEndpoint?: string;
  /** Plaintext gRPC; the configuration only allows it for loopback endpoints. */
  insecure: boolean;
  /** OAuth token endpoint (default https://oauth2.googleapis.com/token). */
  oauthTokenUrl: string;
}

export type RowOutcome =
  /** Google took it (or already had it: *_ALREADY_EXISTS, ORDER_ID_ALREADY_IN_USE); requestId: the request that carried it, when Google names one. */
  | { kind: "accepted"; code?: string; requestId?: string }
  /** Try again after the delay (TOO_RECENT_*, transient, quota). */
  | { kind: "retry"; code: string; retryAfterSeconds: number }
  /** Final: Google will never accept this row as it is. */
  | { kind: "failed"; code: string; message: string };

export type BatchOutcome =
  /** One outcome per input row, in order. requestId: Data Manager's, to fetch processing status later. */
  | { kind: "rows"; rows: RowOutcome[]; requestId?: string }
  /**
   * The destination needs a person, not the rows: Google refused the whole request because of its
   * grant (revoked, invalid), account (not enabled, not allowlisted, terms not accepted, no
   * access) or the conversion action. Every batch would be refused alike, so nothing of this
   * one is decided: its rows go back unsent, the destination becomes needs_reauth with `code`
   * (Google's) as its reason, and delivery waits until someone acts on it.
   */
  | { kind: "reauth"; code: string }
  /** Nothing was delivered and the whole batch should be retried later (UNAVAILABLE, quota, timeouts). */
  | { kind: "retry_batch"; code: string; retryAfterSeconds: number };

export interface RailClient {
  uploadConversions(destination: Destination, conversions: Conversion[]): Promise<BatchOutcome>;
  /** Rails that cannot retract answer every row with { kind: "failed", code: "RETRACTION_UNSUPPORTED" }. */
  retractConversions(destination: Destination, retractions: Retraction[]): Promise<BatchOutcome>;
  close(): Promise<void>;
}
