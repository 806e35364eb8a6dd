//! Aligned text tables: a header row and left-aligned columns separated by two spaces, the
//! layout of `lvs`/`systemctl list-units` that `column -t` would give.

/// A table under construction.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns printed right-aligned (numbers, sizes).
    right: Vec<bool>,
}

impl Table {
    /// A table with these column titles; every column left-aligned.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            right: vec![false; header.len()],
        }
    }

    /// Right-aligns column `index` (sizes and counts read better that way).
    pub fn align_right(mut self, index: usize) -> Self {
        if let Some(r) = self.right.get_mut(index) {
            *r = true;
        }
        self
    }

    /// Appends a row; missing cells print empty, extra cells are kept in extra columns.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table, one line per row, each ending in `\n`, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                let pad = width - cell.chars().count();
                if i > 0 {
                    text.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines (`show`, `status`): keys right-aligned to a colon, like `systemctl status`.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        out.push_str(format!("{key:>width$}: {value}").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["ID", "DESCRIPTION", "USED"]).align_right(2);
        t.row(vec!["1".into(), "before upgrade".into(), "1.5 MiB".into()]);
        t.row(vec!["12".into(), "".into(), "0 B".into()]);
        assert_eq!(
            t.render(),
            "ID  DESCRIPTION        USED\n\
             1   before upgrade  1.5 MiB\n\
             12                      0 B\n"
        );
    }

    #[test]
    fn wide_characters_count_as_one() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        assert_eq!(t.render(), "A  B\né  x\n");
    }

    #[test]
    fn key_value_block() {
        let s = key_values(&[
            ("ID", "1".into()),
            ("Description", "x".into()),
            ("Userdata", String::new()),
        ]);
        assert_eq!(s, "         ID: 1\nDescription: x\n   Userdata:\n");
    }
}
