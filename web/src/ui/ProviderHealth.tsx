import { useEffect, useState } from "react";
import { Link } from "react-router-dom";
import { ApiError, problemFromResponse } from "../api/problem";
import type { DependencyState } from "../api/types";
import { useFactory } from "../factory";

/** How often super admins' pages ask `/readyz` about the notification providers. */
const POLL_MS = 30_000;

export interface ProviderProblem {
  channels: string[];
  detail: string;
}

/**
 * The failing notification providers from `/readyz`'s checks: the `notifications` check
 * is `degraded` while a channel's circuit is open (messages stay queued). Its detail reads
 * `email provider failing (reason); whatsapp provider failing (reason)`.
 */
export function providerProblem(checks: DependencyState[] | undefined): ProviderProblem | null {
  const check = (checks ?? []).find((c) => c.name === "notifications");
  if (!check || check.status === "up") return null;
  const channels = [...check.detail.matchAll(/\b(email|whatsapp) provider failing/gi)].map((m) => m[1]!.toLowerCase());
  return { channels: [...new Set(channels)], detail: check.detail };
}

export function providerHeadline(p: ProviderProblem): string {
  const names = p.channels.map((c) => (c === "whatsapp" ? "WhatsApp" : "Email"));
  if (names.length === 0) return "Notification delivery is degraded — messages are queued";
  return `${names.join(" and ")} provider${names.length > 1 ? "s" : ""} failing — messages are queued`;
}

async function readiness(signal: AbortSignal): Promise<DependencyState[]> {
  const response = await fetch("/readyz", { signal, headers: { accept: "application/json" } });
  if (response.ok) return ((await response.json()) as { checks?: DependencyState[] }).checks ?? [];
  // 503: a problem whose `checks` member lists every check.
  const problem = await problemFromResponse(response);
  if (Array.isArray(problem.checks)) return problem.checks as DependencyState[];
  throw new ApiError(problem);
}

/** A small banner for super admins while a notification provider is failing. */
export function ProviderHealthBanner() {
  const { factory, isSuperAdmin } = useFactory();
  const [problem, setProblem] = useState<ProviderProblem | null>(null);
  useEffect(() => {
    if (!isSuperAdmin) return;
    let controller = new AbortController();
    const poll = () => {
      controller.abort();
      controller = new AbortController();
      readiness(controller.signal)
        .then((checks) => setProblem(providerProblem(checks)))
        .catch(() => {
          /* readiness unknown: say nothing */
        });
    };
    poll();
    const t = setInterval(poll, POLL_MS);
    return () => {
      clearInterval(t);
      controller.abort();
    };
  }, [isSuperAdmin]);
  if (!problem) return null;
  return (
    <div className="callout warn banner" role="status" data-testid="provider-banner">
      <strong>{providerHeadline(problem)}</strong>
      <span className="small muted"> {problem.detail}. They are sent when the provider recovers. </span>
      <Link className="small" to={`/f/${factory}/notifications?status=pending`}>
        Queued messages
      </Link>
    </div>
  );
}
