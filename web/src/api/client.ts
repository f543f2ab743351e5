// The typed API client: paths, parameters and bodies are checked against
// docs/openapi.json (types generated into schema.d.ts by `npm run gen:api`).
import createClient from "openapi-fetch";
import type { paths } from "./schema";
import { ApiError, problemFromResponse, toProblem } from "./problem";
import { authFetch } from "./session";

export const api = createClient<paths>({
  baseUrl: "",
  fetch: (request: Request) => sendRequest(request),
});

async function sendRequest(request: Request): Promise<Response> {
  // Keep the body so a retry after a refresh can resend it.
  const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.clone().text();
  const headers: Record<string, string> = {};
  request.headers.forEach((v, k) => {
    if (k !== "authorization") headers[k] = v;
  });
  return authFetch(request.url, { method: request.method, headers, ...(body !== undefined ? { body } : {}), signal: request.signal });
}

interface Result<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** Unwraps an openapi-fetch result: the data, or an ApiError carrying the problem. */
export async function unwrap<T>(promise: Promise<Result<T>>): Promise<T> {
  const { data, error, response } = await promise.catch((e: unknown) => {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError({ type: "about:blank", title: "Network error", status: 0, detail: "the server could not be reached" });
  });
  if (!response.ok) {
    throw new ApiError(toProblem(response.status, response.statusText, error));
  }
  return data as T;
}

/**
 * For routes the OpenAPI document does not describe (none today: every page uses the
 * typed `api`). Same auth, refresh and problem handling.
 */
export async function rawJson<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await authFetch(path, {
      method,
      headers: body !== undefined ? { "content-type": "application/json" } : {},
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    throw new ApiError({ type: "about:blank", title: "Network error", status: 0, detail: "the server could not be reached" });
  }
  if (!response.ok) throw new ApiError(await problemFromResponse(response));
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}
