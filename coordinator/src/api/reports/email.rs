//! The report as an e-mail: a text table and the same table in HTML.
//! Pure: no clock, no store.

use super::ReportView;
use crate::notify::welcome::{EmailBody, escape};

/// The daily report as an e-mail: a text table and the same in HTML.
pub(super) fn report_email(report: &ReportView) -> (String, EmailBody) {
    let subject = format!(
        "KnowTon tenant health {} to {}",
        report.from.format("%Y-%m-%d %H:%M"),
        report.to.format("%Y-%m-%d %H:%M UTC")
    );
    let rows: Vec<[String; 6]> = report
        .tenants
        .iter()
        .map(|t| {
            [
                t.tenant.clone(),
                t.status.as_str().to_owned(),
                t.availability
                    .map_or_else(|| "-".to_owned(), |a| format!("{:.3}%", a * 100.0)),
                t.latency_p95_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms")),
                t.alerts_opened.to_string(),
                t.alerts_open.to_string(),
            ]
        })
        .collect();
    let head = [
        "tenant",
        "status",
        "availability",
        "p95",
        "alerts opened",
        "open",
    ];
    let mut text = format!("{subject}\n\n");
    let line = |cells: &[String]| {
        format!(
            "{:<24} {:<9} {:>12} {:>9} {:>13} {:>5}\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        )
    };
    text.push_str(&line(&head.map(str::to_owned)));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<h2>{}</h2>\n<table>\n<tr>{}</tr>\n",
        escape(&subject),
        head.iter()
            .map(|h| format!("<th align=\"left\">{h}</th>"))
            .collect::<String>()
    );
    for row in &rows {
        text.push_str(&line(row));
        html.push_str(&format!(
            "<tr>{}</tr>\n",
            row.iter()
                .map(|c| format!("<td>{}</td>", escape(c)))
                .collect::<String>()
        ));
    }
    html.push_str("</table>\n</body></html>\n");
    (subject, EmailBody { text, html })
}
