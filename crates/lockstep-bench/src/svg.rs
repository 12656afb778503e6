//! A hand-written SVG bar chart (no plotting dependency): pp and tg tok/s per backend in
//! two panels, because prefill is an order of magnitude faster than generation.

use crate::report::{BenchReport, Status};
use crate::Stats;

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 240.0;
const MARGIN: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#af7aa1",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn panel(x0: f64, title: &str, bars: &[(String, Stats)]) -> String {
    let mut s = format!(
        r#"<text x="{:.1}" y="30" font-size="14" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        esc(title)
    );
    let top = bars
        .iter()
        .map(|(_, st)| st.mean + st.sd)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let (y0, h) = (MARGIN, PANEL_H);
    s += &format!(
        r#"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        y0 + h,
        x0 + PANEL_W,
        y0 + h
    );
    let slot = PANEL_W / bars.len().max(1) as f64;
    for (i, (name, st)) in bars.iter().enumerate() {
        let bh = st.mean / top * h;
        let x = x0 + i as f64 * slot + slot * 0.2;
        let w = slot * 0.6;
        let cx = x + w / 2.0;
        let err = |v: f64| y0 + h - (v / top * h).max(0.0);
        s += &format!(
            r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{bh:.1}" fill="{}"/>"#,
            y0 + h - bh,
            COLORS[i % COLORS.len()]
        );
        // Error bar: ± one standard deviation.
        s += &format!(
            r#"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="black"/>"#,
            err(st.mean - st.sd),
            err(st.mean + st.sd)
        );
        s += &format!(
            r#"<text x="{cx:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.1}</text>"#,
            err(st.mean + st.sd) - 4.0,
            st.mean
        );
        s += &format!(
            r#"<text x="{cx:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            y0 + h + 16.0,
            esc(name)
        );
    }
    s
}

/// The chart of a report: backends that did not run are left out of the bars (the table
/// and the JSON say why).
pub fn chart(report: &BenchReport) -> String {
    let ok = || report.results.iter().filter(|r| r.status == Status::Ok);
    let pp: Vec<_> = ok()
        .filter_map(|r| Some((r.backend.clone(), r.pp.clone()?)))
        .collect();
    let tg: Vec<_> = ok()
        .filter_map(|r| Some((r.backend.clone(), r.tg.clone()?)))
        .collect();
    // A model directory is shown by its name, not its full path.
    let model = std::path::Path::new(&report.model)
        .file_name()
        .map_or(report.model.clone(), |f| f.to_string_lossy().into_owned());
    let width = 2.0 * PANEL_W + 3.0 * MARGIN;
    let height = PANEL_H + 2.0 * MARGIN + 20.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    s += &panel(
        MARGIN,
        &format!("pp{} tok/s ({model})", report.prompt_tokens),
        &pp,
    );
    s += &panel(
        2.0 * MARGIN + PANEL_W,
        &format!("tg{} tok/s", report.gen_tokens),
        &tg,
    );
    s += &format!(
        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">mean ± sd over {} reps, {} threads, {}</text>"#,
        width / 2.0,
        height - 8.0,
        report.reps,
        report.threads.map_or("default".into(), |t| t.to_string()),
        esc(&report.machine.cpu)
    );
    s + "</svg>\n"
}
