//! The `nabla` command-line tool.

use clap::error::ErrorKind;
use nabla_cli::args::Command;
use nabla_cli::{commands, interop, train};

fn main() {
    let parsed = nabla_cli::args::parse_from(std::env::args_os());
    let (cli, given) = match parsed {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            nabla_cli::out!("{e}");
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
    // A tier the library cannot read would be ignored there: say so instead.
    if let Err(e) = nabla::isa::from_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    // Freed buffers kept for reuse: a training step's activations (hundreds of KiB to MiB
    // each) were otherwise mapped afresh and faulted in every step (`nabla::alloc`).
    if matches!(cli.command, Command::Train(_) | Command::Bench(_)) {
        nabla::alloc::retain_freed_memory();
    }
    let result = match &cli.command {
        Command::Train(a) => train::run(a, &given),
        Command::Eval(a) => commands::eval(a, &given),
        Command::Predict(a) => commands::predict(a),
        Command::Gradcheck => commands::gradcheck(),
        Command::Info(a) => commands::info(a),
        Command::Bench(a) => nabla_cli::bench::run(a),
        Command::Export(a) => interop::export(a),
        Command::Import(a) => interop::import(a),
        Command::Serve(a) => nabla_cli::serve::run(a),
        Command::Graph(a) => nabla_cli::graph::run(a),
        Command::Generate(a) => nabla_cli::generate::run(a),
    };
    if let Err(e) = result {
        if let Some(i) = e.downcast_ref::<train::Interrupted>() {
            if !i.0.is_empty() {
                eprintln!("{i}");
            }
            std::process::exit(130);
        }
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
