//! The operator's views: `/status`, an HTML page (server-rendered, no scripts, no external assets, refreshed every
//! 10 s) that anyone may open, so it shows figures only; `/status/relays`, the details only administrators may see
//! (NIP-98); and `/metrics`, the Prometheus text. All read the same reporters.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::{escape, nip98};
use crate::relay::RelayState;
use crate::report::{Chart, Section};

pub(super) async fn page(State(state): State<Arc<RelayState>>) -> Html<String> {
    let config = state.config();
    let mut sections = vec![Section {
        title: "Relay".into(),
        rows: vec![
            ("Public URL".into(), config.server.public_url.clone()),
            ("Open connections".into(), state.connections.len().to_string()),
            ("Open subscriptions".into(), state.subscriptions.len().to_string()),
        ],
        chart: None,
    }];
    for reporter in state.reporters() {
        sections.push(reporter.report().await);
    }
    // Refreshed every 10 s: a browser left open on it stays current.
    Html(render(&format!("{}: status", config.relay.name), &sections, Some(10)))
}

/// `/status/relays`: what the public page leaves out (the watched relays by name, with their errors), for an
/// administrator authenticated with NIP-98. Never cached.
pub(super) async fn relays(State(state): State<Arc<RelayState>>, headers: HeaderMap) -> Response {
    let config = state.config();
    if let Err(reason) = nip98::authorize(&config, &headers, &Method::GET, "/status/relays", b"", state.clock.secs()) {
        return (StatusCode::UNAUTHORIZED, [(header::CACHE_CONTROL, "no-store")], format!("{reason}\n"))
            .into_response();
    }
    let mut sections = Vec::new();
    for reporter in state.reporters() {
        sections.extend(reporter.details().await);
    }
    // No refresh: the browser would not send the authorization again.
    let html = render(&format!("{}: watched relays", config.relay.name), &sections, None);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

fn render(title: &str, sections: &[Section], refresh_secs: Option<u32>) -> String {
    let title = escape(title);
    let refresh =
        refresh_secs.map(|secs| format!("<meta http-equiv=\"refresh\" content=\"{secs}\">")).unwrap_or_default();
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}h1{{font-size:1.5rem}}\
         section{{margin-bottom:1.5rem}}table{{border-collapse:collapse}}\
         td{{padding:.2rem 1rem .2rem 0;vertical-align:top}}td:first-child{{color:#666}}\
         svg{{display:block;margin-top:.5rem}}</style></head><body><h1>{title}</h1>"
    );
    for section in sections {
        let _ = write!(html, "<section><h2>{}</h2><table>", escape(&section.title));
        for (label, value) in &section.rows {
            let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(label), escape(value));
        }
        html.push_str("</table>");
        if let Some(chart) = &section.chart {
            html.push_str(&bar_chart(chart));
        }
        html.push_str("</section>");
    }
    html.push_str("</body></html>");
    html
}

/// Sixty bars, one per minute, scaled to the busiest minute.
fn bar_chart(chart: &Chart) -> String {
    let (width, height, bar) = (600, 80, 10);
    let peak = chart.per_minute.iter().copied().max().unwrap_or(0);
    let scale = peak.max(1);
    let mut svg = format!(
        "<svg width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"{label}\"><title>{label}, last hour (peak {peak})</title>",
        height + 16,
        label = escape(&chart.label)
    );
    for (i, count) in chart.per_minute.iter().enumerate() {
        let h = (*count * height / scale).max(u64::from(*count > 0));
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"#3a7\"><title>{count}</title></rect>",
            i as u64 * bar,
            height - h,
            bar - 2
        );
    }
    let _ = write!(svg, "<line x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#ccc\"/>");
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" font-size=\"11\" fill=\"#666\">{} over the last hour (peak {peak} a minute)</text></svg>",
        height + 13,
        escape(&chart.label)
    );
    svg
}

pub(super) async fn metrics(State(state): State<Arc<RelayState>>) -> Response {
    metrics::gauge!(crate::metrics::SUBSCRIPTIONS).set(state.subscriptions.len() as f64);
    for reporter in state.reporters() {
        reporter.set_gauges();
    }
    let text = crate::metrics::handle().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
