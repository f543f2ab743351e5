// RFC 9457 problem details as the API sends them, and the error the client throws.

export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
  retry_after?: number | null;
  [extension: string]: unknown;
}

/** Turns any error body into a problem: a real problem document, or one made up from the status. */
export function toProblem(status: number, statusText: string, body: unknown): Problem {
  if (body && typeof body === "object" && "status" in body && "detail" in body) {
    const p = body as Partial<Problem>;
    return {
      ...(body as Record<string, unknown>),
      type: typeof p.type === "string" ? p.type : "about:blank",
      title: typeof p.title === "string" ? p.title : statusText || "Error",
      status: typeof p.status === "number" ? p.status : status,
      detail: typeof p.detail === "string" ? p.detail : "",
      errors: Array.isArray(p.errors) ? p.errors.filter(isFieldError) : [],
    };
  }
  const text = typeof body === "string" && body.trim() ? body.trim().slice(0, 300) : "";
  return {
    type: "about:blank",
    title: statusText || (status === 0 ? "Network error" : "Error"),
    status,
    detail: text || (status === 0 ? "the server could not be reached" : `the server answered ${status}`),
    errors: [],
  };
}

function isFieldError(e: unknown): e is FieldError {
  return !!e && typeof e === "object" && typeof (e as FieldError).field === "string" && typeof (e as FieldError).message === "string";
}

export class ApiError extends Error {
  readonly problem: Problem;
  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    this.problem = problem;
  }
  get status(): number {
    return this.problem.status;
  }
  get kind(): string {
    return this.problem.type.replace(/^urn:factoryops:problem:/, "");
  }
  /** Field errors keyed by their path (`email`, `condition.all[1].op`). */
  fieldErrors(): Record<string, string> {
    return fieldErrorMap(this.problem.errors ?? []);
  }
}

export function fieldErrorMap(errors: FieldError[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (const e of errors) map[e.field] = map[e.field] ? `${map[e.field]}; ${e.message}` : e.message;
  return map;
}

/** The field errors at `prefix` or below it (`condition` → `condition.all[0].op`, …). */
export function errorsUnder(errors: Record<string, string>, prefix: string): string[] {
  return Object.entries(errors)
    .filter(([k]) => k === prefix || k.startsWith(`${prefix}.`) || k.startsWith(`${prefix}[`))
    .map(([k, v]) => (k === prefix ? v : `${k.slice(prefix.length).replace(/^\./, "")}: ${v}`));
}

/** A human line for a toast. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return error.problem.detail || error.problem.title;
  if (error instanceof Error) return error.message;
  return String(error);
}

export async function problemFromResponse(response: Response): Promise<Problem> {
  let body: unknown = null;
  try {
    const text = await response.text();
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  } catch {
    body = null;
  }
  return toProblem(response.status, response.statusText, body);
}
