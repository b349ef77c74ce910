/*
 * Envelope encryption for provider credentials. Each secret gets its own random 256-bit data
 * key; the secret is sealed with AES-256-GCM under that key, and the data key is sealed
 * (wrapped) under the active VAULT_KEYS key, whose id is stored beside it. Rotation re-wraps
 * data keys only: the secrets' ciphertext never changes and is never decrypted to rotate.
 * The associated data binds a ciphertext to its row, so it cannot be moved to another one.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import type { VaultKey } from "../config";

export interface SealedSecret {
  keyId: string;
  /** nonce (12) ‖ tag (16) ‖ encrypted data key (32) */
  wrappedKey: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
  authTag: Buffer;
}

export class VaultError extends Error {}

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

function seal(key: Buffer, plaintext: Buffer, aad: Buffer): { nonce: Buffer; ciphertext: Buffer; authTag: Buffer } {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { nonce, ciphertext, authTag: cipher.getAuthTag() };
}

function open(key: Buffer, nonce: Buffer, ciphertext: Buffer, authTag: Buffer, aad: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(authTag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

export class Vault {
  constructor(private readonly keys: VaultKey[]) {}

  get activeKeyId(): string {
    return this.active().id;
  }

  encrypt(secret: string, context: string): SealedSecret {
    const master = this.active();
    const dataKey = randomBytes(32);
    try {
      const sealedSecret = seal(dataKey, Buffer.from(secret, "utf8"), Buffer.from(`secret:${context}`));
      return { keyId: master.id, wrappedKey: this.wrap(master, dataKey, context), ...sealedSecret };
    } finally {
      dataKey.fill(0);
    }
  }

  decrypt(sealed: SealedSecret, context: string): string {
    const dataKey = this.unwrap(sealed, context);
    try {
      return open(dataKey, sealed.nonce, sealed.ciphertext, sealed.authTag, Buffer.from(`secret:${context}`)).toString("utf8");
    } catch {
      throw new VaultError("A stored credential failed authentication (tampered with, or bound to another row).");
    } finally {
      dataKey.fill(0);
    }
  }

  /** The same secret with its data key wrapped under the active key (for `vault rotate`). */
  rewrap(sealed: SealedSecret, context: string): SealedSecret {
    const master = this.active();
    if (sealed.keyId === master.id) return sealed;
    const dataKey = this.unwrap(sealed, context);
    try {
      return { ...sealed, keyId: master.id, wrappedKey: this.wrap(master, dataKey, context) };
    } finally {
      dataKey.fill(0);
    }
  }

  private active(): VaultKey {
    const key = this.keys[0];
    if (!key) throw new VaultError("VAULT_KEYS is not set: credentials cannot be encrypted or read.");
    return key;
  }

  private wrap(master: VaultKey, dataKey: Buffer, context: string): Buffer {
    const { nonce, ciphertext, authTag } = seal(master.key, dataKey, Buffer.from(`key:${master.id}:${context}`));
    return Buffer.concat([nonce, authTag, ciphertext]);
  }

  private unwrap(sealed: SealedSecret, context: string): Buffer {
    const master = this.keys.find((key) => key.id === sealed.keyId);
    if (!master) throw new VaultError(`VAULT_KEYS has no key "${sealed.keyId}", which a stored credential needs.`);
    const nonce = sealed.wrappedKey.subarray(0, NONCE_BYTES);
    const authTag = sealed.wrappedKey.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES);
    try {
      return open(master.key, nonce, sealed.wrappedKey.subarray(NONCE_BYTES + TAG_BYTES), authTag, Buffer.from(`key:${master.id}:${context}`));
    } catch {
      throw new VaultError(`A stored credential's data key does not open with key "${sealed.keyId}".`);
    }
  }
}

/** How a destination's credentials are bound to their row. */
export const credentialContext = (destinationId: string) => `destination:${destinationId.toLowerCase()}`;

/** The last four characters, all a reader ever sees of a secret. */
export const lastFour = (secret: string) => secret.slice(-4);
