//! The HTML the report is made of: escaping, tables, the page frame and its style.
//! Everything is inline (style, SVG); the page's Content-Security-Policy forbids
//! loading anything, so it shows the same from a mail attachment as from disk.

use std::fmt::Write as _;

/// Text as HTML content.
pub fn esc(text: &str) -> String {
    html_escape::encode_text(text).into_owned()
}

/// Text as a double-quoted attribute value.
pub fn attr(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// A digest shortened for a table (`blake3:8d26b9f9397b`), whole on hover.
pub fn digest(full: &str) -> String {
    let short: String = full.chars().take(19).collect();
    format!("<code title=\"{}\">{}</code>", attr(full), esc(&short))
}

/// A table; `rows` hold cells that are already HTML. Columns named in `numeric` are
/// right-aligned.
pub fn table(header: &[&str], numeric: &[&str], rows: &[Vec<String>]) -> String {
    let class = |h: &str| {
        if numeric.contains(&h) {
            " class=\"num\""
        } else {
            ""
        }
    };
    let mut out = String::from("<table>\n<thead><tr>");
    for h in header {
        let _ = write!(out, "<th{}>{}</th>", class(h), esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (h, cell) in header.iter().zip(row) {
            let _ = write!(out, "<td{}>{cell}</td>", class(h));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// A section with a heading and an anchor.
pub fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n{body}</section>\n",
        attr(id),
        esc(title)
    )
}

/// The whole page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(title)
    )
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1.5em; color: #1d2630; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #d5dde8; padding-bottom: .2em; margin-top: 1.8em; }
nav a { margin-right: 1em; color: #2b5fa5; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15em 1.2em; }
dl.facts dt { font-weight: 600; color: #4a5868; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th { background: #e4ebf5; text-align: left; }
th, td { padding: .3em .7em; border-bottom: 1px solid #dfe5ec; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #f7f9fb; }
code { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: .92em; }
.status { font-weight: 600; padding: .05em .45em; border-radius: .3em; }
.s-succeeded, .s-ran { background: #d9f0dd; color: #1d5e2a; }
.s-cached { background: #e3ecf7; color: #2b4f80; }
.s-failed { background: #f8d7da; color: #8a1c24; }
.s-running, .s-interrupted, .s-cancelled, .s-skipped { background: #f1ecd9; color: #6b5a1e; }
.figure svg { max-width: 100%; height: auto; border: 1px solid #e1e6ed; }
.note { color: #5b6878; font-size: .92em; }
footer { margin-top: 3em; color: #6b7684; font-size: .85em; }
";

/// A status word as a coloured badge.
pub fn status(word: &str) -> String {
    let class: String = word.chars().filter(char::is_ascii_alphabetic).collect();
    format!("<span class=\"status s-{class}\">{}</span>", esc(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        assert_eq!(esc("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(attr("a\"b"), "a&quot;b");
        let t = table(&["name", "n"], &["n"], &[vec![esc("<x>"), "1".into()]]);
        assert!(
            t.contains("<td>&lt;x&gt;</td><td class=\"num\">1</td>"),
            "{t}"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let p = page("t", "<p>x</p>");
        assert!(p.contains("default-src 'none'"), "{p}");
        assert!(!p.contains("http://") && !p.contains("https://"), "{p}");
    }
}
