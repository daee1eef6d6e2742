//! The `rivven-connect` binary: the built-in connectors and the CLI.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match rivven_connect::builtin_registry() {
        Ok(registry) => rivven_connect::cli::main(registry),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
