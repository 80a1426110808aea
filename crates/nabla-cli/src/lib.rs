//! The `nabla` command line as a library: argument definitions, data-set resolution, the
//! training loop, evaluation, and the PNG plots (which the experiments in `examples/` reuse).

#![allow(missing_docs)]

pub mod args;
pub mod bench;
pub mod commands;
pub mod dataset;
pub mod experiment;
pub mod generate;
pub mod graph;
pub mod group;
pub mod interop;
pub mod metrics;
pub mod model;
pub mod peak;
pub mod plots;
pub mod progress;
pub mod runconfig;
pub mod rundir;
pub mod serve;
pub mod train;

/// Writes to stdout; when the reader has gone away (`nabla predict … | head -1`), the command
/// ends quietly with status 0 instead of panicking, as a Unix filter does.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` that ends the command quietly when stdout's reader has gone (see
/// [`write_stdout`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` that ends the command quietly when stdout's reader has gone.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::write_stdout(format_args!($($t)*)) };
}

/// The current UTC time as `YYYYMMDD-HHMMSS` (run directory names, run ids).
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
