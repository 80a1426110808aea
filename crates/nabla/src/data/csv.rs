//! Numeric CSV files: feature columns and (optionally) one target column.

use std::path::Path;

use super::{Classification, Regression};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Which column holds the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetColumn {
    /// The last column (the default).
    #[default]
    Last,
    /// A column by header name.
    Name(String),
    /// A column by 0-based position.
    Index(usize),
    /// No target: every column is a feature (for prediction inputs).
    None,
}

/// Whether the first row is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header if any cell of the first row is not a number.
    #[default]
    Auto,
    /// The first row is a header.
    Yes,
    /// There is no header.
    No,
}

/// A numeric table read from CSV.
#[derive(Debug, Clone)]
pub struct Table {
    /// Features, `[n, d]`.
    pub features: Tensor<f32>,
    /// Target per row (empty with [`TargetColumn::None`]).
    pub target: Vec<f64>,
    /// Feature column names (`col0`, `col1`, … without a header).
    pub feature_names: Vec<String>,
    /// Target column name, if any.
    pub target_name: Option<String>,
}

fn split_row(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect()
}

/// Reads a CSV file of numbers. Errors name the file, the line, the column and the value.
pub fn read_csv(path: impl AsRef<Path>, target: &TargetColumn, header: Header) -> Result<Table> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    csv_from_bytes(&bytes, target, header).map_err(|e| match e {
        Error::Argument { msg, .. } => Error::file(path, msg),
        other => other,
    })
}

/// Parses CSV bytes (see [`read_csv`]); errors are `Error::Argument` with op `csv`.
pub fn csv_from_bytes(bytes: &[u8], target: &TargetColumn, header: Header) -> Result<Table> {
    let err = |m: String| Error::arg("csv", m);
    let text = std::str::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Err(err("empty file: no rows".into()));
    };
    let first_cells = split_row(first);
    let width = first_cells.len();
    let is_header = match header {
        Header::Yes => true,
        Header::No => false,
        Header::Auto => first_cells.iter().any(|c| c.parse::<f64>().is_err()),
    };
    let names: Vec<String> = if is_header {
        first_cells.iter().map(|c| c.to_string()).collect()
    } else {
        (0..width).map(|i| format!("col{i}")).collect()
    };
    let target_idx = match target {
        TargetColumn::Last => Some(width - 1),
        TargetColumn::None => None,
        TargetColumn::Index(i) if *i < width => Some(*i),
        TargetColumn::Index(i) => {
            return Err(err(format!(
                "target column {i} does not exist (the file has {width} columns)"
            )))
        }
        TargetColumn::Name(n) => Some(names.iter().position(|h| h == n).ok_or_else(|| {
            err(format!(
                "no column named '{n}' (columns: {})",
                names.join(", ")
            ))
        })?),
    };
    if target_idx.is_some() && width < 2 {
        return Err(err(format!(
            "{width} column: need at least one feature and the target"
        )));
    }
    let mut feats = Vec::new();
    let mut ys = Vec::new();
    let data_rows = if is_header {
        Box::new(lines) as Box<dyn Iterator<Item = (usize, &str)>>
    } else {
        Box::new(std::iter::once((first_no, first)).chain(lines))
    };
    let mut rows = 0;
    for (no, line) in data_rows {
        let cells = split_row(line);
        if cells.len() != width {
            return Err(err(format!(
                "line {}: {} fields, expected {width}",
                no + 1,
                cells.len()
            )));
        }
        for (c, cell) in cells.iter().enumerate() {
            let col = &names[c];
            if cell.is_empty() {
                return Err(err(format!(
                    "line {}, column {} ('{col}'): missing value",
                    no + 1,
                    c + 1
                )));
            }
            let v: f64 = cell.parse().map_err(|_| {
                err(format!(
                    "line {}, column {} ('{col}'): '{cell}' is not a number",
                    no + 1,
                    c + 1
                ))
            })?;
            if !v.is_finite() {
                return Err(err(format!(
                    "line {}, column {} ('{col}'): '{cell}' is not finite",
                    no + 1,
                    c + 1
                )));
            }
            if Some(c) == target_idx {
                ys.push(v);
            } else {
                feats.push(v as f32);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(err("no data rows after the header".into()));
    }
    let d = width - usize::from(target_idx.is_some());
    Ok(Table {
        features: Tensor::from_vec(feats, &[rows, d]).map_err(|e| err(e.to_string()))?,
        target: ys,
        feature_names: names
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != target_idx)
            .map(|(_, n)| n.clone())
            .collect(),
        target_name: target_idx.map(|i| names[i].clone()),
    })
}

impl Table {
    /// The table as a classification set: targets must be integers 0, 1, 2, …
    pub fn into_classification(self, path: &Path) -> Result<Classification> {
        let name = self.target_name.clone().unwrap_or_default();
        let mut labels = Vec::with_capacity(self.target.len());
        for (i, &y) in self.target.iter().enumerate() {
            if y < 0.0 || y.fract() != 0.0 || y > 1e6 {
                return Err(Error::file(
                    path,
                    format!(
                        "row {}: target '{name}' = {y} is not a class index (0, 1, 2, …); \
                         use a regression loss for continuous targets",
                        i + 1
                    ),
                ));
            }
            labels.push(y as usize);
        }
        let classes = labels.iter().max().map_or(0, |m| m + 1).max(2);
        Ok(Classification {
            x: self.features,
            labels,
            classes,
        })
    }

    /// The table as a regression set with one target column.
    pub fn into_regression(self) -> Result<Regression> {
        let n = self.target.len();
        let y = self.target.iter().map(|&v| v as f32).collect();
        Ok(Regression {
            x: self.features,
            y: Tensor::from_vec(y, &[n, 1])?,
        })
    }
}
