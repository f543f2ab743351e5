#![allow(clippy::unwrap_used)]
//! Every report kind rendered in every format from seeded data, read back with real
//! readers: `pdftotext` / `pdftoppm` (poppler-utils) for the PDF, calamine for the
//! workbook, serde and the OpenAPI schema for the JSON. The expected figures are the
//! hand-computed ones in `common`.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use calamine::{Data, Reader, Xlsx};
use factoryops_reports::build::{alerts, analytics, energy, health};
use factoryops_reports::{Format, Report, file_name, render};
use serde_json::Value;

fn reports() -> Vec<Report> {
    vec![
        energy::build(&common::energy()).unwrap(),
        alerts::build(&common::alerts()).unwrap(),
        health::build(&common::health()).unwrap(),
        analytics::build(&common::analytics()).unwrap(),
    ]
}

/// poppler-utils is installed by scripts/test-deps.sh; a developer machine without it
/// skips loudly, CI fails.
fn poppler() -> bool {
    let ok = Command::new("pdftotext").arg("-v").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "pdftotext (poppler-utils) is missing in CI");
        eprintln!("SKIPPED: pdftotext not installed (run scripts/test-deps.sh)");
    }
    ok
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pdf_text(report: &Report) -> (String, PathBuf) {
    let bytes = render(report, Format::Pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let dir = out_dir(report.kind.as_str());
    let path = dir.join(file_name(report, Format::Pdf));
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output().unwrap();
    assert!(out.status.success(), "pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).unwrap(), path)
}

fn assert_contains(text: &str, expected: &[&str]) {
    let missing: Vec<&&str> = expected.iter().filter(|e| !text.contains(**e)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
}

fn pages(text: &str) -> usize {
    text.matches('\u{c}').count().max(1)
}

#[test]
fn energy_pdf_has_the_totals_cover_and_page_numbers() {
    if !poppler() {
        return;
    }
    let report = energy::build(&common::energy()).unwrap();
    let (text, _) = pdf_text(&report);
    let n = pages(&text);
    assert_contains(
        &text,
        &[
            "Energy report",
            "Werk Süd",
            "Europe/Berlin",
            // Period and generated-at in local time; 31 March is summer time already.
            "2026-03-28 00:00",
            "2026-03-31 00:00",
            "UTC+01:00 at the start, UTC+02:00 at the end",
            "2026-03-31 06:00",
            "3,600.6 kWh",
            "102.4 kW",
            "2026-03-30 14:30",
            "720.15 EUR",
            "1,440.3 kg CO2",
            "350.1 kWh",
            "9.7 %",
            "1,056.15 EUR",
            // Device table: Press 1 first (largest), its share of the total.
            "Press 1",
            "1,800.3",
            "50.0 %",
            // The gap on the short day: 2.5 hours.
            "2026-03-29 10:00",
            "2.50",
            "meter-x",
            "Page 1 of",
            &format!("Page {n} of {n}"),
        ],
    );
}

#[test]
fn alerts_pdf_has_counts_mtta_mttr_and_delivery() {
    if !poppler() {
        return;
    }
    let (text, _) = pdf_text(&alerts::build(&common::alerts()).unwrap());
    assert_contains(
        &text,
        &[
            "Alerts report",
            "20.0 min",
            "60.0 min",
            "Overtemperature",
            "Low pressure",
            "75.0 %",
            "50.0 %",
            "66.7 %",
            "2.25",
            "4.0",
        ],
    );
    // Alerts opened 5, critical 2, unresolved 2 (the key-figure cards' values line).
    let values = text
        .lines()
        .skip_while(|l| !l.contains("Alerts opened"))
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(values.split_whitespace().collect::<Vec<_>>(), ["5", "2", "2"], "{values}");
    // Press 1: 3 alerts, 5 triggers, MTTA 10.0, MTTR 45.0.
    let press = ["Press", "1", "3", "5", "10.0", "45.0"];
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == press), "{text}");
}

#[test]
fn health_pdf_has_online_share_and_gaps() {
    if !poppler() {
        return;
    }
    let (text, _) = pdf_text(&health::build(&common::health()).unwrap());
    assert_contains(
        &text,
        &["Device health report", "48.3 %", "95.0 %", "50.0 %", "0.99 %", "1,500", "2.50", "Sensor X"],
    );
}

#[test]
fn analytics_pdf_has_dataset_hash_model_and_findings() {
    if !poppler() {
        return;
    }
    let (text, _) = pdf_text(&analytics::build(&common::analytics()).unwrap());
    assert_contains(
        &text,
        &[
            "Analytics run report",
            common::DATASET_SHA256,
            "isolation-forest 3",
            "0.931",
            "0.888",
            "120,960",
            "Press 2 vibrates",
        ],
    );
}

/// A long table breaks across pages and repeats its header; every page is rendered to PNG
/// (the picture in docs/img/report-energy.png is the second page of this report).
#[test]
fn long_tables_break_with_repeated_headers_and_pages_render() {
    if !poppler() {
        return;
    }
    let report = energy::build(&common::energy_large(100, 30)).unwrap();
    let (text, path) = pdf_text(&report);
    let n = pages(&text);
    assert!(n >= 6, "{n} pages");
    assert!(text.contains("Energy by device (continued)"), "no continued table");
    // The device table's header row is on every page the table spans.
    let header_pages = text.split('\u{c}').filter(|p| p.contains("Energy by device") && p.contains("Share")).count();
    assert!(header_pages >= 2, "{header_pages}");
    assert!(text.contains(&format!("Page {n} of {n}")));

    let prefix = path.with_extension("");
    let out = Command::new("pdftoppm").args(["-png", "-r", "60"]).arg(&path).arg(&prefix).output().unwrap();
    assert!(out.status.success(), "pdftoppm: {}", String::from_utf8_lossy(&out.stderr));
    let pngs: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let stem = prefix.file_name().unwrap().to_string_lossy().into_owned();
            p.extension().is_some_and(|x| x == "png") && p.file_name().unwrap().to_string_lossy().starts_with(&stem)
        })
        .collect();
    assert!(pngs.len() >= n, "{} PNGs for {n} pages", pngs.len());
    for p in pngs {
        let bytes = std::fs::read(&p).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000, "{}", p.display());
    }
}

fn workbook(report: &Report) -> Xlsx<Cursor<Vec<u8>>> {
    let bytes = render(report, Format::Xlsx).unwrap();
    std::fs::write(out_dir(report.kind.as_str()).join(file_name(report, Format::Xlsx)), &bytes).unwrap();
    Xlsx::new(Cursor::new(bytes)).unwrap()
}

fn float(d: Option<&Data>) -> f64 {
    match d {
        Some(Data::Float(v)) => *v,
        other => panic!("expected a number, got {other:?}"),
    }
}

fn string(d: Option<&Data>) -> String {
    match d {
        Some(Data::String(s)) => s.clone(),
        other => panic!("expected a string, got {other:?}"),
    }
}

#[test]
fn energy_xlsx_has_typed_numbers_units_and_times() {
    let report = energy::build(&common::energy()).unwrap();
    let mut wb = workbook(&report);
    let names = wb.sheet_names();
    assert_eq!(&names[..6], ["Summary", "By day", "By shift", "By device", "By group", "Peaks"]);
    assert!(names.iter().any(|n| n.starts_with("Chart 1")), "{names:?}");

    let days = wb.worksheet_range("By day").unwrap();
    assert_eq!(string(days.get_value((0, 1))), "Energy (kWh)");
    assert_eq!(string(days.get_value((0, 3))), "Cost (EUR)");
    assert_eq!(string(days.get_value((1, 0))), "2026-03-28 Sat");
    assert_eq!(float(days.get_value((1, 1))), 1200.4);
    assert_eq!(float(days.get_value((2, 5))), 88.0);
    // The total row below the data.
    assert_eq!(string(days.get_value((4, 0))), "Total");
    assert!((float(days.get_value((4, 1))) - 3600.6).abs() < 1e-9);
    assert!((float(days.get_value((4, 3))) - 720.15).abs() < 1e-9);

    let shifts = wb.worksheet_range("By shift").unwrap();
    assert_eq!(string(shifts.get_value((0, 0))), "Start (Europe/Berlin)");
    match shifts.get_value((5, 0)) {
        // 30 March 06:00 local, after the change to summer time.
        Some(Data::DateTime(t)) => assert_eq!(t.as_datetime().unwrap().to_string(), "2026-03-30 06:00:00"),
        other => panic!("expected a date-time, got {other:?}"),
    }

    let devices = wb.worksheet_range("By device").unwrap();
    assert_eq!(string(devices.get_value((1, 0))), "Press 1");
    assert_eq!(float(devices.get_value((1, 2))), 1800.3);
    assert!((float(devices.get_value((1, 3))) - 0.5).abs() < 1e-9, "share as a fraction under a % format");

    let summary = wb.worksheet_range("Summary").unwrap();
    let row = (0..summary.height() as u32)
        .find(|r| matches!(summary.get_value((*r, 1)), Some(Data::String(s)) if s == "Energy consumed"))
        .unwrap();
    assert!((float(summary.get_value((row, 2))) - 3600.6).abs() < 1e-9);
    assert_eq!(string(summary.get_value((row, 3))), "kWh");
}

#[test]
fn every_kind_renders_to_xlsx_with_numbers() {
    let mut a = workbook(&alerts::build(&common::alerts()).unwrap());
    let sev = a.worksheet_range("By severity").unwrap();
    assert_eq!(string(sev.get_value((1, 0))), "critical");
    assert_eq!(float(sev.get_value((1, 1))), 2.0);
    assert_eq!(float(sev.get_value((4, 3))), 20.0, "total MTTA");
    assert_eq!(float(sev.get_value((4, 4))), 60.0, "total MTTR");
    let notes = a.worksheet_range("Notifications").unwrap();
    assert_eq!(string(notes.get_value((1, 0))), "email");
    assert_eq!(float(notes.get_value((1, 5))), 0.75);
    assert_eq!(float(notes.get_value((1, 6))), 2.25);

    let mut h = workbook(&health::build(&common::health()).unwrap());
    let d = h.worksheet_range("Devices").unwrap();
    // Worst first.
    assert_eq!(string(d.get_value((1, 0))), "Sensor X");
    assert_eq!(float(d.get_value((3, 1))), 0.95);
    assert!(matches!(d.get_value((3, 2)), Some(Data::DateTime(_))));
    assert!(matches!(d.get_value((1, 2)), Some(Data::Empty) | None), "never seen: blank");

    let mut r = workbook(&analytics::build(&common::analytics()).unwrap());
    let s = r.worksheet_range("Summary").unwrap();
    let row = (0..s.height() as u32)
        .find(|r| matches!(s.get_value((*r, 1)), Some(Data::String(x)) if x == "Precision"))
        .unwrap();
    assert_eq!(float(s.get_value((row, 2))), 0.9312);
    let i = r.worksheet_range("Inputs").unwrap();
    assert_eq!(string(i.get_value((3, 1))), common::DATASET_SHA256);
}

/// The JSON schema of `Report` as the OpenAPI document will carry it.
fn schema_validator() -> jsonschema::Validator {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(components(schemas(Report)))]
    struct Doc;
    let doc = serde_json::to_value(Doc::openapi()).unwrap();
    let schema = serde_json::json!({"$ref": "#/components/schemas/Report", "components": doc["components"]});
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

#[test]
fn json_round_trips_and_matches_the_schema() {
    let validator = schema_validator();
    for report in reports() {
        let bytes = render(&report, Format::Json).unwrap();
        let back: Report = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, report, "{}", report.kind.as_str());
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", report.kind.as_str());
    }
    let energy: Value = serde_json::from_slice(&render(&reports()[0], Format::Json).unwrap()).unwrap();
    assert_eq!(energy["kind"], "energy");
    assert_eq!(energy["time_zone"], "Europe/Berlin");
    assert_eq!(energy["sections"][0]["key_figures"][0]["value"], 3600.6);
    // Local times carry their offset: 30 March is summer time.
    assert_eq!(energy["sections"][0]["key_figures"][2]["value"], "2026-03-30T14:30:00+02:00");
    // A misspelt field is refused, not ignored.
    let mut wrong = energy.clone();
    wrong["sections"][0]["key_figure"] = Value::Array(vec![]);
    assert!(serde_json::from_value::<Report>(wrong).is_err());
}

#[test]
fn identical_input_gives_identical_bytes() {
    for report in reports() {
        for format in [Format::Pdf, Format::Xlsx, Format::Json] {
            let a = render(&report, format).unwrap();
            let b = render(&report.clone(), format).unwrap();
            assert!(a == b, "{} {:?} differs between two renders", report.kind.as_str(), format);
        }
    }
    // And a different generated_at changes the bytes (it is in the metadata).
    let mut later = reports().remove(0);
    later.generated_at += chrono::Duration::hours(1);
    assert_ne!(render(&later, Format::Pdf).unwrap(), render(&reports()[0], Format::Pdf).unwrap());
}

#[test]
fn file_names_and_content_types() {
    let r = energy::build(&common::energy()).unwrap();
    assert_eq!(file_name(&r, Format::Pdf), "energy-report_werk-sued_2026-03-28_2026-03-31.pdf");
    assert_eq!(Format::Xlsx.content_type(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
    let h = health::build(&common::health()).unwrap();
    assert_eq!(file_name(&h, Format::Json), "device-health-report_werk-sued_2026-03-01_2026-03-02.json");
}

#[test]
fn builders_refuse_bad_headers() {
    let mut input = common::energy();
    input.header.time_zone = "Mars/Olympus".into();
    assert_eq!(energy::build(&input).unwrap_err(), factoryops_reports::BuildError::TimeZone("Mars/Olympus".into()));
    let mut input = common::health();
    input.header.to_ms = input.header.from_ms;
    assert_eq!(health::build(&input).unwrap_err(), factoryops_reports::BuildError::Period);
}
