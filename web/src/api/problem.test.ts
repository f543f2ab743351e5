import { describe, expect, it } from "vitest";
import { ApiError, errorsUnder, toProblem } from "./problem";
import { SseParser, type SseMessage } from "./sse";

describe("problem details", () => {
  it("keeps a real problem document with its field errors", () => {
    const p = toProblem(422, "Unprocessable Entity", {
      type: "urn:factoryops:problem:validation",
      title: "Unprocessable Entity",
      status: 422,
      detail: "email: is not an email; condition.all[1].op: unknown op",
      errors: [
        { field: "email", message: "is not an email" },
        { field: "condition.all[1].op", message: "unknown op" },
      ],
    });
    const e = new ApiError(p);
    expect(e.kind).toBe("validation");
    expect(e.message).toBe("email: is not an email; condition.all[1].op: unknown op");
    expect(e.fieldErrors()).toEqual({ email: "is not an email", "condition.all[1].op": "unknown op" });
    expect(errorsUnder(e.fieldErrors(), "condition.all[1]")).toEqual(["op: unknown op"]);
    expect(errorsUnder(e.fieldErrors(), "condition.all[10]")).toEqual([]);
  });

  it("makes a problem out of a bare error body", () => {
    expect(toProblem(502, "Bad Gateway", "<html>proxy error</html>")).toMatchObject({ status: 502, title: "Bad Gateway", detail: "<html>proxy error</html>" });
    expect(toProblem(0, "", null)).toMatchObject({ status: 0, title: "Network error", detail: "the server could not be reached" });
  });
});

describe("SSE parser", () => {
  it("splits events across chunks and line endings, ignoring keep-alives", () => {
    const seen: SseMessage[] = [];
    const parser = new SseParser((m) => seen.push(m));
    parser.push("event: telemetry\ndata: {\"a\"");
    parser.push(":1}\n\n: keep-alive\n\nevent: alert\r\ndata: x\r\ndata: y\r\n\r");
    parser.push("\ndata: plain\n\n");
    expect(seen).toEqual([
      { event: "telemetry", data: '{"a":1}' },
      { event: "alert", data: "x\ny" },
      { event: "message", data: "plain" },
    ]);
  });
});
