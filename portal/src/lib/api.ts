// The generated client, configured once: same-origin base URL, the bearer token from the session,
// and one place that turns a refused token into "session expired".
import { client } from "../client/client.gen";
import { currentToken, expireSession } from "./session";

client.setConfig({ baseUrl: "", auth: () => currentToken() });

client.interceptors.response.use((response, request) => {
  if (response.status === 401 && !new URL(request.url).pathname.endsWith("/auth/login")) {
    expireSession();
  }
  return response;
});

export type ValidationIssue = { loc: (string | number)[]; msg: string; type: string };

/** An error answer of the API: its status and its `detail` (text, or FastAPI's validation list). */
export class ApiError extends Error {
  readonly status: number;
  readonly detail: unknown;

  constructor(status: number, detail: unknown) {
    super(describe(status, detail));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }

  /** Validation messages by field name (`dateOfBirth`), for showing next to the fields. */
  fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    if (!Array.isArray(this.detail)) return out;
    for (const issue of this.detail as ValidationIssue[]) {
      const path = issue.loc.filter((part) => part !== "body");
      const field = String(path[0] ?? "");
      if (field && !out[field]) out[field] = cleanMessage(issue.msg);
    }
    return out;
  }
}

function cleanMessage(msg: string): string {
  return msg.replace(/^Value error, /, "");
}

function describe(status: number, detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return (detail as ValidationIssue[])
      .map((issue) => `${issue.loc.filter((p) => p !== "body").join(".")}: ${cleanMessage(issue.msg)}`)
      .join("; ");
  }
  if (status === 0) return "The clinic's server cannot be reached. Check the connection and try again.";
  return `The server answered ${status}.`;
}

type Result<T> = { data?: T; error?: unknown; response?: Response };

/** Awaits a generated SDK call; resolves to its data or throws an ApiError with the status. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  let result: Result<T>;
  try {
    result = await call;
  } catch {
    throw new ApiError(0, null);
  }
  if (result.error !== undefined || !result.response?.ok) {
    const body = result.error as { detail?: unknown } | undefined;
    throw new ApiError(result.response?.status ?? 0, body?.detail ?? null);
  }
  return result.data as T;
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return "Something went wrong.";
}
