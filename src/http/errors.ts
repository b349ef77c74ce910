/* The one error shape every endpoint answers with: {"error": code, "message": sentence}. */
import type { Response } from "express";

export function sendError(res: Response, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.status(status).json({ error: code, message });
}
