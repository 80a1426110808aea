//! Helpers shared by the book's listings (`src/bin/*.rs`, one per chapter).
//!
//! The listings print what the chapters quote: `tools/book-check` runs each one (held to the
//! scalar instruction-set tier, so that every x86-64 CPU prints the same digits) and compares
//! its output with the file the chapter includes from `book/src/generated/`.

/// The value of `--NAME VALUE` among the program's arguments, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// `--NAME VALUE` read as a `T` (or `default`); a value that does not parse ends the program
/// with one line saying what `--NAME` takes (`what`), exit code 2.
pub fn parsed<T: std::str::FromStr>(name: &str, default: &str, what: &str) -> T {
    let value = arg(name, default);
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("--{name} {value:?}: expected {what}")))
}

/// Ends the program with `message` on one line, exit code 2 (a usage error).
pub fn usage(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// A row of values, each with 4 decimals (or in scientific notation from 10⁴ on).
pub fn row(values: &[f32]) -> String {
    let cells: Vec<String> = values.iter().map(|&v| num(v)).collect();
    cells.join(" ")
}

/// One value with 4 decimals, or in scientific notation from 10⁴ on (a diverging run's).
pub fn num(v: f32) -> String {
    if v.abs() < 1e4 || !v.is_finite() {
        format!("{v:8.4}")
    } else {
        format!("{v:8.2e}")
    }
}
