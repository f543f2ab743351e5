import { COMPARE_OPS, LEAF_OPS, newGroup, newLeaf, updateNode, type CondNode, type LeafNode } from "./condition";
import { errorsUnder } from "../api/problem";
import type { CompareOp } from "../api/types";

interface Props {
  root: CondNode;
  onChange: (root: CondNode) => void;
  paths: Map<string, string>;
  errors: Record<string, string>;
  propertyList: string[];
  readOnly?: boolean;
}

const LABELS: Record<string, string> = {
  between: "between",
  outside: "outside",
  rate_of_change: "rate of change",
  stale: "no data for",
  demand: "demand (kW)",
  idle: "idle (energy config)",
  specific_energy: "energy per unit",
};

export function ConditionEditor(props: Props) {
  return (
    <>
      <datalist id="rule-properties">
        {props.propertyList.map((p) => (
          <option key={p} value={p} />
        ))}
      </datalist>
      <NodeView {...props} node={props.root} depth={0} />
    </>
  );
}

function NodeView({ node, depth, ...props }: Props & { node: CondNode; depth: number }) {
  const { root, onChange, paths, errors, readOnly } = props;
  const replace = (next: CondNode | null) => {
    const updated = updateNode(root, node.id, next);
    onChange(updated ?? newGroup());
  };
  const path = paths.get(node.id) ?? "condition";
  if (node.kind === "leaf") return <LeafView leaf={node} onChange={replace} path={path} errors={errorsUnder(errors, path)} readOnly={readOnly} canRemove={node.id !== root.id} />;
  if (node.kind === "not") {
    return (
      <div className="cond-group not" role="group" aria-label="NOT">
        <div className="row">
          <strong>NOT</strong>
          <span style={{ flex: 1 }} />
          {!readOnly && (
            <button type="button" className="ghost small" onClick={() => replace(node.child)}>
              Remove NOT
            </button>
          )}
        </div>
        <NodeView {...props} node={node.child} depth={depth + 1} />
      </div>
    );
  }
  const groupErrors = errorsUnder(errors, path).filter((e) => !e.includes("["));
  return (
    <div className={`cond-group ${node.kind}`} role="group" aria-label={node.kind === "all" ? "All of (AND)" : "Any of (OR)"}>
      <div className="row">
        <select
          aria-label="Group type"
          value={node.kind}
          disabled={readOnly}
          onChange={(e) => replace({ ...node, kind: e.target.value as "all" | "any" })}
        >
          <option value="all">ALL of (AND)</option>
          <option value="any">ANY of (OR)</option>
        </select>
        <span style={{ flex: 1 }} />
        {!readOnly && (
          <>
            <button type="button" className="small" onClick={() => replace({ ...node, children: [...node.children, newLeaf()] })}>
              + Condition
            </button>
            <button type="button" className="small" onClick={() => replace({ ...node, children: [...node.children, newGroup(node.kind === "all" ? "any" : "all")] })}>
              + Group
            </button>
            <button type="button" className="ghost small" onClick={() => replace({ id: `${node.id}n`, kind: "not", child: node })}>
              Negate
            </button>
            {depth > 0 && (
              <button type="button" className="ghost small danger" aria-label="Remove group" onClick={() => replace(null)}>
                ✕
              </button>
            )}
          </>
        )}
      </div>
      {groupErrors.map((e) => (
        <span key={e} className="field-error" role="alert">
          {e}
        </span>
      ))}
      {node.children.map((c) => (
        <NodeView key={c.id} {...props} node={c} depth={depth + 1} />
      ))}
    </div>
  );
}

function LeafView({
  leaf,
  onChange,
  path,
  errors,
  readOnly,
  canRemove,
}: {
  leaf: LeafNode;
  onChange: (n: LeafNode | null) => void;
  path: string;
  errors: string[];
  readOnly?: boolean | undefined;
  canRemove: boolean;
}) {
  const set = (patch: Partial<LeafNode>) => onChange({ ...leaf, ...patch });
  const invalid = (field: string) => (errors.some((e) => e.startsWith(`${field}:`)) ? true : undefined);
  return (
    <div>
      <div className="cond-leaf" data-path={path}>
        {leaf.op !== "idle" && leaf.op !== "specific_energy" && (
        <input
          className="prop"
          list="rule-properties"
          placeholder={leaf.op === "stale" ? "property (empty = any)" : "property"}
          aria-label="Property"
          value={leaf.property}
          disabled={readOnly}
          aria-invalid={invalid("property")}
          onChange={(e) => set({ property: e.target.value })}
        />
        )}
        <select aria-label="Operator" value={leaf.op} disabled={readOnly} onChange={(e) => set({ op: e.target.value as LeafNode["op"] })}>
          {LEAF_OPS.map((op) => (
            <option key={op} value={op}>
              {LABELS[op] ?? op}
            </option>
          ))}
        </select>
        {(leaf.op === "between" || leaf.op === "outside") && (
          <>
            <input aria-label="Minimum" inputMode="decimal" placeholder="min" value={leaf.min} disabled={readOnly} aria-invalid={invalid("min")} onChange={(e) => set({ min: e.target.value })} />
            <span className="muted">and</span>
            <input aria-label="Maximum" inputMode="decimal" placeholder="max" value={leaf.max} disabled={readOnly} aria-invalid={invalid("max")} onChange={(e) => set({ max: e.target.value })} />
          </>
        )}
        {leaf.op === "rate_of_change" && (
          <>
            <span className="muted">over</span>
            <input aria-label="Window seconds" style={{ width: "5rem" }} value={leaf.windowSeconds} disabled={readOnly} onChange={(e) => set({ windowSeconds: e.target.value })} />
            <span className="muted">s</span>
            <select aria-label="Compare" value={leaf.compare} disabled={readOnly} onChange={(e) => set({ compare: e.target.value as CompareOp })}>
              {COMPARE_OPS.map((op) => (
                <option key={op}>{op}</option>
              ))}
            </select>
            <input aria-label="Value" inputMode="decimal" value={leaf.value} disabled={readOnly} aria-invalid={invalid("value")} onChange={(e) => set({ value: e.target.value })} />
            <span className="muted">per</span>
            <select aria-label="Per" value={leaf.per} disabled={readOnly} onChange={(e) => set({ per: e.target.value as LeafNode["per"] })}>
              <option>second</option>
              <option>minute</option>
              <option>hour</option>
            </select>
          </>
        )}
        {leaf.op === "stale" && (
          <>
            <input aria-label="Seconds" style={{ width: "6rem" }} value={leaf.seconds} disabled={readOnly} aria-invalid={invalid("seconds")} onChange={(e) => set({ seconds: e.target.value })} />
            <span className="muted">seconds</span>
          </>
        )}
        {leaf.op === "demand" && (
          <>
            <span className="muted">over</span>
            <select aria-label="Demand interval" value={leaf.intervalMinutes} disabled={readOnly} aria-invalid={invalid("interval_minutes")} onChange={(e) => set({ intervalMinutes: e.target.value })}>
              {["15", "30", "45", "60"].map((m) => (
                <option key={m} value={m}>
                  {m} min
                </option>
              ))}
            </select>
            <select aria-label="Demand interval judged" value={leaf.when} disabled={readOnly} onChange={(e) => set({ when: e.target.value as LeafNode["when"] })}>
              <option value="completed">completed (billed)</option>
              <option value="projected">projected (running)</option>
            </select>
            <select aria-label="Compare" value={leaf.compare} disabled={readOnly} onChange={(e) => set({ compare: e.target.value as CompareOp })}>
              {COMPARE_OPS.map((op) => (
                <option key={op}>{op}</option>
              ))}
            </select>
            <input aria-label="Value" inputMode="decimal" placeholder="kW" value={leaf.value} disabled={readOnly} aria-invalid={invalid("value")} onChange={(e) => set({ value: e.target.value })} />
            <span className="muted">kW</span>
          </>
        )}
        {leaf.op === "specific_energy" && (
          <>
            <span className="muted">of the last closed</span>
            <select aria-label="Period" value={leaf.period} disabled={readOnly} aria-invalid={invalid("period")} onChange={(e) => set({ period: e.target.value as LeafNode["period"] })}>
              <option value="day">day</option>
              <option value="shift">shift</option>
            </select>
            <span className="muted">above</span>
            <select aria-label="Expected per unit" value={leaf.expected} disabled={readOnly} onChange={(e) => set({ expected: e.target.value as LeafNode["expected"] })}>
              <option value="fixed">a fixed kWh/unit</option>
              <option value="baseline">a baseline</option>
            </select>
            {leaf.expected === "fixed" ? (
              <>
                <input aria-label="kWh per unit" inputMode="decimal" placeholder="kWh/unit" style={{ width: "6rem" }} value={leaf.kwhPerUnit} disabled={readOnly} aria-invalid={invalid("kwh_per_unit")} onChange={(e) => set({ kwhPerUnit: e.target.value })} />
                <span className="muted">kWh/unit</span>
              </>
            ) : (
              <input aria-label="Baseline id" placeholder="baseline id" value={leaf.baselineId} disabled={readOnly} aria-invalid={invalid("baseline_id")} onChange={(e) => set({ baselineId: e.target.value })} />
            )}
            <span className="muted">by more than</span>
            <input aria-label="Above percent" inputMode="decimal" style={{ width: "4rem" }} value={leaf.abovePercent} disabled={readOnly} aria-invalid={invalid("above_percent")} onChange={(e) => set({ abovePercent: e.target.value })} />
            <span className="muted">% (judged when the period closes; no units produced = unknown)</span>
          </>
        )}
        {leaf.op === "idle" && <span className="muted">by the device's energy settings (state or power below its idle threshold); use “for” to say how long</span>}
        {(COMPARE_OPS as string[]).includes(leaf.op) && (
          <input aria-label="Value" placeholder="value or true/false" value={leaf.value} disabled={readOnly} aria-invalid={invalid("value")} onChange={(e) => set({ value: e.target.value })} />
        )}
        {!readOnly && canRemove && (
          <button type="button" className="ghost small" aria-label="Remove condition" onClick={() => onChange(null)}>
            ✕
          </button>
        )}
      </div>
      {errors.map((e) => (
        <div key={e} className="field-error" role="alert">
          {e}
        </div>
      ))}
    </div>
  );
}
