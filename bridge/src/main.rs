//! `dmbridge`: the command line. Each subcommand is one variant of [`Command`] and one function;
//! add new ones (decode, encode, dict, bench, ...) the same way.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

#[derive(Parser)]
#[command(
    name = "dmbridge",
    version,
    about = "Diameter node for OpenSIPS/Kamailio scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every error with its line.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Run the node.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load generator: connect as a Diameter peer and send requests from a JSON template.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bench(args) => bench::main(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => {
            // The tokio driver is not there yet; refuse clearly rather than pretend to run.
            if check_config(&config) != ExitCode::SUCCESS {
                return ExitCode::FAILURE;
            }
            eprintln!("dmbridge run: the network driver is not implemented yet");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let errors = dmnode::config::check(&text);
    for e in &errors {
        eprintln!("{}:{}:{}: {}", file.display(), e.line, e.column, e.message);
    }
    if errors.is_empty() {
        println!("{}: ok", file.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
