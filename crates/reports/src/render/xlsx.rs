//! The workbook: a summary sheet, one sheet per table and one per chart (its data and a
//! native Excel chart over it). Numbers are written as numbers with the unit in the header,
//! times as Excel date-times of the factory's wall clock (Excel has no zones: the header
//! names the zone).

use std::collections::HashSet;

use chrono::{Datelike, Timelike};
use rust_xlsxwriter::{
    Chart as XChart, ChartType, Color, DocProperties, ExcelDateTime, Format, FormatAlign, FormatBorder, Workbook,
    Worksheet, XlsxError,
};

use crate::format;
use crate::model::{Cell, Chart, ChartKind, Column, Report, Table, ValueType};

const HEADER_FILL: u32 = 0x1F3A5F;
const TOTAL_FILL: u32 = 0xE8EDF3;

pub fn render(report: &Report) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    // The package's only timestamp: pinned to generated_at so identical input gives
    // identical bytes (the zip entries carry a fixed 1980 date already).
    let created = excel_time(&report.generated_at.fixed_offset())?;
    let props = DocProperties::new()
        .set_title(format!("{} — {}", report.title, report.factory_name))
        .set_author("FactoryOps")
        .set_company(&report.factory_name)
        .set_creation_datetime(&created);
    wb.set_properties(&props);

    let mut names = SheetNames::default();
    summary(wb.add_worksheet(), report, names.take("Summary"))?;
    for table in report.tables() {
        let name = names.take(&table.id);
        table_sheet(wb.add_worksheet(), report, table, name)?;
    }
    for (i, chart) in report.charts().enumerate() {
        let name = names.take(&format!("Chart {} {}", i + 1, chart.title));
        chart_sheet(wb.add_worksheet(), chart, name)?;
    }
    wb.save_to_buffer()
}

/// Valid, unique sheet names (Excel: at most 31 characters, none of `[]:*?/\`, unique
/// regardless of case).
#[derive(Default)]
struct SheetNames(HashSet<String>);

impl SheetNames {
    fn take(&mut self, wanted: &str) -> String {
        let clean: String =
            wanted.chars().map(|c| if "[]:*?/\\".contains(c) { '-' } else { c }).collect::<String>().trim().to_owned();
        let base: String = clean.trim_matches('\'').chars().take(31).collect();
        let base = if base.is_empty() { "Sheet".to_owned() } else { base };
        let mut name = base.clone();
        let mut n = 2;
        while self.0.contains(&name.to_lowercase()) {
            let suffix = format!(" ({n})");
            name = format!("{}{suffix}", base.chars().take(31 - suffix.len()).collect::<String>());
            n += 1;
        }
        self.0.insert(name.to_lowercase());
        name
    }
}

struct Formats {
    title: Format,
    label: Format,
    header: Format,
    total_text: Format,
    wrap: Format,
}

impl Formats {
    fn new() -> Self {
        Self {
            title: Format::new().set_bold().set_font_size(16),
            label: Format::new().set_bold(),
            header: Format::new()
                .set_bold()
                .set_font_color(Color::White)
                .set_background_color(Color::RGB(HEADER_FILL))
                .set_text_wrap()
                .set_align(FormatAlign::VerticalCenter)
                .set_border_bottom(FormatBorder::Thin),
            total_text: Format::new().set_bold().set_background_color(Color::RGB(TOTAL_FILL)),
            wrap: Format::new().set_text_wrap().set_align(FormatAlign::Top),
        }
    }

    /// The number format of a value type, bold on a total row.
    fn value(kind: &ValueType, total: bool) -> Format {
        let f = match kind {
            ValueType::Number { decimals, .. } => Format::new().set_num_format(number_format(*decimals, false)),
            ValueType::Percent { decimals } => Format::new().set_num_format(number_format(*decimals, true)),
            ValueType::Datetime => Format::new().set_num_format("yyyy-mm-dd hh:mm"),
            ValueType::Text => Format::new(),
        };
        if total { f.set_bold().set_background_color(Color::RGB(TOTAL_FILL)) } else { f }
    }
}

fn number_format(decimals: u8, percent: bool) -> String {
    let mut f = String::from("#,##0");
    if decimals > 0 {
        f.push('.');
        f.push_str(&"0".repeat(usize::from(decimals)));
    }
    if percent {
        // A percent format shows 100 × the stored fraction.
        f = f.replacen("#,##", "", 1);
        f.push('%');
    }
    f
}

fn write_cell(ws: &mut Worksheet, row: u32, col: u16, cell: &Cell, fmt: &Format) -> Result<(), XlsxError> {
    match cell {
        Cell::Number(v) => ws.write_number_with_format(row, col, *v, fmt)?,
        Cell::Time(t) => {
            let x = excel_time(t)?;
            ws.write_datetime_with_format(row, col, &x, fmt)?
        }
        Cell::Text(s) => ws.write_string_with_format(row, col, s, fmt)?,
        Cell::Empty => ws.write_blank(row, col, fmt)?,
    };
    Ok(())
}

/// The factory's wall-clock time as an Excel date-time.
fn excel_time(t: &chrono::DateTime<chrono::FixedOffset>) -> Result<ExcelDateTime, XlsxError> {
    let year = u16::try_from(t.year()).map_err(|_| XlsxError::DateTimeRangeError(t.to_rfc3339()))?;
    ExcelDateTime::from_ymd(year, t.month() as u8, t.day() as u8)?.and_hms(
        t.hour() as u16,
        t.minute() as u8,
        f64::from(t.second()),
    )
}

fn header_text(report: &Report, c: &Column) -> String {
    match c.kind {
        ValueType::Datetime => format!("{} ({})", c.title, report.time_zone),
        _ => c.header(),
    }
}

fn summary(ws: &mut Worksheet, report: &Report, name: String) -> Result<(), XlsxError> {
    let f = Formats::new();
    ws.set_name(name)?;
    ws.set_column_width(0, 34)?;
    ws.set_column_width(1, 24)?;
    ws.set_column_width(2, 16)?;
    ws.set_column_width(3, 12)?;
    ws.write_string_with_format(0, 0, format!("{} — {}", report.title, report.factory_name), &f.title)?;
    let tz = report.tz();
    let local = |t: &chrono::DateTime<chrono::Utc>| t.with_timezone(&tz).fixed_offset();
    let dt = Formats::value(&ValueType::Datetime, false);
    let mut row = 2;
    ws.write_string_with_format(row, 0, "Factory", &f.label)?;
    ws.write_string(row, 1, &report.factory_name)?;
    row += 1;
    ws.write_string_with_format(row, 0, format!("From ({})", report.time_zone), &f.label)?;
    ws.write_datetime_with_format(row, 1, &excel_time(&local(&report.from))?, &dt)?;
    row += 1;
    ws.write_string_with_format(row, 0, format!("To, exclusive ({})", report.time_zone), &f.label)?;
    ws.write_datetime_with_format(row, 1, &excel_time(&local(&report.to))?, &dt)?;
    row += 1;
    ws.write_string_with_format(row, 0, "Time zone", &f.label)?;
    ws.write_string(row, 1, &report.time_zone)?;
    row += 1;
    ws.write_string_with_format(row, 0, format!("Generated at ({})", report.time_zone), &f.label)?;
    ws.write_datetime_with_format(row, 1, &excel_time(&local(&report.generated_at))?, &dt)?;
    row += 2;

    let figures: Vec<_> = report.sections.iter().flat_map(|s| s.key_figures.iter().map(move |k| (s, k))).collect();
    if !figures.is_empty() {
        for (col, h) in ["Section", "Figure", "Value", "Unit"].iter().enumerate() {
            ws.write_string_with_format(row, col as u16, *h, &f.header)?;
        }
        let header_row = row;
        for (s, k) in &figures {
            row += 1;
            ws.write_string(row, 0, &s.title)?;
            ws.write_string(row, 1, &k.label)?;
            write_cell(ws, row, 2, &k.value, &Formats::value(&k.kind, false))?;
            if let Some(u) = k.kind.unit() {
                ws.write_string(row, 3, u)?;
            }
        }
        ws.autofilter(header_row, 0, row, 3)?;
        row += 2;
    }
    let notes: Vec<&String> = report.sections.iter().flat_map(|s| s.notes.iter()).collect();
    if !notes.is_empty() {
        ws.write_string_with_format(row, 0, "Notes", &f.label)?;
        for n in notes {
            row += 1;
            ws.merge_range(row, 0, row, 3, n, &f.wrap)?;
            // Room for a wrapped sentence across the four merged columns.
            ws.set_row_height(row, 15.0 * (n.len() as f64 / 80.0).ceil().max(1.0))?;
        }
    }
    Ok(())
}

fn table_sheet(ws: &mut Worksheet, report: &Report, table: &Table, name: String) -> Result<(), XlsxError> {
    let f = Formats::new();
    ws.set_name(name)?;
    let formats: Vec<Format> = table.columns.iter().map(|c| Formats::value(&c.kind, false)).collect();
    let total_formats: Vec<Format> = table
        .columns
        .iter()
        .map(|c| if matches!(c.kind, ValueType::Text) { f.total_text.clone() } else { Formats::value(&c.kind, true) })
        .collect();
    let mut widths: Vec<usize> = Vec::with_capacity(table.columns.len());
    for (col, c) in table.columns.iter().enumerate() {
        let h = header_text(report, c);
        widths.push(h.len().min(28));
        ws.write_string_with_format(0, col as u16, h, &f.header)?;
    }
    ws.set_row_height(0, 30)?;
    for (r, cells) in table.rows.iter().enumerate() {
        let row = r as u32 + 1;
        for (col, (cell, c)) in cells.iter().zip(&table.columns).enumerate() {
            write_cell(ws, row, col as u16, cell, &formats[col])?;
            let w = format::cell(cell, &c.kind).chars().count();
            if w > widths[col] {
                widths[col] = w.min(60);
            }
        }
    }
    let last = table.rows.len() as u32;
    if let Some(total) = &table.total {
        for (col, cell) in total.iter().enumerate().take(table.columns.len()) {
            write_cell(ws, last + 1, col as u16, cell, &total_formats[col])?;
        }
    }
    for (col, w) in widths.iter().enumerate() {
        ws.set_column_width(col as u16, (*w as f64 + 2.0).max(10.0))?;
    }
    ws.set_freeze_panes(1, 0)?;
    if !table.columns.is_empty() {
        // The filter covers the data rows, not the total row below them.
        ws.autofilter(0, 0, last.max(1), table.columns.len() as u16 - 1)?;
    }
    Ok(())
}

fn chart_sheet(ws: &mut Worksheet, chart: &Chart, name: String) -> Result<(), XlsxError> {
    let f = Formats::new();
    ws.set_name(&name)?;
    let n = chart.categories.len() as u32;
    ws.write_string_with_format(0, 0, "Category", &f.header)?;
    let value = Formats::value(&ValueType::Number { unit: None, decimals: 2 }, false);
    for (i, s) in chart.series.iter().enumerate() {
        let col = i as u16 + 1;
        ws.write_string_with_format(0, col, format!("{} ({})", s.name, chart.unit), &f.header)?;
        ws.set_column_width(col, 16)?;
        for (r, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                ws.write_number_with_format(r as u32 + 1, col, *v, &value)?;
            }
        }
    }
    let widest = chart.categories.iter().map(|c| c.chars().count()).max().unwrap_or(8);
    ws.set_column_width(0, (widest as f64 + 2.0).clamp(10.0, 40.0))?;
    for (r, c) in chart.categories.iter().enumerate() {
        ws.write_string(r as u32 + 1, 0, c)?;
    }
    ws.set_row_height(0, 30)?;
    ws.set_freeze_panes(1, 0)?;
    ws.autofilter(0, 0, n.max(1), chart.series.len() as u16)?;
    if n == 0 || chart.series.is_empty() {
        return Ok(());
    }

    let mut x = XChart::new(match chart.kind {
        ChartKind::Bar => ChartType::Column,
        ChartKind::StackedBar => ChartType::ColumnStacked,
        ChartKind::Line => ChartType::Line,
    });
    x.title().set_name(&chart.title);
    x.y_axis().set_name(&chart.unit);
    for (i, _) in chart.series.iter().enumerate() {
        let col = i as u16 + 1;
        x.add_series().set_name((name.as_str(), 0, col)).set_categories((name.as_str(), 1, 0, n, 0)).set_values((
            name.as_str(),
            1,
            col,
            n,
            col,
        ));
    }
    if chart.series.len() == 1 {
        x.legend().set_hidden();
    }
    x.set_width(720).set_height(400);
    ws.insert_chart(1, chart.series.len() as u16 + 2, &x)?;
    Ok(())
}
