/*
 * Destination credentials in and out of the vault. Writing goes through
 * app_hidden.store_provider_credentials (role-checked, on the caller's connection); reading and
 * rotating are for the owner's connections only (the worker and the CLI).
 */
import type pg from "pg";
import { credentialContext, lastFour, SealedSecret, Vault, VaultError } from "./vault";

const REFRESH_TOKEN = /^[\x21-\x7e]{8,2048}$/;

export class InvalidCredential extends Error {}

/** Runs one statement on the caller's connection (a pg client, or PostGraphile's request client). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type RunSql = (text: string, values: unknown[]) => Promise<{ rows: readonly any[] }>;

/** Encrypts and stores a destination's OAuth refresh token; returns the destination row (metadata only). */
export async function storeRefreshToken(run: RunSql, vault: Vault, destinationId: string, refreshToken: string) {
  const token = refreshToken.trim();
  if (!REFRESH_TOKEN.test(token)) throw new InvalidCredential("The refresh token must be 8 to 2048 printable characters without spaces.");
  const sealed = vault.encrypt(token, credentialContext(destinationId));
  const { rows } = await run(
    "select to_jsonb(d) as destination from app_hidden.store_provider_credentials($1, $2, $3, $4, $5, $6, $7) d",
    [destinationId, sealed.keyId, sealed.wrappedKey, sealed.nonce, sealed.ciphertext, sealed.authTag, lastFour(token)]);
  return rows[0].destination as Record<string, unknown>;
}

interface CredentialRow {
  destination_id: string;
  key_id: string;
  wrapped_key: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
  auth_tag: Buffer;
}

const sealedOf = (row: CredentialRow): SealedSecret =>
  ({ keyId: row.key_id, wrappedKey: row.wrapped_key, nonce: row.nonce, ciphertext: row.ciphertext, authTag: row.auth_tag });

/** The decrypted refresh token of a destination, or undefined when none is stored. */
export async function readRefreshToken(owner: pg.Pool | pg.ClientBase, vault: Vault, destinationId: string): Promise<string | undefined> {
  const { rows } = await owner.query<CredentialRow>(
    "select destination_id, key_id, wrapped_key, nonce, ciphertext, auth_tag from app_private.provider_credentials where destination_id = $1",
    [destinationId]);
  return rows[0] ? vault.decrypt(sealedOf(rows[0]), credentialContext(destinationId)) : undefined;
}

/**
 * Re-wraps every credential not under the active key, one row per short transaction (each row
 * locked, re-read and re-checked), so readers never see a half-rotated row and there is no
 * downtime. A row that cannot be opened (its key is missing from VAULT_KEYS, or it was tampered
 * with) is reported and skipped: the others still rotate.
 */
export async function rotateVault(owner: pg.Pool, vault: Vault, onProgress: (done: number, total: number) => void = () => {}) {
  const { rows: stale } = await owner.query<{ destination_id: string }>(
    "select destination_id from app_private.provider_credentials where key_id <> $1 order by destination_id", [vault.activeKeyId]);
  let rotated = 0;
  const failed: { destinationId: string; reason: string }[] = [];
  for (const { destination_id: destinationId } of stale) {
    const client = await owner.connect();
    try {
      await client.query("begin");
      const { rows } = await client.query<CredentialRow>(
        `select destination_id, key_id, wrapped_key, nonce, ciphertext, auth_tag from app_private.provider_credentials
          where destination_id = $1 and key_id <> $2 for update`, [destinationId, vault.activeKeyId]);
      if (rows[0]) {
        const rewrapped = vault.rewrap(sealedOf(rows[0]), credentialContext(destinationId));
        await client.query("update app_private.provider_credentials set key_id = $2, wrapped_key = $3 where destination_id = $1",
          [destinationId, rewrapped.keyId, rewrapped.wrappedKey]);
        rotated++;
      }
      await client.query("commit");
    } catch (error) {
      await client.query("rollback").catch(() => {});
      if (!(error instanceof VaultError)) throw error;
      failed.push({ destinationId, reason: error.message });
    } finally {
      client.release();
    }
    onProgress(rotated + failed.length, stale.length);
  }
  const { rows: [left] } = await owner.query<{ n: string }>(
    "select count(*) as n from app_private.provider_credentials where key_id <> $1", [vault.activeKeyId]);
  return { rotated, failed, remaining: Number(left.n), activeKeyId: vault.activeKeyId };
}
