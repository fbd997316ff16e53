//! The `stratum` command: everything lives in the library ([`stratum::cli`]).

fn main() -> std::process::ExitCode {
    stratum::cli::main()
}
