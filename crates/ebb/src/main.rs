fn main() -> std::process::ExitCode {
    ebb::cli::main()
}
