/* The one error shape every endpoint answers with: {"error": code, "message": sentence}. */
import type { ServerResponse } from "node:http";

/** A JSON answer on node's own response object: what express's res.json sends, without its per-response machinery. */
export function writeJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text) }).end(text);
}

export function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  writeJson(res, status, { error: code, message }, headers);
}
