//! Bar charts as inline SVG: no script and no external file, so the report
//! is one page that opens anywhere. Every bar is a `rect.mark` with a
//! tooltip; a bar of zero is not drawn.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// One bar a category for each series, side by side.
    pub series: Vec<Series>,
    /// Values are shares from 0 to 1, shown as percentages.
    pub percent: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 54.0;
const COLOURS: [&str; 6] = [
    "#3b6fb6", "#e08a2e", "#4a9d5b", "#b8473f", "#7d5ba6", "#6b7b8c",
];

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn format_value(value: f64, percent: bool) -> String {
    if percent {
        format!("{:.0}%", value * 100.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The chart as an `<svg>` element.
pub fn bar_chart(chart: &Chart) -> String {
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max);
    let top = if chart.percent {
        1.0
    } else {
        nice_ceiling(max)
    };
    let marks = chart
        .series
        .iter()
        .flat_map(|s| &s.values)
        .filter(|v| **v > 0.0)
        .count();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="plot" id="{id}" data-marks="{marks}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">"#,
        id = chart.id,
        title = escape(&chart.title),
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="20" class="title">{}</text>"#,
        escape(&chart.title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    // Axes and y ticks.
    for tick in 0..=4 {
        let value = top * f64::from(tick) / 4.0;
        let y = base - plot_h * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"#,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = format_value(value, chart.percent),
        );
    }
    let _ = write!(
        svg,
        r#"<text transform="translate(14 {y}) rotate(-90)" class="axis" text-anchor="middle">{}</text>"#,
        escape(&chart.y_label),
        y = TOP + plot_h / 2.0,
    );
    if marks == 0 {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" class="empty" text-anchor="middle">no data</text>"#,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0,
        );
    }
    let slot = plot_w / chart.categories.len().max(1) as f64;
    let series = chart.series.len().max(1) as f64;
    let bar_w = (slot * 0.8 / series).max(1.0);
    for (c, category) in chart.categories.iter().enumerate() {
        let x0 = LEFT + slot * c as f64 + slot * 0.1;
        for (s, serie) in chart.series.iter().enumerate() {
            let value = serie.values.get(c).copied().unwrap_or(0.0);
            if value <= 0.0 {
                continue;
            }
            let h = plot_h * (value / top).min(1.0);
            let _ = write!(
                svg,
                r#"<rect class="mark" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{fill}"><title>{name}{category}: {label}</title></rect>"#,
                x = x0 + bar_w * s as f64,
                y = base - h,
                fill = COLOURS[s % COLOURS.len()],
                name = if chart.series.len() > 1 {
                    format!("{}, ", escape(&serie.name))
                } else {
                    String::new()
                },
                category = escape(category),
                label = format_value(value, chart.percent),
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{}</text>"#,
            escape(category),
            x = x0 + slot * 0.4,
            y = base + 16.0,
        );
    }
    if chart.series.len() > 1 {
        for (s, serie) in chart.series.iter().enumerate() {
            let x = LEFT + 110.0 * s as f64;
            let y = HEIGHT - 14.0;
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{ry}" width="10" height="10" fill="{fill}"/><text x="{tx}" y="{y}" class="tick">{name}</text>"#,
                ry = y - 9.0,
                tx = x + 14.0,
                fill = COLOURS[s % COLOURS.len()],
                name = escape(&serie.name),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `max` (and at least 1).
fn nice_ceiling(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
    }

    #[test]
    fn a_bar_a_non_zero_value_and_text_is_escaped() {
        let chart = Chart {
            id: "c",
            title: "<b>".into(),
            y_label: "n".into(),
            categories: vec!["a".into(), "b&c".into()],
            series: vec![Series {
                name: "s".into(),
                values: vec![0.0, 3.0],
            }],
            percent: false,
        };
        let svg = bar_chart(&chart);
        assert_eq!(svg.matches("class=\"mark\"").count(), 1);
        assert!(svg.contains("data-marks=\"1\""));
        assert!(svg.contains("&lt;b&gt;") && svg.contains("b&amp;c"));
        assert!(!svg.contains("<b>"));
    }
}
