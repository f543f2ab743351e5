// The 12-column dashboard grid: a CSS grid whose cells the widgets span. In edit mode each
// widget has a drag handle (move) and a corner handle (resize), by pointer or by arrow keys;
// what a move covers is pushed down (`placeAt`).
import { useRef, useState, type KeyboardEvent, type PointerEvent, type ReactNode } from "react";
import { GRID_COLUMNS, cellsMoved, nudge, placeAt, readingOrder, type WidgetLayout } from "./model";

export const ROW_PX = 72;
export const GAP_PX = 12;

/** Pixels of a widget body h rows tall (card padding and title taken off). */
export function bodyHeight(h: number): number {
  return h * ROW_PX + (h - 1) * GAP_PX - 24 - 34;
}

interface Props {
  layouts: WidgetLayout[];
  editing: boolean;
  onLayout: (layouts: WidgetLayout[]) => void;
  titleOf: (i: number) => string;
  /** Buttons in the widget's header (edit, remove) and its body. */
  actions?: (i: number) => ReactNode;
  children: (i: number) => ReactNode;
  testIdOf?: (i: number) => string;
}

type Gesture = { kind: "move" | "resize"; index: number; startX: number; startY: number; start: WidgetLayout };

export function DashboardGrid({ layouts, editing, onLayout, titleOf, actions, children, testIdOf }: Props) {
  const grid = useRef<HTMLDivElement>(null);
  const gesture = useRef<Gesture | null>(null);
  const [preview, setPreview] = useState<WidgetLayout[] | null>(null);
  const shown = preview ?? layouts;

  const target = (g: Gesture, dx: number, dy: number): WidgetLayout =>
    g.kind === "move" ? { ...g.start, x: g.start.x + dx, y: g.start.y + dy } : { ...g.start, w: g.start.w + dx, h: g.start.h + dy };

  const begin = (kind: Gesture["kind"], index: number) => (e: PointerEvent<HTMLElement>) => {
    if (e.button !== 0) return;
    e.preventDefault();
    e.currentTarget.setPointerCapture(e.pointerId);
    gesture.current = { kind, index, startX: e.clientX, startY: e.clientY, start: layouts[index]! };
  };
  const move = (e: PointerEvent<HTMLElement>) => {
    const g = gesture.current;
    if (!g || !grid.current) return;
    const col = (grid.current.clientWidth + GAP_PX) / GRID_COLUMNS;
    const { dx, dy } = cellsMoved(e.clientX - g.startX, e.clientY - g.startY, col, ROW_PX + GAP_PX);
    setPreview(placeAt(layouts, g.index, target(g, dx, dy)));
  };
  const end = () => {
    if (gesture.current && preview) onLayout(preview);
    gesture.current = null;
    setPreview(null);
  };
  const keys = (kind: Gesture["kind"], index: number) => (e: KeyboardEvent<HTMLElement>) => {
    const step: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const d = step[e.key];
    if (!d) return;
    e.preventDefault();
    if (kind === "move") onLayout(nudge(layouts, index, d[0], d[1]));
    else onLayout(placeAt(layouts, index, target({ kind, index, startX: 0, startY: 0, start: layouts[index]! }, d[0], d[1])));
  };

  // DOM order is reading order, so a narrow screen stacks the widgets as they read.
  const order = readingOrder(shown);
  return (
    <div className={`dash-grid ${editing ? "editing" : ""}`} ref={grid} style={{ gridAutoRows: `${ROW_PX}px`, gap: GAP_PX }} data-testid="dashboard-grid">
      {order.map((i) => {
        const l = shown[i]!;
        const title = titleOf(i);
        return (
          <section
            key={i}
            className={`card widget ${preview && gesture.current?.index === i ? "dragging" : ""}`}
            style={{ gridColumn: `${l.x + 1} / span ${l.w}`, gridRow: `${l.y + 1} / span ${l.h}`, ["--h" as string]: l.h }}
            aria-label={title}
            data-testid={testIdOf?.(i) ?? "widget"}
            data-index={i}
            data-layout={`${l.x},${l.y},${l.w},${l.h}`}
          >
            <header className="widget-head">
              {editing && (
                <button
                  type="button"
                  className="ghost icon-button drag-handle"
                  aria-label={`Move ${title} (arrow keys)`}
                  title="Drag to move (or focus and use the arrow keys)"
                  onPointerDown={begin("move", i)}
                  onPointerMove={move}
                  onPointerUp={end}
                  onPointerCancel={end}
                  onKeyDown={keys("move", i)}
                >
                  ⠿
                </button>
              )}
              <h2>{title}</h2>
              {actions?.(i)}
            </header>
            <div className="widget-body">{children(i)}</div>
            {editing && (
              <button
                type="button"
                className="resize-handle"
                aria-label={`Resize ${title} (arrow keys)`}
                title="Drag to resize (or focus and use the arrow keys)"
                onPointerDown={begin("resize", i)}
                onPointerMove={move}
                onPointerUp={end}
                onPointerCancel={end}
                onKeyDown={keys("resize", i)}
              />
            )}
          </section>
        );
      })}
    </div>
  );
}
