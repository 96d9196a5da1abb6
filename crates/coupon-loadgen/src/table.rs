//! Markdown tables for the report pages, drawn by comfy-table, so no table
//! is written by hand.

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::Table;

/// `header` and `rows` as a Markdown table, one line per row, each line
/// ending in a newline. Columns are padded to their widest cell.
pub fn markdown<H, R>(header: H, rows: impl IntoIterator<Item = R>) -> String
where
    H: IntoIterator,
    H::Item: ToString,
    R: IntoIterator,
    R::Item: ToString,
{
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(header.into_iter().map(|cell| cell.to_string()));
    for row in rows {
        table.add_row(row.into_iter().map(|cell| cell.to_string()));
    }
    format!("{table}\n")
}

/// The cells of every table line in `md`, headers included and separator
/// lines left out, trimmed of their padding: what a test compares.
#[cfg(test)]
pub(crate) fn rows(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|line| !line.chars().all(|c| c == '|' || c == '-'))
        .filter_map(|line| line.strip_prefix('|')?.strip_suffix('|'))
        .map(|inner| inner.split('|').map(|cell| cell.trim().to_string()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_markdown_with_one_line_per_row() {
        let md = markdown(["", "spike", "soak"], [["duration", "3.7 s", "180.0 s"], ["requests", "55000", "1"]]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert!(md.ends_with("|\n"), "{md:?}");
        assert!(lines[1].chars().all(|c| c == '|' || c == '-'), "separator: {md}");
        assert_eq!(lines[1].matches('|').count(), 4, "{md}");
        for line in &lines {
            assert_eq!(line.chars().count(), lines[0].chars().count(), "columns line up: {md}");
        }
        assert_eq!(
            rows(&md),
            [vec!["", "spike", "soak"], vec!["duration", "3.7 s", "180.0 s"], vec!["requests", "55000", "1"],]
        );
    }

    #[test]
    fn a_table_without_rows_keeps_its_header_and_separator() {
        let md = markdown(["mode", "round"], Vec::<[String; 2]>::new());
        assert_eq!(md.lines().count(), 2, "{md}");
        assert_eq!(rows(&md), [["mode", "round"]]);
    }
}
