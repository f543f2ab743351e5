import { Link } from "react-router-dom";
import { api, unwrap } from "../api/client";
import type { Page, Rule } from "../api/types";
import { useFactory } from "../factory";
import { describeCondition } from "../rules/condition";
import { Badge, Empty, Loading, fmtTime, useAsync } from "../ui/common";

export function scopeText(rule: Pick<Rule, "scope">): string {
  const s = rule.scope as Record<string, unknown>;
  if (Array.isArray(s.devices)) return `devices: ${(s.devices as string[]).join(", ")}`;
  if (typeof s.device_type === "string") return `type: ${s.device_type}`;
  return "all devices";
}

export function Rules() {
  const { factory, can } = useFactory();
  const rules = useAsync(
    async (signal) =>
      (await unwrap(api.GET("/api/v1/factories/{factory_id}/rules", { params: { path: { factory_id: factory }, query: { limit: 500 } }, signal }))) as unknown as Page<Rule>,
    [factory],
  );
  const items = rules.data?.items ?? [];
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Rules</h1>
          <div className="sub">Conditions on live telemetry that open alerts and notify people.</div>
        </div>
        <div className="actions">
          {can("rules:write") && (
            <Link className="button primary" to={`/f/${factory}/rules/new`} data-testid="new-rule">
              + New rule
            </Link>
          )}
        </div>
      </div>
      <div className="card">
        {rules.loading && !rules.data ? (
          <Loading />
        ) : items.length === 0 ? (
          <Empty icon="⚙" title="No rules yet">
            {can("rules:write") ? <p>Create a rule and backtest it on stored history before saving.</p> : <p>Rules created by admins appear here.</p>}
          </Empty>
        ) : (
          <div className="table-wrap">
            <table data-testid="rules-table">
              <thead>
                <tr>
                  <th>Rule</th>
                  <th>Condition</th>
                  <th>Scope</th>
                  <th>Severity</th>
                  <th>State</th>
                  <th>Updated</th>
                </tr>
              </thead>
              <tbody>
                {items.map((r) => (
                  <tr key={r.id}>
                    <td>
                      <Link to={`/f/${factory}/rules/${r.id}`}>
                        <strong>{r.name}</strong>
                      </Link>
                    </td>
                    <td className="mono small">{describeCondition(r.condition)}</td>
                    <td className="small">{scopeText(r)}</td>
                    <td>
                      <Badge kind={r.severity}>{r.severity}</Badge>
                    </td>
                    <td>{r.enabled ? <Badge kind="ok">enabled</Badge> : <Badge>disabled</Badge>}</td>
                    <td className="muted small">{fmtTime(r.updated_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </>
  );
}
