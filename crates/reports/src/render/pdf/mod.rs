//! The PDF: A4 portrait, a cover (factory, period, time zone, generated-at, contents), then
//! the sections with key-figure cards, tables that break across pages with their header
//! row repeated, and vector charts. Layout first fills a display list per page; only then
//! are pages drawn, so every footer can say "Page X of Y".
//!
//! krilla writes no clock of its own (its document id is a hash of the content); the info
//! dictionary's creation date is the report's `generated_at`, so identical reports are
//! identical bytes.

mod chart;
mod text;

use chrono::{Datelike, Timelike};
use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Transform};
use krilla::metadata::{DateTime as PdfDateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, LineCap, Stroke};
use krilla::text::{Font, TextDirection};

use crate::format;
use crate::model::{Cell, KeyFigure, Report, Section, Table, ValueType};
use text::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the embedded font could not be read")]
    Font,
    #[error("pdf: {0}")]
    Krilla(String),
}

pub(crate) const PAGE_W: f32 = 595.28;
pub(crate) const PAGE_H: f32 = 841.89;
const MARGIN_X: f32 = 48.0;
const CONTENT_TOP: f32 = 78.0;
const CONTENT_BOTTOM: f32 = PAGE_H - 64.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rgb(pub u8, pub u8, pub u8);

pub(crate) const INK: Rgb = Rgb(0x22, 0x2B, 0x36);
pub(crate) const MUTED: Rgb = Rgb(0x5F, 0x6B, 0x7A);
pub(crate) const NAVY: Rgb = Rgb(0x1F, 0x3A, 0x5F);
pub(crate) const RULE: Rgb = Rgb(0xC9, 0xD1, 0xDB);
pub(crate) const GRID: Rgb = Rgb(0xE3, 0xE8, 0xEE);
const ZEBRA: Rgb = Rgb(0xF4, 0xF6, 0xF9);
const CARD: Rgb = Rgb(0xEE, 0xF2, 0xF7);
const WHITE: Rgb = Rgb(0xFF, 0xFF, 0xFF);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Align {
    Left,
    Right,
    Center,
}

/// One drawing operation of a page, in points from the top-left corner.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `y` is the baseline; `x` the anchor given by `align`; `rotate` in degrees about the anchor.
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        align: Align,
        rotate: f32,
        text: String,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgb,
    },
    Line {
        points: Vec<(f32, f32)>,
        width: f32,
        color: Rgb,
    },
}

/// The pages being laid out and the cursor on the last one.
pub(crate) struct Layout {
    pub(crate) metrics: Metrics,
    pages: Vec<Vec<Op>>,
    pub(crate) y: f32,
}

impl Layout {
    fn page(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.page().push(op);
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = CONTENT_TOP;
    }

    /// Starts a new page unless `h` more points fit on this one.
    pub(crate) fn ensure(&mut self, h: f32) -> bool {
        if self.y + h > CONTENT_BOTTOM {
            self.new_page();
            true
        } else {
            false
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, color: Rgb, align: Align, text: &str) {
        self.push(Op::Text { x, y, size, bold, color, align, rotate: 0.0, text: text.to_owned() });
    }

    pub(crate) fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgb) {
        self.push(Op::Rect { x, y, w, h, fill });
    }

    pub(crate) fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32, color: Rgb) {
        self.push(Op::Line { points: vec![(x1, y1), (x2, y2)], width, color });
    }

    /// A paragraph wrapped to `width`; returns its height.
    fn paragraph(&mut self, x: f32, width: f32, size: f32, color: Rgb, text: &str) -> f32 {
        let lead = size * 1.4;
        let lines = self.metrics.wrap(text, size, false, width);
        let h = lines.len() as f32 * lead;
        for line in lines {
            self.ensure(lead);
            self.y += lead;
            let y = self.y - lead * 0.3;
            self.text(x, y, size, false, color, Align::Left, &line);
        }
        h
    }
}

pub fn render(report: &Report) -> Result<Vec<u8>, PdfError> {
    let metrics = Metrics::new().ok_or(PdfError::Font)?;
    let mut l = Layout { metrics, pages: Vec::new(), y: CONTENT_TOP };
    cover(&mut l, report);
    for section in &report.sections {
        l.new_page_if_not_fresh();
        section_body(&mut l, report, section);
    }
    emit(report, l.pages)
}

impl Layout {
    /// Sections start on a new page unless at least 40 % of the current one is free.
    fn new_page_if_not_fresh(&mut self) {
        if self.pages.len() <= 1 || self.y > CONTENT_TOP + (CONTENT_BOTTOM - CONTENT_TOP) * 0.6 {
            self.new_page();
        } else {
            self.y += 26.0;
        }
    }
}

fn local(report: &Report, t: &chrono::DateTime<chrono::Utc>) -> String {
    format::local_time(&t.with_timezone(&report.tz()).fixed_offset())
}

fn offset_text(report: &Report, t: &chrono::DateTime<chrono::Utc>) -> String {
    let secs = t.with_timezone(&report.tz()).fixed_offset().offset().local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    format!("UTC{sign}{:02}:{:02}", secs.abs() / 3600, (secs.abs() % 3600) / 60)
}

fn cover(l: &mut Layout, report: &Report) {
    // A band across the top with the product's name.
    l.rect(0.0, 0.0, PAGE_W, 210.0, NAVY);
    l.text(MARGIN_X, 64.0, 11.0, true, Rgb(0xA9, 0xC1, 0xDD), Align::Left, "FACTORYOPS");
    l.text(MARGIN_X, 122.0, 30.0, true, WHITE, Align::Left, &report.title);
    let name = l.metrics.fit(&report.factory_name, 18.0, false, CONTENT_W);
    l.text(MARGIN_X, 160.0, 18.0, false, Rgb(0xDD, 0xE6, 0xF0), Align::Left, &name);

    let mut y = 270.0;
    let rows = [
        ("Factory", report.factory_name.clone()),
        ("Period", format!("{}  to  {}", local(report, &report.from), local(report, &report.to))),
        (
            "Time zone",
            format!(
                "{} ({} at the start, {} at the end)",
                report.time_zone,
                offset_text(report, &report.from),
                offset_text(report, &report.to)
            ),
        ),
        ("Generated at", format!("{} ({})", local(report, &report.generated_at), report.time_zone)),
    ];
    for (label, value) in rows {
        l.text(MARGIN_X, y, 10.0, true, MUTED, Align::Left, label);
        let value = l.metrics.fit(&value, 11.0, false, CONTENT_W - 110.0);
        l.text(MARGIN_X + 110.0, y, 11.0, false, INK, Align::Left, &value);
        y += 24.0;
    }
    l.text(
        MARGIN_X,
        y + 2.0,
        8.5,
        false,
        MUTED,
        Align::Left,
        "The period includes its start and excludes its end; all times are local to the factory.",
    );

    y += 50.0;
    l.line(MARGIN_X, y, PAGE_W - MARGIN_X, y, 0.8, RULE);
    y += 26.0;
    l.text(MARGIN_X, y, 13.0, true, INK, Align::Left, "Contents");
    y += 22.0;
    for (i, s) in report.sections.iter().enumerate() {
        l.text(MARGIN_X, y, 10.5, false, INK, Align::Left, &format!("{}.  {}", i + 1, s.title));
        y += 18.0;
    }

    // The summary's key figures on the cover too: what a manager reads first.
    if let Some(first) = report.sections.first().filter(|s| !s.key_figures.is_empty()) {
        l.y = y + 24.0;
        l.text(MARGIN_X, l.y, 13.0, true, INK, Align::Left, "At a glance");
        l.y += 10.0;
        // Only the rows that fit: the cover stays one page (the Summary has them all).
        let rows = ((CONTENT_BOTTOM - l.y) / 62.0).floor().max(0.0) as usize;
        let shown = first.key_figures.len().min(rows * 3);
        cards(l, &first.key_figures[..shown]);
    }
}

fn section_body(l: &mut Layout, report: &Report, section: &Section) {
    l.ensure(60.0);
    l.y += 18.0;
    l.text(MARGIN_X, l.y, 15.0, true, NAVY, Align::Left, &section.title);
    l.y += 8.0;
    l.line(MARGIN_X, l.y, PAGE_W - MARGIN_X, l.y, 1.2, NAVY);
    l.y += 12.0;
    if !section.key_figures.is_empty() {
        cards(l, &section.key_figures);
        l.y += 8.0;
    }
    for c in &section.charts {
        chart::draw(l, c, MARGIN_X, CONTENT_W);
        l.y += 14.0;
    }
    for t in &section.tables {
        table(l, report, t);
        l.y += 16.0;
    }
    if !section.notes.is_empty() {
        l.ensure(30.0);
        for n in &section.notes {
            l.paragraph(MARGIN_X, CONTENT_W, 9.0, MUTED, &format!("•  {n}"));
            l.y += 3.0;
        }
    }
}

/// Key figures as cards, three to a row.
fn cards(l: &mut Layout, figures: &[KeyFigure]) {
    const PER_ROW: usize = 3;
    const GAP: f32 = 10.0;
    const H: f32 = 52.0;
    let w = (CONTENT_W - GAP * (PER_ROW as f32 - 1.0)) / PER_ROW as f32;
    for row in figures.chunks(PER_ROW) {
        l.ensure(H + GAP);
        let top = l.y;
        for (i, f) in row.iter().enumerate() {
            let x = MARGIN_X + i as f32 * (w + GAP);
            l.rect(x, top, w, H, CARD);
            l.rect(x, top, 3.0, H, NAVY);
            let label = l.metrics.fit(&f.label, 8.5, false, w - 20.0);
            l.text(x + 12.0, top + 17.0, 8.5, false, MUTED, Align::Left, &label);
            let value = format::figure(&f.value, &f.kind);
            let size = if l.metrics.width(&value, 15.0, true) > w - 20.0 { 11.0 } else { 15.0 };
            let value = l.metrics.fit(&value, size, true, w - 20.0);
            l.text(x + 12.0, top + 40.0, size, true, INK, Align::Left, &value);
        }
        l.y = top + H + GAP;
    }
}

const CELL_PAD: f32 = 5.0;

fn table(l: &mut Layout, report: &Report, t: &Table) {
    let n = t.columns.len();
    if n == 0 {
        return;
    }
    // Smaller type for wide tables.
    let size = if n > 6 { 7.5 } else { 8.5 };
    let row_h = size * 2.0;
    let headers: Vec<String> = t
        .columns
        .iter()
        .map(|c| match c.kind {
            ValueType::Datetime => format!("{} (local)", c.title),
            _ => c.header(),
        })
        .collect();
    let texts: Vec<Vec<String>> =
        t.rows
            .iter()
            .chain(t.total.iter())
            .enumerate()
            .map(|(i, r)| {
                r.iter()
                    .zip(&t.columns)
                    // A total row leaves the cells without a total blank rather than "–".
                    .map(|(c, col)| {
                        if i >= t.rows.len() && *c == Cell::Empty { String::new() } else { format::cell(c, &col.kind) }
                    })
                    .collect()
            })
            .collect();

    // Natural widths: the widest cell, or the header's longest word (headers wrap).
    let mut widths: Vec<f32> = (0..n)
        .map(|i| {
            let head = headers[i].split_whitespace().map(|w| l.metrics.width(w, size, true)).fold(0.0, f32::max);
            let cells = texts.iter().map(|r| l.metrics.width(&r[i], size, false)).fold(0.0, f32::max);
            head.max(cells) + 2.0 * CELL_PAD
        })
        .collect();
    fit_widths(&mut widths, CONTENT_W);
    let header_lines: Vec<Vec<String>> =
        headers.iter().zip(&widths).map(|(h, w)| l.metrics.wrap(h, size, true, w - 2.0 * CELL_PAD)).collect();
    let header_h = header_lines.iter().map(Vec::len).max().unwrap_or(1) as f32 * size * 1.25 + size;

    let draw_header = |l: &mut Layout, continued: bool| {
        let title = if continued { format!("{} (continued)", t.title) } else { t.title.clone() };
        l.y += 14.0;
        l.text(MARGIN_X, l.y, 10.5, true, INK, Align::Left, &title);
        l.y += 6.0;
        l.rect(MARGIN_X, l.y, CONTENT_W, header_h, NAVY);
        let mut x = MARGIN_X;
        for (i, lines) in header_lines.iter().enumerate() {
            let numeric = t.columns[i].kind.is_numeric();
            for (j, line) in lines.iter().enumerate() {
                let (ax, align) =
                    if numeric { (x + widths[i] - CELL_PAD, Align::Right) } else { (x + CELL_PAD, Align::Left) };
                let y = l.y + size * 1.25 * (j as f32 + 1.0) + size * 0.2;
                l.text(ax, y, size, true, WHITE, align, line);
            }
            x += widths[i];
        }
        l.y += header_h;
    };

    // Keep the title, header and a few rows together.
    l.ensure(20.0 + header_h + row_h * 3.0);
    draw_header(l, false);
    let rows = t.rows.len();
    for (r, cells) in texts.iter().enumerate() {
        let is_total = r >= rows;
        if l.y + row_h > CONTENT_BOTTOM {
            l.ensure(f32::MAX);
            draw_header(l, true);
        }
        if is_total {
            l.line(MARGIN_X, l.y, MARGIN_X + CONTENT_W, l.y, 1.0, INK);
        } else if r % 2 == 1 {
            l.rect(MARGIN_X, l.y, CONTENT_W, row_h, ZEBRA);
        }
        let mut x = MARGIN_X;
        let baseline = l.y + row_h * 0.5 + size * 0.35;
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i];
            let text = l.metrics.fit(cell, size, is_total, w - 2.0 * CELL_PAD);
            let numeric = t.columns[i].kind.is_numeric() && !matches!(row_cell(t, r, i), Some(Cell::Text(_)));
            let (ax, align) = if numeric { (x + w - CELL_PAD, Align::Right) } else { (x + CELL_PAD, Align::Left) };
            l.text(ax, baseline, size, is_total, INK, align, &text);
            x += w;
        }
        l.y += row_h;
    }
    l.line(MARGIN_X, l.y, MARGIN_X + CONTENT_W, l.y, 0.6, RULE);
    if t.columns.iter().any(|c| matches!(c.kind, ValueType::Datetime)) {
        l.y += 12.0;
        l.text(MARGIN_X, l.y, 7.5, false, MUTED, Align::Left, &format!("Local times: {}.", report.time_zone));
    }
}

fn row_cell(t: &Table, r: usize, i: usize) -> Option<&Cell> {
    if r < t.rows.len() { t.rows[r].get(i) } else { t.total.as_ref().and_then(|row| row.get(i)) }
}

/// Makes the columns fill `avail` exactly: narrow tables grow evenly, wide ones lose width
/// from their widest columns first (their cells are then cut with an ellipsis).
fn fit_widths(widths: &mut [f32], avail: f32) {
    let sum: f32 = widths.iter().sum();
    if sum <= avail {
        let extra = (avail - sum) / widths.len() as f32;
        widths.iter_mut().for_each(|w| *w += extra);
        return;
    }
    // Water-filling: the cap with Σ min(w, cap) = avail; columns under it keep their width.
    let mut sorted = widths.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let mut used = 0.0;
    let mut cap = avail / n as f32;
    for (k, w) in sorted.iter().enumerate() {
        let share = (avail - used) / (n - k) as f32;
        if *w > share {
            cap = share;
            break;
        }
        used += w;
    }
    widths.iter_mut().for_each(|w| *w = w.min(cap));
}

fn color(c: Rgb) -> rgb::Color {
    rgb::Color::new(c.0, c.1, c.2)
}

fn fill(c: Rgb) -> Fill {
    Fill { paint: color(c).into(), opacity: NormalizedF32::ONE, ..Default::default() }
}

fn emit(report: &Report, pages: Vec<Vec<Op>>) -> Result<Vec<u8>, PdfError> {
    let regular = Font::new(text::regular_bytes().into(), 0).ok_or(PdfError::Font)?;
    let bold = Font::new(text::bold_bytes().into(), 0).ok_or(PdfError::Font)?;
    let metrics = Metrics::new().ok_or(PdfError::Font)?;
    let mut doc = Document::new();
    let g = report.generated_at;
    doc.set_metadata(
        Metadata::new()
            .title(format!("{} — {}", report.title, report.factory_name))
            .creator("FactoryOps".into())
            .producer("FactoryOps reports".into())
            .language("en".into())
            .creation_date(
                PdfDateTime::new(u16::try_from(g.year()).unwrap_or(1970))
                    .month(g.month() as u8)
                    .day(g.day() as u8)
                    .hour(g.hour() as u8)
                    .minute(g.minute() as u8)
                    .second(g.second() as u8)
                    .utc_offset_hour(0)
                    .utc_offset_minute(0),
            ),
    );
    let total = pages.len();
    let header = format!("{} — {}", report.title, report.factory_name);
    let period = format!("{} to {} ({})", local(report, &report.from), local(report, &report.to), report.time_zone);
    let generated = format!("Generated {} ({})", local(report, &report.generated_at), report.time_zone);
    let settings = PageSettings::from_wh(PAGE_W, PAGE_H).ok_or_else(|| PdfError::Krilla("page size".into()))?;
    for (i, mut ops) in pages.into_iter().enumerate() {
        // Running head (not on the cover) and footer on every page.
        if i > 0 {
            let head = metrics.fit(&header, 8.5, true, CONTENT_W * 0.5);
            ops.push(Op::Text {
                x: MARGIN_X,
                y: 40.0,
                size: 8.5,
                bold: true,
                color: NAVY,
                align: Align::Left,
                rotate: 0.0,
                text: head,
            });
            ops.push(Op::Text {
                x: PAGE_W - MARGIN_X,
                y: 40.0,
                size: 8.0,
                bold: false,
                color: MUTED,
                align: Align::Right,
                rotate: 0.0,
                text: period.clone(),
            });
            ops.push(Op::Line { points: vec![(MARGIN_X, 48.0), (PAGE_W - MARGIN_X, 48.0)], width: 0.6, color: RULE });
        }
        let fy = PAGE_H - 34.0;
        ops.push(Op::Line {
            points: vec![(MARGIN_X, fy - 14.0), (PAGE_W - MARGIN_X, fy - 14.0)],
            width: 0.6,
            color: RULE,
        });
        ops.push(Op::Text {
            x: MARGIN_X,
            y: fy,
            size: 8.0,
            bold: false,
            color: MUTED,
            align: Align::Left,
            rotate: 0.0,
            text: generated.clone(),
        });
        ops.push(Op::Text {
            x: PAGE_W - MARGIN_X,
            y: fy,
            size: 8.0,
            bold: false,
            color: MUTED,
            align: Align::Right,
            rotate: 0.0,
            text: format!("Page {} of {}", i + 1, total),
        });

        let mut page = doc.start_page_with(settings.clone());
        let mut s = page.surface();
        for op in &ops {
            match op {
                Op::Rect { x, y, w, h, fill: c } => {
                    if let Some(rect) = Rect::from_xywh(*x, *y, *w, *h) {
                        let mut pb = PathBuilder::new();
                        pb.push_rect(rect);
                        if let Some(path) = pb.finish() {
                            s.set_stroke(None);
                            s.set_fill(Some(fill(*c)));
                            s.draw_path(&path);
                        }
                    }
                }
                Op::Line { points, width, color: c } => {
                    let mut pb = PathBuilder::new();
                    for (k, (x, y)) in points.iter().enumerate() {
                        if k == 0 { pb.move_to(*x, *y) } else { pb.line_to(*x, *y) }
                    }
                    if let Some(path) = pb.finish() {
                        s.set_fill(None);
                        s.set_stroke(Some(Stroke {
                            paint: color(*c).into(),
                            width: *width,
                            line_cap: LineCap::Butt,
                            ..Default::default()
                        }));
                        s.draw_path(&path);
                        s.set_stroke(None);
                    }
                }
                Op::Text { x, y, size, bold: b, color: c, align, rotate, text } => {
                    if text.is_empty() {
                        continue;
                    }
                    let w = metrics.width(text, *size, *b);
                    let dx = match align {
                        Align::Left => 0.0,
                        Align::Right => -w,
                        Align::Center => -w / 2.0,
                    };
                    s.set_stroke(None);
                    s.set_fill(Some(fill(*c)));
                    let font = if *b { bold.clone() } else { regular.clone() };
                    if *rotate != 0.0 {
                        s.push_transform(&Transform::from_rotate_at(*rotate, *x, *y));
                        s.draw_text(Point::from_xy(x + dx, *y), font, *size, text, false, TextDirection::Auto);
                        s.pop();
                    } else {
                        s.draw_text(Point::from_xy(x + dx, *y), font, *size, text, false, TextDirection::Auto);
                    }
                }
            }
        }
        s.finish();
        page.finish();
    }
    doc.finish().map_err(|e| PdfError::Krilla(format!("{e:?}")))
}
