//! The `nabla` command-line tool.

use clap::error::ErrorKind;
use clap::Parser;

use nabla_cli::args::{Cli, Command};
use nabla_cli::{commands, interop, train};

fn main() {
    nabla::alloc::retain_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            return;
        }
        Err(e) => {
            // One line for the user's mistake; `--help` has the rest.
            // clap lists missing arguments on the lines after "…were not provided:".
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!(
                "{} (see `nabla --help`)",
                if first.is_empty() {
                    "invalid arguments"
                } else {
                    first
                }
            );
            std::process::exit(2);
        }
    };
    let result = match &cli.command {
        Command::Train(a) => {
            let argv: Vec<String> = std::env::args()
                .skip_while(|a| a != "train")
                .skip(1)
                .collect();
            train::run(a, &argv)
        }
        Command::Eval(a) => commands::eval(a),
        Command::Predict(a) => commands::predict(a),
        Command::Gradcheck => commands::gradcheck(),
        Command::Info(a) => commands::info(a),
        Command::Bench(a) => nabla_cli::bench::run(a),
        Command::Export(a) => interop::export(a),
        Command::Import(a) => interop::import(a),
    };
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
