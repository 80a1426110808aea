//! The `nabla` command-line tool.

use clap::error::ErrorKind;
use clap::Parser;

use nabla_cli::args::{Cli, Command};
use nabla_cli::{commands, train};

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
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "{} (see `nabla --help`)",
                first.trim_start_matches("error: ").trim()
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
        Command::Export(a) => commands::export(a),
        Command::Import(a) => commands::import(a),
    };
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
