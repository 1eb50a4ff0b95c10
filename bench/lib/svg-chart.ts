/**
 * A small, dependency-free SVG writer for grouped bar charts, shared by the benches.
 *
 *   groupedBarChart({
 *     title: 'Container start', series: [{ key: 'cold', label: 'cold cache' }, …],
 *     groups: [{ label: 'alpine', values: { cold: 1.9, warm: 0.4 } }, …], unit: 's',
 *   })
 *
 * Two layouts:
 * - 'shared' (default): one value axis, the groups side by side, one bar per series in each group —
 *   for groups measured in one unit (seconds per image, …);
 * - 'panels': one small panel per group with its own axis and unit, laid out in a grid — for groups
 *   in different units or magnitudes (ops/s next to MB/s).
 * Bars carry their value (SI-abbreviated) and an optional note (e.g. "0.31× local"); a legend names
 * the series; missing values show "n/a". Linear or log scale.
 */
import { si } from './stats';

export interface ChartSeries {
  key: string;
  label: string;
  /** CSS colour; a colour-blind safe palette is used when omitted. */
  color?: string;
}

export interface ChartGroup {
  label: string;
  /** Axis title of this group's panel ('panels' layout), e.g. "ops/s". */
  unit?: string;
  /** Value per series key; undefined/null/NaN = not measured. */
  values: Record<string, number | null | undefined>;
  /** Short text under a bar's value, per series key. */
  notes?: Record<string, string | undefined>;
}

export interface GroupedBarChartSpec {
  title: string;
  subtitle?: string;
  series: ChartSeries[];
  groups: ChartGroup[];
  layout?: 'shared' | 'panels';
  /** Panels per row ('panels' layout); default 2 (1 with a single group). */
  columns?: number;
  scale?: 'linear' | 'log';
  /** Axis title of the shared axis. */
  unit?: string;
  /** Lines of small print under the chart. */
  footnotes?: string[];
  /** Total width in px (default 960). */
  width?: number;
  /** Plot height in px of the shared plot or of each panel (default 360 / 260). */
  plotHeight?: number;
  formatValue?: (v: number) => string;
}

const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#F0E442', '#555555'];
const FONT = 'DejaVu Sans, Verdana, Arial, sans-serif';

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Rough width of `text` at `size` px in a sans-serif font (for layout decisions only). */
export function textWidth(text: string, size: number): number {
  return text.length * size * 0.6;
}

const num = (v: number) => (Math.round(v * 10) / 10).toString();

function text(x: number, y: number, s: string, o: { size?: number; anchor?: 'start' | 'middle' | 'end'; weight?: string; fill?: string; rotate?: number } = {}): string {
  const attrs = [`x="${num(x)}"`, `y="${num(y)}"`, `font-size="${o.size ?? 12}"`];
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`);
  if (o.weight) attrs.push(`font-weight="${o.weight}"`);
  if (o.fill) attrs.push(`fill="${o.fill}"`);
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${num(x)} ${num(y)})"`);
  return `<text ${attrs.join(' ')}>${escapeXml(s)}</text>`;
}

function rect(x: number, y: number, w: number, h: number, fill: string, extra = ''): string {
  return `<rect x="${num(x)}" y="${num(y)}" width="${num(Math.max(w, 0))}" height="${num(Math.max(h, 0))}" fill="${fill}"${extra}/>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, extra = ''): string {
  return `<line x1="${num(x1)}" y1="${num(y1)}" x2="${num(x2)}" y2="${num(y2)}" stroke="${stroke}"${extra}/>`;
}

const present = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** A value axis: maps values to [0, 1] and lists its ticks. */
interface Axis {
  pos(v: number): number;
  ticks: number[];
}

/** "Nice" linear ticks from 0 to at least `max` (steps of 1, 2, 2.5 or 5 × 10^k). */
export function linearAxis(max: number, count = 5): Axis {
  const top = max > 0 ? max : 1;
  const raw = top / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const end = Math.ceil(top / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = 0; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { pos: (v) => Math.max(0, v) / end, ticks };
}

/** Decade ticks covering [min, max] of the positive values. */
export function logAxis(min: number, max: number): Axis {
  const lmin = Math.log10(min > 0 ? min : 1);
  // A bar just above a decade would be a sliver: start a decade lower then.
  const lo = Math.floor(lmin) - (lmin - Math.floor(lmin) < 0.3 ? 1 : 0);
  let hi = Math.ceil(Math.log10(max > 0 ? max : 10));
  if (hi <= lo) hi = lo + 1;
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  return { pos: (v) => (v > 0 ? Math.max(0, (Math.log10(v) - lo) / (hi - lo)) : 0), ticks };
}

function axisFor(values: number[], scale: 'linear' | 'log'): Axis {
  const finite = values.filter((v) => Number.isFinite(v));
  if (scale === 'log') {
    const positive = finite.filter((v) => v > 0);
    return logAxis(Math.min(...positive, Infinity), Math.max(...positive, 0));
  }
  return linearAxis(Math.max(0, ...finite));
}

interface PlotBox {
  x: number; // left of the plot area
  y: number; // top of the plot area
  w: number;
  h: number;
}

interface Ctx {
  spec: GroupedBarChartSpec;
  colors: string[];
  fmt: (v: number) => string;
  scale: 'linear' | 'log';
}

/** Y axis with grid lines and tick labels; `title` rotated along it. */
function drawAxis(out: string[], box: PlotBox, axis: Axis, c: Ctx, title?: string): void {
  for (const t of axis.ticks) {
    const y = box.y + box.h - axis.pos(t) * box.h;
    out.push(line(box.x, y, box.x + box.w, y, '#e3e3e3'));
    out.push(text(box.x - 6, y + 4, c.fmt(t), { size: 11, anchor: 'end', fill: '#444' }));
  }
  out.push(line(box.x, box.y + box.h, box.x + box.w, box.y + box.h, '#888'));
  out.push(line(box.x, box.y, box.x, box.y + box.h, '#888'));
  if (title) out.push(text(box.x - 46, box.y + box.h / 2, title, { size: 11, anchor: 'middle', fill: '#444', rotate: -90 }));
}

/** The bars of one group in the horizontal slot [x0, x0 + w). */
function drawBars(out: string[], box: PlotBox, axis: Axis, g: ChartGroup, x0: number, w: number, c: Ctx, labelBars: boolean): void {
  const n = c.spec.series.length;
  const gap = Math.min(6, w / n / 6);
  const barW = Math.max(2, (w - gap * (n - 1)) / n);
  c.spec.series.forEach((s, i) => {
    const x = x0 + i * (barW + gap);
    const cx = x + barW / 2;
    const v = g.values[s.key];
    const base = box.y + box.h;
    if (!present(v)) {
      out.push(text(cx, base - 4, 'n/a', { size: 10, anchor: 'middle', fill: '#999' }));
    } else {
      const h = axis.pos(v) * box.h;
      const tip = `${g.label}, ${s.label}: ${c.fmt(v)}${g.unit ? ` ${g.unit}` : ''}`;
      out.push(rect(x, base - h, barW, h, c.colors[i]!).replace('/>', `><title>${escapeXml(tip)}</title></rect>`));
      const valueSize = barW >= 34 ? 11 : 9;
      const note = g.notes?.[s.key];
      out.push(text(cx, base - h - (note ? 16 : 4), c.fmt(v), { size: valueSize, anchor: 'middle', fill: '#222' }));
      if (note) out.push(text(cx, base - h - 4, note, { size: 9, anchor: 'middle', fill: '#555' }));
    }
    if (labelBars) out.push(text(cx, base + 14, s.label, { size: 10, anchor: 'middle', fill: '#333' }));
  });
}

/** Top headroom of an axis so value labels and notes above the tallest bar stay inside the plot. */
function withHeadroom(values: number[], scale: 'linear' | 'log', hasNotes: boolean): number[] {
  if (scale === 'log') return values;
  const max = Math.max(0, ...values.filter((v) => Number.isFinite(v)));
  return [...values, max * (hasNotes ? 1.18 : 1.1)];
}

function legend(out: string[], x: number, y: number, width: number, c: Ctx): number {
  let cx = x;
  let cy = y;
  for (const [i, s] of c.spec.series.entries()) {
    const w = 18 + textWidth(s.label, 12) + 18;
    if (cx + w > x + width && cx > x) {
      cx = x;
      cy += 20;
    }
    out.push(rect(cx, cy - 10, 12, 12, c.colors[i]!));
    out.push(text(cx + 17, cy, s.label, { size: 12, fill: '#222' }));
    cx += w;
  }
  return cy + 12;
}

export function groupedBarChart(spec: GroupedBarChartSpec): string {
  const width = spec.width ?? 960;
  const c: Ctx = {
    spec,
    colors: spec.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]!),
    fmt: spec.formatValue ?? ((v) => si(v)),
    scale: spec.scale ?? 'linear',
  };
  const body: string[] = [];
  let y = 28;
  body.push(text(width / 2, y, spec.title, { size: 17, anchor: 'middle', weight: 'bold', fill: '#111' }));
  if (spec.subtitle) {
    y += 20;
    body.push(text(width / 2, y, spec.subtitle, { size: 12, anchor: 'middle', fill: '#444' }));
  }
  y = legend(body, 70, y + 28, width - 100, c) + 14;
  const marginLeft = 78;
  const marginRight = 24;

  if ((spec.layout ?? 'shared') === 'shared') {
    const h = spec.plotHeight ?? 360;
    const box: PlotBox = { x: marginLeft, y: y + 10, w: width - marginLeft - marginRight, h };
    const values = spec.groups.flatMap((g) => Object.values(g.values).filter(present));
    const hasNotes = spec.groups.some((g) => Object.values(g.notes ?? {}).some(Boolean));
    const axis = axisFor(withHeadroom(values, c.scale, hasNotes), c.scale);
    drawAxis(body, box, axis, c, spec.unit);
    const slot = box.w / Math.max(1, spec.groups.length);
    spec.groups.forEach((g, i) => {
      const pad = slot * 0.12;
      drawBars(body, box, axis, g, box.x + i * slot + pad, slot - 2 * pad, c, false);
      body.push(text(box.x + i * slot + slot / 2, box.y + box.h + 18, g.label, { size: 12, anchor: 'middle', fill: '#222', weight: 'bold' }));
    });
    y = box.y + box.h + 34;
  } else {
    const columns = Math.max(1, Math.min(spec.columns ?? 2, spec.groups.length));
    const panelW = (width - 20) / columns;
    const h = spec.plotHeight ?? 260;
    const panelH = h + 80;
    spec.groups.forEach((g, i) => {
      const px = 10 + (i % columns) * panelW;
      const py = y + Math.floor(i / columns) * panelH;
      const box: PlotBox = { x: px + 66, y: py + 30, w: panelW - 66 - 18, h };
      body.push(text(px + panelW / 2, py + 14, g.unit ? `${g.label} (${g.unit})` : g.label, { size: 13, anchor: 'middle', weight: 'bold', fill: '#222' }));
      const values = Object.values(g.values).filter(present);
      const hasNotes = Object.values(g.notes ?? {}).some(Boolean);
      const axis = axisFor(withHeadroom(values, c.scale, hasNotes), c.scale);
      drawAxis(body, box, axis, c);
      const pad = box.w * 0.04;
      const inner = box.w - 2 * pad;
      const perBar = inner / Math.max(1, spec.series.length);
      const labelBars = spec.series.every((s) => textWidth(s.label, 10) <= perBar);
      drawBars(body, box, axis, g, box.x + pad, inner, c, labelBars);
    });
    y += Math.ceil(spec.groups.length / columns) * panelH;
  }

  const footnotes = [...(spec.footnotes ?? []), ...(c.scale === 'log' ? ['Log scale: equal ratios look equally tall.'] : [])];
  for (const note of footnotes) {
    y += 16;
    body.push(text(14, y, note, { size: 11, fill: '#555' }));
  }
  const height = Math.ceil(y + 14);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    rect(0, 0, width, height, '#ffffff'),
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
