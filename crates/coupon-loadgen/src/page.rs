//! Sections of docs/BENCHMARK.md that one tool owns: each sits between two
//! markers, so the spike benchmark, the soak and the many-coupons run each
//! rewrite only their own part of the page.

/// A section's markers.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub begin: &'static str,
    pub end: &'static str,
}

impl Section {
    /// The section as it stands in `page`, markers included.
    pub fn find<'a>(&self, page: &'a str) -> Option<&'a str> {
        let start = page.find(self.begin)?;
        let end = page[start..].find(self.end)? + start + self.end.len();
        Some(&page[start..end])
    }

    /// `page` with this section replaced by `new`, or `new` appended.
    pub fn splice(&self, page: &str, new: &str) -> String {
        match self.find(page) {
            Some(old) => page.replacen(old, new, 1),
            None if page.is_empty() => new.to_string(),
            None => format!("{}\n\n{new}\n", page.trim_end()),
        }
    }

    /// Rewrites this section of the page at `path`.
    pub fn write(&self, path: &std::path::Path, new: &str) -> std::io::Result<()> {
        let page = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, self.splice(&page, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: Section = Section { begin: "<!-- s -->", end: "<!-- /s -->" };

    #[test]
    fn a_section_is_appended_once_and_then_replaced_in_place() {
        let (begin, end) = (SECTION.begin, SECTION.end);
        let page = "# Spike benchmark\n\nrows\n";
        let first = SECTION.splice(page, &format!("{begin}\nfirst\n{end}"));
        assert_eq!(first, format!("# Spike benchmark\n\nrows\n\n{begin}\nfirst\n{end}\n"));
        let second = SECTION.splice(&first, &format!("{begin}\nsecond\n{end}"));
        assert_eq!(second, format!("# Spike benchmark\n\nrows\n\n{begin}\nsecond\n{end}\n"));
        assert_eq!(SECTION.find(&second), Some(format!("{begin}\nsecond\n{end}").as_str()));
        assert_eq!(SECTION.find(page), None);
    }
}
